//! Configuration of the `skywire-visor` binary: one definition gives the flags, the
//! `SKYWIRE_VISOR_*` variables and the keys of the `--config` file (see [`service::config`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use dmsg::identity::PublicKey;
use service::{Binary, CommonArgs, ConfigError, DmsgArgs};

use crate::apps::skysocks_client::{ClientConfig, Credentials};
use crate::forward::{Forwarded, Published};
use crate::transport::TransportKind;
use crate::transport::persistent::Persistent;

/// What the skeleton knows of `skywire-visor`.
pub const BINARY: Binary = Binary {
    name: "skywire-visor",
    env_prefix: "SKYWIRE_VISOR_",
};

/// The Skywire visor: the node of the network. It keeps a dmsg client to the relay servers,
/// transports to other visors (dmsg streams, direct stcp links), and routes end-to-end
/// encrypted route groups along the rules installed on it.
///
/// Every listener (stcp, admin) is bound first; the dmsg client, the transports and the
/// registrations run in the background and never hold them up. With no reachable discovery
/// the dmsg client falls back to the seeded --servers and connects as soon as one answers.
/// The admin address serves grpc.health.v1, gRPC reflection and Prometheus text at GET
/// /metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dmsg: DmsgArgs,

    /// Address of the stcp listener (direct transports from other visors).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7777")]
    pub stcp_listen: SocketAddr,

    /// File naming the stcp addresses of other visors: one `PK HOST:PORT` per line (`#`
    /// starts a comment).
    #[arg(long, value_name = "FILE")]
    pub pk_table: Option<PathBuf>,

    /// A transport to keep up, TYPE:PK with TYPE dmsg or stcp; repeatable (a TOML array in
    /// the file). It is dialed at start and re-dialed with backoff (1 s doubling to 30 s,
    /// full jitter) whenever it closes; one the other edge dialed is adopted.
    #[arg(long = "transport", value_name = "TYPE:PK")]
    pub transports: Vec<Persistent>,

    /// Keys of the transport-setup services this visor obeys, comma-separated: only they are
    /// served on its transport gateway (dmsg port 47); any other key's stream is refused
    /// before any RPC. Empty: nobody.
    #[arg(long, value_name = "PK,…", value_delimiter = ',')]
    pub transport_setup_pks: Vec<PublicKey>,

    /// Keys of the route-setup services this visor obeys (its route gateway, dmsg port
    /// 136), comma-separated. Empty: nobody.
    #[arg(long, value_name = "PK,…", value_delimiter = ',')]
    pub route_setup_pks: Vec<PublicKey>,

    /// Address of the admin endpoint: gRPC health, reflection, and GET /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3435")]
    pub admin: SocketAddr,

    /// Publish a local TCP service on a route port, PORT=HOST:PORT; repeatable. Route groups
    /// other visors dial to PORT are connected to HOST:PORT; no other port accepts any.
    #[arg(long = "publish", value_name = "PORT=HOST:PORT")]
    pub published: Vec<Published>,

    /// Forward a local TCP listener to another visor's published port, ADDR=PK:PORT;
    /// repeatable. Each connection to ADDR is a route group through route-setup (needs
    /// --route-setup-pks).
    #[arg(long = "forward", value_name = "ADDR=PK:PORT")]
    pub forwarded: Vec<Forwarded>,

    /// As --forward, but each connection is a direct route group: one hop over a transport
    /// to PK (an existing one, else stcp if PK is in --pk-table, else dmsg), with no
    /// route-setup and no breaker; it works while route-setup is down.
    #[arg(long = "forward-direct", value_name = "ADDR=PK:PORT")]
    pub forwarded_direct: Vec<Forwarded>,

    /// Run skysocks, the SOCKS5 exit, on route port 3: connections of skysocks-clients
    /// leave from this machine.
    #[arg(long)]
    pub skysocks: bool,

    /// Run skysocks-client through the exit with this key: a SOCKS5 listener on
    /// --socks-listen whose connections leave through that visor (a route group through
    /// route-setup, or --skysocks-client-direct).
    #[arg(long, value_name = "PK")]
    pub skysocks_client: Option<PublicKey>,

    /// skysocks-client reaches its exit over a direct transport, one hop, with no
    /// route-setup and no breaker.
    #[arg(long)]
    pub skysocks_client_direct: bool,

    /// Where skysocks-client listens for SOCKS5.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    pub socks_listen: SocketAddr,

    /// How long a SOCKS5 client may take over its greeting and request before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub socks_greeting_timeout_secs: u64,

    /// File holding `USER:PASSWORD` (mode 0600): skysocks-client then requires RFC 1929
    /// username/password authentication, and refuses clients offering only "no auth".
    #[arg(long, value_name = "FILE")]
    pub socks_auth_file: Option<PathBuf>,

    /// How often the uptime probe samples the dmsg tier and the route tier.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub uptime_every_secs: u64,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The flags every binary has.
    pub common: CommonArgs,
    /// Key, seeded servers, discovery.
    pub dmsg: DmsgArgs,
    /// stcp listen address.
    pub stcp_listen: SocketAddr,
    /// stcp peers.
    pub pk_table: HashMap<PublicKey, SocketAddr>,
    /// Transports to keep up.
    pub transports: Vec<Persistent>,
    /// Who the gateways serve.
    pub trusted: crate::gateway::TrustedKeys,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Local services published on route ports.
    pub published: Vec<Published>,
    /// Local listeners forwarded to other visors.
    pub forwarded: Vec<Forwarded>,
    /// Run the skysocks exit.
    pub skysocks: bool,
    /// Run skysocks-client, and where it listens.
    pub skysocks_client: Option<(ClientConfig, SocketAddr)>,
    /// The uptime probe's period.
    pub uptime_every: std::time::Duration,
}

