//! Persistent transports (ROUTING.md §2.6): transports from config kept up by dmsg's one
//! keeper (`dmsg::client::keeper`) — dialed at start, re-dialed with full-jitter backoff
//! whenever they close. A transport that is already up (dialed by the other edge, say) is
//! adopted, not dialed again.

use std::sync::Arc;

use dmsg::client::keeper::{DialFailure, Keepers, Link};
use dmsg::identity::PublicKey;

use super::{Transport, TransportKind, transport_id};
use crate::node::{TransportError, WeakVisor};

/// A transport to keep up: `TYPE:PK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Persistent {
    /// Its type.
    pub kind: TransportKind,
    /// The other edge.
    pub peer: PublicKey,
}

impl std::fmt::Display for Persistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.peer)
    }
}

impl std::str::FromStr for Persistent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, peer) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not TYPE:PK (e.g. stcp:<64 hex digits>)"))?;
        Ok(Self {
            kind: kind.parse()?,
            peer: peer
                .parse()
                .map_err(|error| format!("{peer:?} is not a public key: {error}"))?,
        })
    }
}

/// Transports of a visor, as the keeper dials them (the visor held weakly: the keepers end
/// when it does).
#[derive(Clone, Debug)]
pub struct TransportLink(pub WeakVisor);

/// Keepers of persistent transports.
pub type TransportKeepers = Keepers<TransportLink>;

#[tonic::async_trait]
impl Link for TransportLink {
    type Target = Persistent;
    type Key = Persistent;
    type Up = Arc<Transport>;

    fn key(target: &Persistent) -> Persistent {
        *target
    }

    async fn dial(&self, target: &Persistent) -> Result<Arc<Transport>, DialFailure> {
        let visor = self.0.upgrade().ok_or(DialFailure::OwnerGone)?;
        let id = transport_id(&visor.public_key(), &target.peer, target.kind);
        if let Some(live) = visor.transport(&id) {
            return Ok(live);
        }
        let dialed = match target.kind {
            TransportKind::Stcp => visor.dial_stcp(target.peer).await,
            TransportKind::Dmsg => visor.dial_dmsg(target.peer).await,
        };
        match dialed {
            Ok(transport) => Ok(transport),
            // The other edge's connection won (ROUTING.md §2.5): keep that one.
            Err(TransportError::Duplicate(_)) => visor
                .transport(&id)
                .ok_or_else(|| DialFailure::Failed("the winning connection closed".into())),
            Err(TransportError::ShuttingDown) => Err(DialFailure::OwnerGone),
            Err(error) => Err(DialFailure::Failed(error.to_string())),
        }
    }

    async fn ended(transport: &Arc<Transport>) -> String {
        transport.closed.cancelled().await;
        transport.close_reason().unwrap_or_default()
    }

    fn close(transport: Arc<Transport>) {
        transport.close("no longer a persistent transport");
    }

    fn bootstrapping(&self) -> bool {
        false
    }
}
