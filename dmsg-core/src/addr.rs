//! dmsg addresses: `dmsg://<pk>:<port>` (PROTOCOL.md §2).

use std::fmt;
use std::str::FromStr;

use crate::identity::{InvalidKey, PublicKey};

/// A dmsg port: 1..=65535 (0 is invalid). Ports from [`Port::EPHEMERAL_START`] up are handed
/// out to dialing streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    /// First ephemeral port.
    pub const EPHEMERAL_START: u16 = 49152;

    /// A port; `None` for 0.
    pub const fn new(port: u16) -> Option<Self> {
        if port == 0 { None } else { Some(Self(port)) }
    }

    /// The port number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// True for ports in the ephemeral range.
    pub const fn is_ephemeral(self) -> bool {
        self.0 >= Self::EPHEMERAL_START
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A listener address: a public key and a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmsgAddr {
    /// The entity listening.
    pub pk: PublicKey,
    /// Its port.
    pub port: Port,
}

/// Why text is not a dmsg address.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrParseError {
    /// Missing the `dmsg://` scheme.
    #[error("a dmsg address looks like dmsg://<64-hex-char public key>:<port>")]
    Format,
    /// The key part is not a public key.
    #[error("bad public key in dmsg address: {0}")]
    Key(#[from] InvalidKey),
    /// The port is not a number in 1..=65535.
    #[error("bad port {0:?} in dmsg address: use 1..=65535")]
    Port(String),
}

impl DmsgAddr {
    /// An address.
    pub fn new(pk: PublicKey, port: Port) -> Self {
        Self { pk, port }
    }
}

impl fmt::Display for DmsgAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dmsg://{}:{}", self.pk, self.port)
    }
}

impl fmt::Debug for DmsgAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for DmsgAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("dmsg://").ok_or(AddrParseError::Format)?;
        let (pk, port) = rest.rsplit_once(':').ok_or(AddrParseError::Format)?;
        let port = port
            .parse::<u16>()
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| AddrParseError::Port(port.to_owned()))?;
        Ok(Self {
            pk: pk.parse()?,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn addresses_print_and_parse() {
        let pk = Keypair::generate().public();
        let addr = DmsgAddr::new(pk, Port::new(80).unwrap());
        let text = addr.to_string();
        assert_eq!(text, format!("dmsg://{pk}:80"));
        assert_eq!(text.parse::<DmsgAddr>().unwrap(), addr);
    }

    #[test]
    fn bad_addresses_are_refused_with_the_reason() {
        let pk = Keypair::generate().public();
        assert_eq!(
            format!("{pk}:80").parse::<DmsgAddr>(),
            Err(AddrParseError::Format)
        );
        assert_eq!(
            format!("dmsg://{pk}:0").parse::<DmsgAddr>(),
            Err(AddrParseError::Port("0".into()))
        );
        assert_eq!(
            format!("dmsg://{pk}:70000").parse::<DmsgAddr>(),
            Err(AddrParseError::Port("70000".into()))
        );
        assert!(matches!(
            "dmsg://abcd:80".parse::<DmsgAddr>(),
            Err(AddrParseError::Key(_))
        ));
    }

    #[test]
    fn port_zero_is_invalid_and_ephemeral_ports_start_at_49152() {
        assert_eq!(Port::new(0), None);
        assert!(!Port::new(49151).unwrap().is_ephemeral());
        assert!(Port::new(49152).unwrap().is_ephemeral());
    }
}

/// A dmsg server to dial: its key and its `host:port`, written `PK@HOST:PORT`, or
/// `PK@HOST:PORT#pq` for a server known to offer the post-quantum hybrid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// The server's public key.
    pub pk: PublicKey,
    /// `host:port` of its dmsg listener.
    pub address: String,
    /// The server is known to offer the PQ hybrid (`#pq`, or `pq_capable` in its signed
    /// entry): a classical-only handshake with it is refused whatever the local policy
    /// (PROTOCOL.md §4.5).
    pub pq: bool,
}

/// The marking of a server known to offer the PQ hybrid: `PK@HOST:PORT#pq`.
pub const PQ_MARK: &str = "#pq";

impl ServerAddr {
    /// The server `pk` at `address`, not known to offer PQ.
    pub fn new(pk: PublicKey, address: impl Into<String>) -> Self {
        Self {
            pk,
            address: address.into(),
            pq: false,
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pk, self.address)?;
        if self.pq {
            f.write_str(PQ_MARK)?;
        }
        Ok(())
    }
}

/// Why text is not a `PK@HOST:PORT` server address.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerAddrError {
    /// Not `PK@HOST:PORT`.
    #[error(
        "a server is written PK@HOST:PORT (64 hex characters, then @host:port), or \
         PK@HOST:PORT#pq for one known to offer post-quantum, got {0:?}"
    )]
    Format(String),
    /// The key part is not a public key.
    #[error("bad server key: {0}")]
    Key(#[from] InvalidKey),
}

impl FromStr for ServerAddr {
    type Err = ServerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (text, pq) = match text.strip_suffix(PQ_MARK) {
            Some(unmarked) => (unmarked, true),
            None => (text, false),
        };
        let (pk, address) = text
            .split_once('@')
            .ok_or_else(|| ServerAddrError::Format(s.to_owned()))?;
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('#') && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok {
            return Err(ServerAddrError::Format(s.to_owned()));
        }
        Ok(Self {
            pk: pk.parse()?,
            address: address.to_owned(),
            pq,
        })
    }
}

/// Parses a comma-separated list of `PK@HOST:PORT` (empty items are skipped).
pub fn parse_server_list(list: &str) -> Result<Vec<ServerAddr>, ServerAddrError> {
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// A server list setting: the flag's comma-separated list if given, else the config file's
/// items.
pub fn server_list_setting(
    flag: Option<&str>,
    file: Option<&[String]>,
) -> Result<Vec<ServerAddr>, ServerAddrError> {
    match (flag, file) {
        (Some(list), _) => parse_server_list(list),
        (None, Some(items)) => items.iter().map(|item| item.parse()).collect(),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod server_addr_tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn server_addresses_parse_and_print() {
        let pk = Keypair::generate().public();
        let text = format!("{pk}@127.0.0.1:8080");
        let addr: ServerAddr = text.parse().unwrap();
        assert_eq!(addr.to_string(), text);
        assert!(!addr.pq);
        let list = parse_server_list(&format!("{text}, {pk}@relay.example:8081,")).unwrap();
        assert_eq!(list.len(), 2);
        // PROTOCOL.md §4.5: `#pq` marks a seed known to offer the hybrid.
        let marked: ServerAddr = format!("{text}#pq").parse().unwrap();
        assert!(marked.pq);
        assert_eq!(marked.address, "127.0.0.1:8080");
        assert_eq!(marked.to_string(), format!("{text}#pq"));
        for bad in [
            "nope",
            &format!("{pk}@host"),
            &format!("{pk}@:80"),
            &format!("{pk}@h:0"),
            "ab@h:1",
            &format!("{text}#classical"),
            &format!("{text}#pq#pq"),
        ] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad}");
        }
    }
}
