//! Configuration of the `dmsg-server` binary: a TOML file, overridden by `SKYWIRE_SERVER_*`
//! environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dmsg::addr::{ServerAddr, server_list_setting};
use dmsg::identity::PublicKey;
use observability::process::{ConfigError, read_toml, seconds_setting};
use serde::Deserialize;

/// The dmsg relay: accepts Noise sessions from clients and relays their end-to-end encrypted
/// streams by public key.
///
/// It binds --listen and accepts before anything else; registering with discovery runs in the
/// background (retrying with jittered backoff) and never delays accepting. Discovery is reached
/// over TCP (--discovery) and/or over dmsg (--discovery-pk, through the seeded --servers, for a
/// discovery with no public TCP endpoint). The admin address serves grpc.health.v1, gRPC
/// reflection, skywire.server.v1.Admin/Stats and Prometheus text at GET /metrics.
///
/// Settings come from --config (TOML), then SKYWIRE_SERVER_* environment variables, then
/// flags; later ones win.
#[derive(Debug, Parser)]
#[command(name = "dmsg-server", version, about, long_about)]
pub struct Args {
    /// TOML file with any of the settings below (keys: listen, public_address, admin,
    /// key_file, discovery, discovery_pk, servers, max_sessions, registration_backoff_cap_secs,
    /// registration_refresh_secs).
    #[arg(long, env = "SKYWIRE_SERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the relay listener (dmsg sessions) [default: 0.0.0.0:8080].
    #[arg(long, env = "SKYWIRE_SERVER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// HOST:PORT clients are told to dial, registered in discovery [default: the --listen
    /// address, which then must not be 0.0.0.0 or [::] when a discovery is configured].
    #[arg(long, env = "SKYWIRE_SERVER_PUBLIC_ADDRESS", value_name = "HOST:PORT")]
    pub public_address: Option<String>,

    /// Address of the admin endpoint: gRPC health, reflection, Stats, and GET /metrics
    /// [default: 127.0.0.1:8081].
    #[arg(long, env = "SKYWIRE_SERVER_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// The server's secret key file (mode 0600; `dmsg-cli keygen` writes one). Without it an
    /// ephemeral key is generated and logged: development only, since clients and discovery
    /// know a server by its key.
    #[arg(long, env = "SKYWIRE_SERVER_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Discovery's TCP gRPC endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "SKYWIRE_SERVER_DISCOVERY", value_name = "URL")]
    pub discovery: Option<String>,

    /// Discovery's public key: reach it at dmsg://PK:80 through the seeded --servers (tried
    /// after --discovery when both are given).
    #[arg(long, env = "SKYWIRE_SERVER_DISCOVERY_PK", value_name = "PK")]
    pub discovery_pk: Option<PublicKey>,

    /// Other dmsg servers, comma-separated PK@HOST:PORT: the server's transit client keeps a
    /// session to each, to reach discovery over dmsg (needed only with --discovery-pk).
    #[arg(long, env = "SKYWIRE_SERVER_SERVERS", value_name = "PK@HOST:PORT,…")]
    pub servers: Option<String>,

    /// Sessions the server advertises it can take (clients prefer servers with room; it keeps
    /// accepting beyond it) [default: 2048].
    #[arg(long, env = "SKYWIRE_SERVER_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Largest wait between registration retries, in seconds; waits start at 1 s and double,
    /// with full jitter [default: 30].
    #[arg(
        long,
        env = "SKYWIRE_SERVER_REGISTRATION_BACKOFF_CAP",
        value_name = "SECS"
    )]
    pub registration_backoff_cap_secs: Option<u64>,

    /// Ping every session this often, in milliseconds (a silent peer is dropped after two
    /// missed pings) [default: 60000].
    #[arg(long, env = "SKYWIRE_SERVER_PING_INTERVAL_MS", value_name = "MS")]
    pub ping_interval_ms: Option<u64>,

    /// Seconds between refreshes of the registered entry [default: 60].
    #[arg(long, env = "SKYWIRE_SERVER_REGISTRATION_REFRESH", value_name = "SECS")]
    pub registration_refresh_secs: Option<u64>,
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    public_address: Option<String>,
    admin: Option<SocketAddr>,
    key_file: Option<PathBuf>,
    discovery: Option<String>,
    discovery_pk: Option<String>,
    servers: Option<Vec<String>>,
    max_sessions: Option<usize>,
    registration_backoff_cap_secs: Option<u64>,
    registration_refresh_secs: Option<u64>,
    ping_interval_ms: Option<u64>,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Relay listen address.
    pub listen: SocketAddr,
    /// Address registered in discovery.
    pub public_address: String,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Key file, if any.
    pub key_file: Option<PathBuf>,
    /// Discovery's TCP endpoint.
    pub discovery: Option<String>,
    /// Discovery's dmsg key.
    pub discovery_pk: Option<PublicKey>,
    /// Seeded servers for the transit client.
    pub servers: Vec<ServerAddr>,
    /// Advertised capacity.
    pub max_sessions: usize,
    /// Registration backoff ceiling.
    pub registration_backoff_cap: Duration,
    /// Registration refresh period.
    pub registration_refresh: Duration,
    /// Session ping period, if not the default.
    pub ping_interval: Option<Duration>,
}

