//! Configuration of the `dmsg-discovery` binary: a TOML file, overridden by
//! `SKYWIRE_DISCOVERY_*` environment variables, overridden by flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dmsg::addr::{ServerAddr, server_list_setting};
use observability::process::{ConfigError, read_toml, seconds_setting};
use serde::Deserialize;

use crate::run::StoreConfig;
use crate::store::redis::DEFAULT_PREFIX;

/// The registry of signed dmsg entries and transports, served as gRPC on TCP and on dmsg
/// port 80.
///
/// Discovery binds its TCP listener first, then dials the configured dmsg servers at once
/// (retrying each with jittered backoff) so that clients can reach it through dmsg even before
/// any server has registered. Settings come from --config (TOML), then SKYWIRE_DISCOVERY_*
/// environment variables, then flags; later ones win.
#[derive(Debug, Parser)]
#[command(name = "dmsg-discovery", version, about, long_about)]
pub struct Args {
    /// TOML file with any of the settings below (keys: listen, store, redis_prefix, key_file,
    /// servers, server_entry_ttl_secs, client_entry_ttl_secs).
    #[arg(long, env = "SKYWIRE_DISCOVERY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the gRPC listener on TCP [default: 127.0.0.1:9090].
    #[arg(long, env = "SKYWIRE_DISCOVERY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where entries live: `memory` (this process; the default) or `redis://HOST:PORT[/DB]`
    /// (shared by several discovery replicas).
    #[arg(long, env = "SKYWIRE_DISCOVERY_STORE", value_name = "memory|redis://…")]
    pub store: Option<String>,

    /// Key prefix in Redis [default: skywire:disc:].
    #[arg(long, env = "SKYWIRE_DISCOVERY_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// Discovery's secret key file (mode 0600). Without it an ephemeral key is generated and
    /// logged: fine for development, but clients cannot pin discovery across restarts.
    #[arg(long, env = "SKYWIRE_DISCOVERY_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// dmsg servers to connect to at start, comma-separated `PK@HOST:PORT`.
    #[arg(long, env = "SKYWIRE_DISCOVERY_SERVERS", value_name = "PK@HOST:PORT,…")]
    pub servers: Option<String>,

    /// Seconds a server entry lives without a refresh [default: 120].
    #[arg(long, env = "SKYWIRE_DISCOVERY_SERVER_ENTRY_TTL", value_name = "SECS")]
    pub server_entry_ttl_secs: Option<u64>,

    /// Seconds a client entry lives without a refresh [default: 3600].
    #[arg(long, env = "SKYWIRE_DISCOVERY_CLIENT_ENTRY_TTL", value_name = "SECS")]
    pub client_entry_ttl_secs: Option<u64>,
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    store: Option<String>,
    redis_prefix: Option<String>,
    key_file: Option<PathBuf>,
    servers: Option<Vec<String>>,
    server_entry_ttl_secs: Option<u64>,
    client_entry_ttl_secs: Option<u64>,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// The store.
    pub store: StoreConfig,
    /// Key file, if any.
    pub key_file: Option<PathBuf>,
    /// Configured dmsg servers.
    pub servers: Vec<ServerAddr>,
    /// Server entry TTL.
    pub server_ttl: Duration,
    /// Client entry TTL.
    pub client_ttl: Duration,
}

impl Args {
    /// Merges the file, the environment and the flags.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let file: FileConfig = read_toml(self.config.as_deref())?;
        let servers = server_list_setting(self.servers.as_deref(), file.servers.as_deref())
            .map_err(|error| ConfigError::Invalid(format!("--servers: {error}")))?;
        let mut store: StoreConfig = self
            .store
            .or(file.store)
            .unwrap_or_else(|| "memory".into())
            .parse()
            .map_err(ConfigError::Invalid)?;
        if let StoreConfig::Redis { prefix, .. } = &mut store {
            *prefix = self
                .redis_prefix
                .or(file.redis_prefix)
                .unwrap_or_else(|| DEFAULT_PREFIX.into());
        }
        Ok(Settings {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
            store,
            key_file: self.key_file.or(file.key_file),
            servers,
            server_ttl: seconds_setting(
                self.server_entry_ttl_secs,
                file.server_entry_ttl_secs,
                120,
                "server-entry-ttl-secs",
            )?,
            client_ttl: seconds_setting(
                self.client_entry_ttl_secs,
                file.client_entry_ttl_secs,
                3600,
                "client-entry-ttl-secs",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = std::env::temp_dir().join(format!("disc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("discovery.toml");
        let pk = dmsg::identity::Keypair::generate().public();
        std::fs::write(
            &path,
            format!("listen = \"127.0.0.1:7000\"\nstore = \"redis://127.0.0.1:6380\"\nservers = [\"{pk}@h:1\"]\n"),
        )
        .unwrap();
        let args = Args::parse_from([
            "dmsg-discovery",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7001",
        ]);
        let settings = args.resolve().unwrap();
        assert_eq!(
            settings.listen,
            "127.0.0.1:7001".parse().unwrap(),
            "the flag wins"
        );
        assert!(
            matches!(settings.store, StoreConfig::Redis { ref prefix, .. } if prefix == DEFAULT_PREFIX)
        );
        assert_eq!(settings.servers.len(), 1);
        assert_eq!(settings.server_ttl, Duration::from_secs(120));

        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = Args::parse_from(["dmsg-discovery", "--config", path.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
        let error = Args::parse_from(["dmsg-discovery", "--store", "postgres://x"])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("memory"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
