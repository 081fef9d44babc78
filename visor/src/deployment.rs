//! A deployment: what a visor needs to join a network — its dmsg servers, where discovery
//! is, and the keys of the setup services it obeys. A deployment file is TOML with exactly
//! the visor's own config keys for these (`servers`, `discovery`, `discovery_pk`,
//! `transport_setup_pks`, `route_setup_pks`), so `skywire-cli config gen` copies it into a
//! visor config; `skywire-localnet` writes one for the network it starts. The embedded
//! default is dmsg's embedded servers and no service keys.

use std::fmt::Write as _;

use dmsg::addr::ServerAddr;
use dmsg::identity::PublicKey;

/// A deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deployment {
    /// dmsg servers, `PK@HOST:PORT`.
    pub servers: Vec<ServerAddr>,
    /// Discovery's URL, if it is reached over TCP.
    pub discovery: Option<String>,
    /// Discovery's key, if it is reached over dmsg.
    pub discovery_pk: Option<PublicKey>,
    /// transport-setup services a visor obeys.
    pub transport_setup_pks: Vec<PublicKey>,
    /// route-setup services a visor obeys and asks.
    pub route_setup_pks: Vec<PublicKey>,
}

const KEYS: [&str; 5] = [
    "servers",
    "discovery",
    "discovery_pk",
    "transport_setup_pks",
    "route_setup_pks",
];

impl Deployment {
    /// The embedded default: dmsg's embedded servers, nothing else.
    pub fn embedded() -> Self {
        Self {
            servers: dmsg::deployment::default_servers(),
            ..Self::default()
        }
    }

    /// Parses a deployment file; unknown keys and bad values are refused, naming them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|error| format!("not TOML: {error}"))?;
        if let Some(unknown) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
            return Err(format!(
                "unknown key {unknown:?} (a deployment has {})",
                KEYS.join(", ")
            ));
        }
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match table.get(key) {
                None => Ok(Vec::new()),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{key}: every item is a string"))
                    })
                    .collect(),
                Some(_) => Err(format!("{key} is an array of strings")),
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{key} is a string")),
            }
        };
        let keys = |key: &str| -> Result<Vec<PublicKey>, String> {
            strings(key)?
                .iter()
                .map(|pk| {
                    pk.parse()
                        .map_err(|error| format!("{key}: {pk:?}: {error}"))
                })
                .collect()
        };
        Ok(Self {
            servers: strings("servers")?
                .iter()
                .map(|s| {
                    s.parse()
                        .map_err(|error| format!("servers: {s:?}: {error}"))
                })
                .collect::<Result<_, String>>()?,
            discovery: string("discovery")?,
            discovery_pk: string("discovery_pk")?
                .map(|pk| pk.parse().map_err(|error| format!("discovery_pk: {error}")))
                .transpose()?,
            transport_setup_pks: keys("transport_setup_pks")?,
            route_setup_pks: keys("route_setup_pks")?,
        })
    }

    /// The deployment as TOML lines (the keys it has).
    pub fn to_toml(&self) -> String {
        let quoted =
            |value: &dyn std::fmt::Display| toml::Value::String(value.to_string()).to_string();
        let array = |items: Vec<String>| format!("[{}]", items.join(", "));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "servers = {}",
            array(self.servers.iter().map(|s| quoted(s)).collect())
        );
        if let Some(url) = &self.discovery {
            let _ = writeln!(out, "discovery = {}", quoted(url));
        }
        if let Some(pk) = &self.discovery_pk {
            let _ = writeln!(out, "discovery_pk = {}", quoted(pk));
        }
        for (key, pks) in [
            ("transport_setup_pks", &self.transport_setup_pks),
            ("route_setup_pks", &self.route_setup_pks),
        ] {
            let _ = writeln!(
                out,
                "{key} = {}",
                array(pks.iter().map(|pk| quoted(pk)).collect())
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_round_trip_and_refuse_what_they_do_not_know() {
        let pk = dmsg::identity::Keypair::generate().public();
        let deployment = Deployment {
            servers: vec![
                format!("{pk}@127.0.0.1:8080")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            discovery: Some("http://127.0.0.1:9090".into()),
            discovery_pk: None,
            transport_setup_pks: vec![pk],
            route_setup_pks: vec![pk, pk],
        };
        assert_eq!(Deployment::parse(&deployment.to_toml()), Ok(deployment));
        assert_eq!(Deployment::parse(""), Ok(Deployment::default()));
        for (text, says) in [
            ("servers = [\"x\"]", "servers"),
            ("route_setup_pks = \"x\"", "array"),
            ("colour = \"blue\"", "unknown key"),
            ("servers = [", "not TOML"),
        ] {
            let error = Deployment::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