impl Args {
    /// Merges the file, the environment and the flags.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let file: FileConfig = read_toml(self.config.as_deref())?;
        let servers = server_list_setting(self.servers.as_deref(), file.servers.as_deref())
            .map_err(|error| ConfigError::Invalid(format!("--servers: {error}")))?;
        let discovery_pk = match (self.discovery_pk, file.discovery_pk) {
            (Some(pk), _) => Some(pk),
            (None, Some(text)) => Some(text.parse().map_err(|error| {
                ConfigError::Invalid(format!("discovery_pk {text:?}: {error}"))
            })?),
            (None, None) => None,
        };
        let discovery = self.discovery.or(file.discovery);
        if let Some(url) = &discovery
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "--discovery takes an http:// URL such as http://127.0.0.1:9090, not {url:?}"
            )));
        }
        if discovery_pk.is_some() && discovery.is_none() && servers.is_empty() {
            return Err(ConfigError::Invalid(
                "--discovery-pk alone needs --servers: discovery is reached over dmsg through other servers"
                    .into(),
            ));
        }
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let public_address = match self.public_address.or(file.public_address) {
            Some(address) => address,
            None if listen.ip().is_unspecified()
                && (discovery.is_some() || discovery_pk.is_some()) =>
            {
                return Err(ConfigError::Invalid(format!(
                    "--public-address is needed: --listen {listen} binds every interface, so \
                     discovery cannot be told which address clients should dial"
                )));
            }
            None => listen.to_string(),
        };
        let ping_interval = match self.ping_interval_ms.or(file.ping_interval_ms) {
            Some(ms) if ms < 100 => {
                return Err(ConfigError::Invalid(
                    "--ping-interval-ms must be at least 100".into(),
                ));
            }
            other => other.map(Duration::from_millis),
        };
        Ok(Settings {
            ping_interval,
            listen,
            public_address,
            admin: self
                .admin
                .or(file.admin)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
            key_file: self.key_file.or(file.key_file),
            discovery,
            discovery_pk,
            servers,
            max_sessions: self.max_sessions.or(file.max_sessions).unwrap_or(2048),
            registration_backoff_cap: seconds_setting(
                self.registration_backoff_cap_secs,
                file.registration_backoff_cap_secs,
                30,
                "registration-backoff-cap-secs",
            )?,
            registration_refresh: seconds_setting(
                self.registration_refresh_secs,
                file.registration_refresh_secs,
                60,
                "registration-refresh-secs",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
        Args::parse_from(std::iter::once("dmsg-server").chain(args.iter().copied())).resolve()
    }

    #[test]
    fn defaults_and_flags_over_the_file() {
        let settings = resolve(&[]).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(settings.admin, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(settings.registration_refresh, Duration::from_secs(60));

        let dir = std::env::temp_dir().join(format!("server-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nmax_sessions = 10\ndiscovery = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let settings = resolve(&[
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7001",
        ])
        .unwrap();
        assert_eq!(
            settings.listen,
            "127.0.0.1:7001".parse().unwrap(),
            "flag wins"
        );
        assert_eq!(settings.public_address, "127.0.0.1:7001");
        assert_eq!(settings.max_sessions, 10, "file fills in");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        let error = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_settings_that_cannot_work() {
        let error = resolve(&["--discovery", "http://127.0.0.1:9090"]).unwrap_err();
        assert!(error.to_string().contains("--public-address"), "{error}");
        let error = resolve(&["--discovery", "127.0.0.1:9090"]).unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
        let pk = dmsg::identity::Keypair::generate().public().to_string();
        let error = resolve(&["--listen", "127.0.0.1:1", "--discovery-pk", &pk]).unwrap_err();
        assert!(error.to_string().contains("--servers"), "{error}");
        let error = resolve(&["--registration-refresh-secs", "0"]).unwrap_err();
        assert!(error.to_string().contains("at least 1"), "{error}");
    }
}