/// Reads a `USER:PASSWORD` secret file, refused if group or others may read it.
pub fn read_credentials(path: &Path) -> Result<Credentials, ConfigError> {
    let invalid = |what: String| {
        ConfigError::Invalid(format!("--socks-auth-file {}: {what}", path.display()))
    };
    dmsg::identity::check_private(path).map_err(|error| invalid(error.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|error| invalid(error.to_string()))?;
    text.parse().map_err(invalid)
}

/// Reads a pk_table file: `PK HOST:PORT` per line, `#` comments, blank lines ignored.
pub fn read_pk_table(path: &Path) -> Result<HashMap<PublicKey, SocketAddr>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::Invalid(format!("--pk-table {}: {error}", path.display())))?;
    parse_pk_table(&text)
        .map_err(|error| ConfigError::Invalid(format!("--pk-table {}: {error}", path.display())))
}

/// Parses the text of a pk_table file.
pub fn parse_pk_table(text: &str) -> Result<HashMap<PublicKey, SocketAddr>, String> {
    let mut table = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(pk), Some(addr), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("line {}: expected `PK HOST:PORT`", number + 1));
        };
        let pk: PublicKey = pk
            .parse()
            .map_err(|error| format!("line {}: {pk:?} is not a public key: {error}", number + 1))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|error| format!("line {}: {addr:?} is not HOST:PORT: {error}", number + 1))?;
        table.insert(pk, addr);
    }
    Ok(table)
}

impl service::process::Resolve for Args {
    type Settings = Settings;

