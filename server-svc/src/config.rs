//! Configuration of the `dmsg-server` binary: one definition gives the flags, the
//! `SKYWIRE_SERVER_*` variables and the keys of the `--config` file (see [`service::config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dmsg::addr::ServerAddr;
use dmsg::identity::PublicKey;
use service::{Binary, CommonArgs, ConfigError};

/// What the skeleton knows of `dmsg-server`.
pub const BINARY: Binary = Binary {
    name: "dmsg-server",
    env_prefix: "SKYWIRE_SERVER_",
};

/// The dmsg relay: accepts Noise sessions from clients and relays their end-to-end encrypted
/// streams by public key.
///
/// It binds --listen and accepts before anything else; registering with discovery runs in the
/// background (retrying with jittered backoff) and never delays accepting. Discovery is reached
/// over TCP (--discovery) and/or over dmsg (--discovery-pk, through the seeded --servers, for a
/// discovery with no public TCP endpoint). The admin address serves grpc.health.v1, gRPC
/// reflection, skywire.server.v1.Admin/Stats and Prometheus text at GET /metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    /// Address of the relay listener (dmsg sessions).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// HOST:PORT clients are told to dial, registered in discovery [default: the --listen
    /// address, which then must not be 0.0.0.0 or [::] when a discovery is configured].
    #[arg(long, value_name = "HOST:PORT")]
    pub public_address: Option<String>,

    /// Address of the admin endpoint: gRPC health, reflection, Stats, and GET /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,

    /// The server's secret key file (mode 0600; `dmsg-cli keygen` writes one). Without it an
    /// ephemeral key is generated and logged: development only, since clients and discovery
    /// know a server by its key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Discovery's TCP gRPC endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,

    /// Discovery's public key: reach it at dmsg://PK:80 through the seeded --servers (tried
    /// after --discovery when both are given).
    #[arg(long, value_name = "PK")]
    pub discovery_pk: Option<PublicKey>,

    /// Other dmsg servers, comma-separated PK@HOST:PORT (a TOML array in the file): the
    /// server's transit client keeps a session to each, to reach discovery over dmsg (needed
    /// only with --discovery-pk). Append #pq (PK@HOST:PORT#pq) to a server known to offer
    /// post-quantum: a classical-only handshake with it is then refused.
    #[arg(long, value_name = "PK@HOST:PORT,…", value_delimiter = ',')]
    pub servers: Vec<ServerAddr>,

    /// Sessions the server advertises it can take (clients prefer servers with room; it keeps
    /// accepting beyond it).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_sessions: usize,

    /// Largest wait between registration retries, in seconds; waits start at 1 s and double,
    /// with full jitter.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub registration_backoff_cap_secs: u64,

    /// Seconds between refreshes of the registered entry.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub registration_refresh_secs: u64,

    /// Ping every session this often, in milliseconds (at least 100; a silent peer is dropped
    /// after two missed pings).
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub ping_interval_ms: u64,

    /// Sustained new connections per second accepted from one source (an IPv4 address or an
    /// IPv6 /64); beyond it they are closed at once. Checked before the server-wide limits,
    /// so one source never uses up anyone else's share.
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    pub source_accept_rate: f64,

    /// New connections one source may open in a burst.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub source_accept_burst: u32,

    /// Handshakes one source may have in progress at once; more are refused "busy". (The
    /// server holds at most 512 in all.)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub source_max_handshakes: u64,

    /// Milliseconds a new connection has to send its first handshake message; a connection
    /// that sends nothing is closed then (the whole handshake has 5 s).
    #[arg(long, value_name = "MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..=5_000))]
    pub first_message_timeout_ms: u64,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The flags every binary has.
    pub common: CommonArgs,
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
    /// Session ping period.
    pub ping_interval: Duration,
    /// Per-source limits of new connections.
    pub per_source: dmsg::admission::SourceLimits,
    /// Deadline of a connection's first handshake message.
    pub first_message_timeout: Duration,
}

impl service::process::Resolve for Args {
    type Settings = Settings;

    /// Checks the settings that only make sense together.
    fn resolve(self) -> Result<Settings, ConfigError> {
        let servers = self.servers;
        if let Some(url) = &self.discovery
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "--discovery takes an http:// URL such as http://127.0.0.1:9090, not {url:?}"
            )));
        }
        if self.discovery_pk.is_some() && self.discovery.is_none() && servers.is_empty() {
            return Err(ConfigError::Invalid(
                "--discovery-pk alone needs --servers: discovery is reached over dmsg through other servers"
                    .into(),
            ));
        }
        let listen = self.listen;
        let public_address = match self.public_address {
            Some(address) => address,
            None if listen.ip().is_unspecified()
                && (self.discovery.is_some() || self.discovery_pk.is_some()) =>
            {
                return Err(ConfigError::Invalid(format!(
                    "--public-address is needed: --listen {listen} binds every interface, so \
                     discovery cannot be told which address clients should dial"
                )));
            }
            None => listen.to_string(),
        };
        Ok(Settings {
            common: self.common,
            listen,
            public_address,
            admin: self.admin,
            key_file: self.key_file,
            discovery: self.discovery,
            discovery_pk: self.discovery_pk,
            servers,
            max_sessions: self.max_sessions,
            registration_backoff_cap: Duration::from_secs(self.registration_backoff_cap_secs),
            registration_refresh: Duration::from_secs(self.registration_refresh_secs),
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            per_source: dmsg::admission::SourceLimits {
                accept_rate: self.source_accept_rate,
                accept_burst: self.source_accept_burst,
                max_handshakes: usize::try_from(self.source_max_handshakes).unwrap_or(usize::MAX),
            },
            first_message_timeout: Duration::from_millis(self.first_message_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
        service::config::resolve::<Args>(&BINARY, args)
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
        let pk = dmsg::identity::Keypair::generate().public();
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:7000\"\nmax_sessions = 10\ndiscovery = \"http://127.0.0.1:9\"\n\
                 ping_interval_ms = 500\nservers = [\"{pk}@127.0.0.1:1\", \"{pk}@127.0.0.1:2\"]\n"
            ),
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
        assert_eq!(settings.ping_interval, Duration::from_millis(500));
        assert_eq!(settings.servers.len(), 2, "a TOML array is the list");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        let error = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
        assert!(error.to_string().contains("server.toml"), "{error}");
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
        assert!(
            error.to_string().contains("registration-refresh-secs"),
            "{error}"
        );
        let error = resolve(&["--ping-interval-ms", "99"]).unwrap_err();
        assert!(error.to_string().contains("ping-interval-ms"), "{error}");
    }
}
