//! Configuration of the `dmsg-discovery` binary: one definition gives the flags, the
//! `SKYWIRE_DISCOVERY_*` variables and the keys of the `--config` file (see
//! [`service::config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dmsg::addr::ServerAddr;
use service::{Binary, CommonArgs, ConfigError};

use crate::run::StoreConfig;
use crate::store::redis::DEFAULT_PREFIX;

/// What the skeleton knows of `dmsg-discovery`.
pub const BINARY: Binary = Binary {
    name: "dmsg-discovery",
    env_prefix: "SKYWIRE_DISCOVERY_",
};

/// The registry of signed dmsg entries and transports, served as gRPC on TCP and on dmsg
/// port 80.
///
/// Discovery binds its TCP listener first, then dials the configured dmsg servers at once
/// (retrying each with jittered backoff) so that clients can reach it through dmsg even before
/// any server has registered. The admin address serves grpc.health.v1, gRPC reflection and
/// Prometheus text at GET /metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    /// Address of the gRPC listener on TCP (Discovery, TransportRegistry).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,

    /// Address of the admin endpoint: gRPC health, reflection, and GET /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9091")]
    pub admin: SocketAddr,

    /// Where entries live: `memory` (this process) or `redis://HOST:PORT[/DB]` (shared by
    /// several discovery replicas).
    #[arg(long, value_name = "memory|redis://…", default_value = "memory")]
    pub store: String,

    /// Key prefix in Redis.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    pub redis_prefix: String,

    /// MiB of entries kept in this process in front of Redis (0: none). Redis keeps the copies
    /// coherent (client tracking on one extra connection): a write through any replica is seen
    /// by every replica within 80 ms, and while Redis is unreachable GetEntry answers from the
    /// copies until their TTL runs out, marked with the metadata `skywire-entry-stale: true`.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub redis_cache_mib: usize,

    /// Discovery's secret key file (mode 0600). Without it an ephemeral key is generated and
    /// logged: fine for development, but clients cannot pin discovery across restarts.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// dmsg servers to connect to at start, comma-separated `PK@HOST:PORT` (a TOML array in
    /// the file). Append #pq (PK@HOST:PORT#pq) to a server known to offer post-quantum: a
    /// classical-only handshake with it is then refused.
    #[arg(long, value_name = "PK@HOST:PORT,…", value_delimiter = ',')]
    pub servers: Vec<ServerAddr>,

    /// Seconds a server entry lives without a refresh.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub server_entry_ttl_secs: u64,

    /// Seconds a client entry lives without a refresh.
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_entry_ttl_secs: u64,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The flags every binary has.
    pub common: CommonArgs,
    /// TCP listen address.
    pub listen: SocketAddr,
    /// Admin listen address.
    pub admin: SocketAddr,
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

impl service::process::Resolve for Args {
    type Settings = Settings;

    /// Checks the settings that need more than their own type.
    fn resolve(self) -> Result<Settings, ConfigError> {
        let mut store: StoreConfig = self.store.parse().map_err(ConfigError::Invalid)?;
        if let StoreConfig::Redis { prefix, cache, .. } = &mut store {
            *prefix = self.redis_prefix;
            cache.max_bytes = self.redis_cache_mib.saturating_mul(1024 * 1024);
        }
        Ok(Settings {
            common: self.common,
            listen: self.listen,
            admin: self.admin,
            store,
            key_file: self.key_file,
            servers: self.servers,
            server_ttl: Duration::from_secs(self.server_entry_ttl_secs),
            client_ttl: Duration::from_secs(self.client_entry_ttl_secs),
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
            "the flag wins"
        );
        assert!(
            matches!(settings.store, StoreConfig::Redis { ref prefix, .. } if prefix == DEFAULT_PREFIX)
        );
        assert_eq!(settings.servers.len(), 1);
        assert_eq!(settings.server_ttl, Duration::from_secs(120));

        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let error = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
        let error = resolve(&["--store", "postgres://x"]).unwrap_err();
        assert!(error.to_string().contains("memory"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
