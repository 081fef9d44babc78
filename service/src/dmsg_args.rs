//! The dmsg flags of every binary that is a dmsg client (the visor, transport-setup,
//! route-setup): its key, its seeded servers and where discovery is. `#[command(flatten)]`
//! [`DmsgArgs`] into the binary's definition and build the client with
//! [`DmsgArgs::client_config`].

use std::path::PathBuf;

use dmsg::addr::ServerAddr;
use dmsg::client::{ClientConfig, DiscoveryTarget, LifecycleConfig};
use dmsg::identity::{KeyFileError, Keypair, PublicKey};
use dmsg::noise::PqSettings;

use crate::ConfigError;

/// Key, seeded servers and discovery of a dmsg client process.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DmsgArgs {
    /// This process's secret key file (mode 0600; `dmsg-cli keygen` writes one). Without it
    /// an ephemeral key is generated and logged: development only, since peers know a
    /// process by its key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// dmsg servers to use, comma-separated PK@HOST:PORT (a TOML array in the file): tried
    /// when discovery fails or lists none, and enough on their own. Append #pq to a server
    /// known to offer post-quantum: a classical-only handshake with it is then refused.
    #[arg(long, value_name = "PK@HOST:PORT,…", value_delimiter = ',')]
    pub servers: Vec<ServerAddr>,

    /// Discovery's TCP gRPC endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub discovery: Option<String>,

    /// Discovery's public key: reached at dmsg://PK:80 through the dmsg servers when no
    /// --discovery URL is given.
    #[arg(long, value_name = "PK")]
    pub discovery_pk: Option<PublicKey>,
}

/// Sessions a client without discovery keeps at most (one per seeded server).
pub const MAX_SEED_SESSIONS: usize = 8;

impl DmsgArgs {
    /// Refuses a discovery URL that is not `http://` or `https://`.
    pub fn check(&self) -> Result<(), ConfigError> {
        match &self.discovery {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                Err(ConfigError::Invalid(format!(
                    "--discovery takes an http:// URL such as http://127.0.0.1:9090, not {url:?}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The key from `--key-file`, or an ephemeral one (logged as such).
    pub fn keypair(&self) -> Result<Keypair, KeyFileError> {
        Keypair::load_or_ephemeral(self.key_file.as_deref())
    }

    /// Where discovery is: the TCP URL, else the dmsg key, else nowhere (seeds only).
    pub fn discovery_target(&self) -> DiscoveryTarget {
        match (&self.discovery, self.discovery_pk) {
            (Some(url), _) => DiscoveryTarget::Tcp(url.clone()),
            (None, Some(pk)) => DiscoveryTarget::Dmsg(pk),
            (None, None) => DiscoveryTarget::None,
        }
    }

    /// The client's configuration: these seeds (the embedded default deployment only when
    /// none are given) and this discovery, with `pq`.
    pub fn client_config(&self, pq: PqSettings) -> ClientConfig {
        ClientConfig {
            pq,
            lifecycle: LifecycleConfig {
                include_default_seeds: self.servers.is_empty(),
                seeds: self.servers.clone(),
                discovery: self.discovery_target(),
                // With no discovery nobody can be looked up: a peer is reachable only through
                // a session to its own server, so keep one to every seeded server (at most
                // MAX_SEED_SESSIONS).
                min_sessions: if matches!(self.discovery_target(), DiscoveryTarget::None) {
                    self.servers.len().clamp(1, MAX_SEED_SESSIONS)
                } else {
                    LifecycleConfig::default().min_sessions
                },
                ..LifecycleConfig::default()
            },
            ..ClientConfig::default()
        }
    }
}