    fn resolve(self) -> Result<Settings, ConfigError> {
        self.dmsg.check()?;
        let pk_table = match &self.pk_table {
            Some(path) => read_pk_table(path)?,
            None => HashMap::new(),
        };
        for persistent in &self.transports {
            if persistent.kind == TransportKind::Stcp && !pk_table.contains_key(&persistent.peer) {
                return Err(ConfigError::Invalid(format!(
                    "--transport stcp:{} needs the peer's address in --pk-table",
                    persistent.peer
                )));
            }
        }
        let mut ports = std::collections::HashSet::new();
        for publication in &self.published {
            if !ports.insert(publication.port) {
                return Err(ConfigError::Invalid(format!(
                    "--publish: route port {} is published twice",
                    publication.port
                )));
            }
        }
        if !self.forwarded.is_empty() && self.route_setup_pks.is_empty() {
            return Err(ConfigError::Invalid(
                "--forward dials through route-setup: give its key with --route-setup-pks".into(),
            ));
        }
        if self.skysocks_client.is_some()
            && !self.skysocks_client_direct
            && self.route_setup_pks.is_empty()
        {
            return Err(ConfigError::Invalid(
                "--skysocks-client dials its exit through route-setup: give its key with \
                 --route-setup-pks, or use --skysocks-client-direct"
                    .into(),
            ));
        }
        if self.uptime_every_secs == 0 {
            return Err(ConfigError::Invalid(
                "--uptime-every-secs must be at least 1".into(),
            ));
        }
        if self.socks_greeting_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "--socks-greeting-timeout-secs must be at least 1".into(),
            ));
        }
        let auth = match &self.socks_auth_file {
            Some(path) => Some(read_credentials(path)?),
            None => None,
        };
        let skysocks_client = self.skysocks_client.map(|exit| {
            (
                ClientConfig {
                    direct: self.skysocks_client_direct,
                    greeting_timeout: std::time::Duration::from_secs(
                        self.socks_greeting_timeout_secs,
                    ),
                    auth,
                    ..ClientConfig::new(exit)
                },
                self.socks_listen,
            )
        });
        let forwarded = self
            .forwarded
            .into_iter()
            .chain(self.forwarded_direct.into_iter().map(|forward| Forwarded {
                direct: true,
                ..forward
            }))
            .collect();
        Ok(Settings {
            common: self.common,
            dmsg: self.dmsg,
            stcp_listen: self.stcp_listen,
            pk_table,
            transports: self.transports,
            trusted: crate::gateway::TrustedKeys {
                transport_setup: self.transport_setup_pks.into_iter().collect(),
                route_setup: self.route_setup_pks.into_iter().collect(),
            },
            admin: self.admin,
            published: self.published,
            forwarded,
            skysocks: self.skysocks,
            skysocks_client,
            uptime_every: std::time::Duration::from_secs(self.uptime_every_secs),
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
    fn defaults_are_loopback() {
        let settings = resolve(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            settings.stcp_listen,
            "127.0.0.1:7777".parse().unwrap_or_else(|_| unreachable!())
        );
        assert_eq!(
            settings.admin,
            "127.0.0.1:3435".parse().unwrap_or_else(|_| unreachable!())
        );
    }

    #[test]
    fn pk_tables_are_checked() {
        let pk = dmsg::identity::Keypair::generate().public();
        let table =
            parse_pk_table(&format!("# peers\n{pk} 127.0.0.1:7000  # b\n\n")).unwrap_or_default();
        assert_eq!(
            table.get(&pk),
            Some(&"127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert!(parse_pk_table("nonsense").unwrap_err().contains("line 1"));
        let error = resolve(&["--transport", &format!("stcp:{pk}")]).unwrap_err();
        assert!(error.to_string().contains("--pk-table"), "{error}");
        let error = resolve(&["--transport", "udp:xyz"]).unwrap_err();
        assert!(
            error.to_string().contains("unknown transport type"),
            "{error}"
        );
        let ok = resolve(&["--transport", &format!("dmsg:{pk}")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok.transports,
            [Persistent {
                kind: TransportKind::Dmsg,
                peer: pk
            }]
        );
        let error =
            resolve(&["--publish", "80=127.0.0.1:1", "--publish", "80=127.0.0.1:2"]).unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
        let error = resolve(&["--forward", &format!("127.0.0.1:1={pk}:80")]).unwrap_err();
        assert!(error.to_string().contains("--route-setup-pks"), "{error}");
        let direct = resolve(&["--forward-direct", &format!("127.0.0.1:1={pk}:80")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(direct.forwarded[0].direct, "needs no route-setup");
        assert!(
            parse_pk_table(&format!("{pk} nowhere"))
                .unwrap_err()
                .contains("HOST:PORT")
        );
    }
}
