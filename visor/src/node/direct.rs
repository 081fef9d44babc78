//! Direct route groups (ROUTING.md §6.7, the `--direct` path): one hop over a transport to
//! the destination, set up by the two ends themselves — no route-setup, no breaker. The
//! initiator reserves its two route IDs and sends OPEN (its CONSUME key, the two ports); the
//! responder, if it listens on the port, reserves and installs its own two rules and answers
//! OPENED with its CONSUME key; the initiator installs its rules and runs the usual
//! end-to-end handshake (§6.2). Rules an OPEN installed are removed again if no handshake
//! turns them into a route group within [`OPEN_EXPIRY`], and a transport has at most
//! [`MAX_PENDING_OPENS`] such opens at once, so a peer's OPENs cost a bounded share.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use tracing::Instrument;

use super::{Visor, lock};
use crate::packet::{CloseCode, FrameType, Header, OPEN_BODY_LEN, OPENED_BODY_LEN, RouteId};
use crate::route_group::{ROUTE_HANDSHAKE_TIMEOUT, RouteGroup, RouteGroupError};
use crate::router::rule::DEFAULT_KEEP_ALIVE;
use crate::router::{NextHop, RouteDescriptor, Rule, RuleKind, TableError};
use crate::transport::queue::OutFrame;
use crate::transport::{Transport, TransportKind};

use super::TransportError;

/// Opens a transport may have waiting for their handshake at once; more are answered
/// `busy`.
pub const MAX_PENDING_OPENS: usize = 64;

/// How long the rules of an answered OPEN wait for the handshake before they are removed.
pub const OPEN_EXPIRY: Duration = Duration::from_secs(6);

/// How long a direct dial may take by default: the transport, OPEN, and the handshake.
pub const DEFAULT_DIRECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a direct dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectDialError {
    /// No transport to the destination could be made.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// This visor has no route ID free.
    #[error("no route ID free here: {0}")]
    Table(#[from] TableError),
    /// The destination refused the OPEN (`no_listener`: nothing published on the port;
    /// `busy`: too many opens pending).
    #[error("{peer} refused the direct route group: {code}")]
    Refused {
        /// The destination.
        peer: PublicKey,
        /// Why.
        code: CloseCode,
    },
    /// The destination did not answer the OPEN.
    #[error("{0} did not answer the OPEN within {ROUTE_HANDSHAKE_TIMEOUT:?}")]
    NoAnswer(PublicKey),
    /// The route group could not be opened (the end-to-end handshake, say).
    #[error(transparent)]
    Group(#[from] RouteGroupError),
    /// The deadline passed.
    #[error("the direct dial took longer than {0:?}")]
    Timeout(Duration),
}

/// What answered an OPEN.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OpenAnswer {
    /// Accepted: the responder's CONSUME key.
    Accepted(RouteId),
    /// Refused.
    Refused(CloseCode),
}

fn open_packet(initiator_key: RouteId, src_port: Port, dst_port: Port) -> OutFrame {
    let mut body = [0u8; OPEN_BODY_LEN];
    body[..2].copy_from_slice(&src_port.get().to_be_bytes());
    body[2..].copy_from_slice(&dst_port.get().to_be_bytes());
    OutFrame {
        header: Header::for_route(FrameType::Open, initiator_key, OPEN_BODY_LEN as u16),
        body: Bytes::copy_from_slice(&body),
    }
}

fn opened_packet(initiator_key: RouteId, answer: OpenAnswer) -> OutFrame {
    let (code, key) = match answer {
        OpenAnswer::Accepted(key) => (CloseCode::Normal, key.get()),
        OpenAnswer::Refused(code) => (code, 0),
    };
    let mut body = [0u8; OPENED_BODY_LEN];
    body[0] = code as u8;
    body[1..].copy_from_slice(&key.to_be_bytes());
    OutFrame {
        header: Header::for_route(FrameType::Opened, initiator_key, OPENED_BODY_LEN as u16),
        body: Bytes::copy_from_slice(&body),
    }
}

/// An OPENED body; `None` if it makes no sense (an unknown code, an accept without a key).
fn parse_opened(body: &[u8]) -> Option<OpenAnswer> {
    let code = CloseCode::from_u8(*body.first()?)?;
    let key = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
    match code {
        CloseCode::Normal => RouteId::new(key).map(OpenAnswer::Accepted),
        refused => Some(OpenAnswer::Refused(refused)),
    }
}

/// Releases route IDs when dropped, unless disarmed.
struct Reserved<'a> {
    visor: &'a Visor,
    keys: Vec<RouteId>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for key in self.keys.drain(..) {
            self.visor.remove_rule(key);
        }
    }
}

impl Visor {
    /// Dials a route group to `dst`'s route port `port` over a direct transport — an
    /// existing one to `dst`, else a new stcp one if `dst` is in the pk_table, else dmsg —
    /// one hop, without route-setup or any breaker (see the module docs). Done when the
    /// end-to-end handshake completes; on failure nothing of it stays on this visor.
    pub async fn dial_direct(
        &self,
        dst: PublicKey,
        port: Port,
        timeout: Option<Duration>,
    ) -> Result<RouteGroup, DirectDialError> {
        let timeout = timeout.unwrap_or(DEFAULT_DIRECT_TIMEOUT);
        let span = tracing::info_span!("visor.dial_direct", %dst, %port);
        tokio::time::timeout(timeout, self.dial_direct_now(dst, port))
            .instrument(span)
            .await
            .map_err(|_| DirectDialError::Timeout(timeout))?
    }

    async fn dial_direct_now(
        &self,
        dst: PublicKey,
        port: Port,
    ) -> Result<RouteGroup, DirectDialError> {
        let transport = self.direct_transport(dst).await?;
        let mut reserved = Reserved {
            visor: self,
            keys: self.reserve(2)?,
        };
        let (consume_key, forward_key) = (reserved.keys[0], reserved.keys[1]);
        let src_port = crate::route_dial::ephemeral_port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&transport.pending_opens).insert(consume_key, tx);
        let answer = match transport.send(open_packet(consume_key, src_port, port)) {
            Ok(()) => tokio::select! {
                () = self.inner.shutdown.cancelled() => None,
                answer = tokio::time::timeout(ROUTE_HANDSHAKE_TIMEOUT, rx) => answer.ok().and_then(Result::ok),
            },
            Err(_) => None,
        };
        lock(&transport.pending_opens).remove(&consume_key);
        let their_key = match answer {
            Some(OpenAnswer::Accepted(key)) => key,
            Some(OpenAnswer::Refused(code)) => {
                return Err(DirectDialError::Refused { peer: dst, code });
            }
            None if self.inner.shutdown.is_cancelled() => {
                return Err(RouteGroupError::ShuttingDown.into());
            }
            None => return Err(DirectDialError::NoAnswer(dst)),
        };
        let descriptor = RouteDescriptor {
            src_pk: self.public_key(),
            dst_pk: dst,
            src_port,
            dst_port: port,
        };
        let forward = Rule {
            key: forward_key,
            keep_alive: DEFAULT_KEEP_ALIVE,
            kind: RuleKind::Forward {
                descriptor,
                next: NextHop {
                    route: their_key,
                    transport: transport.id,
                },
            },
        };
        let consume = Rule {
            key: consume_key,
            keep_alive: DEFAULT_KEEP_ALIVE,
            kind: RuleKind::Consume(descriptor.reversed()),
        };
        // `dial` removes what it installed on failure; the guard releases the rest.
        let group = self.dial(forward, consume).await?;
        reserved.keys.clear();
        Ok(group)
    }

    /// A transport to `dst` for a direct dial: a live one (stcp first), else a new one.
    async fn direct_transport(&self, dst: PublicKey) -> Result<Arc<Transport>, TransportError> {
        let mut live: Vec<_> = self
            .transports()
            .into_iter()
            .filter(|t| t.peer == dst && !t.is_closed())
            .collect();
        live.sort_by_key(|t| t.kind != TransportKind::Stcp);
        if let Some(transport) = live.into_iter().next() {
            return Ok(transport);
        }
        if self.inner.config.pk_table.contains_key(&dst) {
            self.dial_stcp(dst).await
        } else {
            self.dial_dmsg(dst).await
        }
    }

    /// An OPEN arrived on `transport` (the responder's side of ROUTING.md §6.7). Runs in the
    /// transport's reader task: no await, bounded work.
    pub(super) fn on_open(&self, transport: &Arc<Transport>, their_key: RouteId, body: &[u8]) {
        let answer = self.answer_open(transport, their_key, body);
        let _ = transport.send(opened_packet(their_key, answer));
    }

    fn answer_open(
        &self,
        transport: &Arc<Transport>,
        their_key: RouteId,
        body: &[u8],
    ) -> OpenAnswer {
        let port = |at: usize| {
            body.get(at..at + 2)
                .and_then(|b| Port::new(u16::from_be_bytes([b[0], b[1]])))
        };
        let (Some(src_port), Some(dst_port)) = (port(0), port(2)) else {
            return OpenAnswer::Refused(CloseCode::NoListener);
        };
        let listening = lock(&self.inner.listeners)
            .get(&dst_port)
            .is_some_and(|tx| !tx.is_closed());
        if !listening {
            return OpenAnswer::Refused(CloseCode::NoListener);
        }
        if transport.pending_open_count.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_OPENS {
            transport.pending_open_count.fetch_sub(1, Ordering::AcqRel);
            return OpenAnswer::Refused(CloseCode::Busy);
        }
        let installed = self.install_opened(transport, their_key, src_port, dst_port);
        let Some((consume_key, forward_key)) = installed else {
            transport.pending_open_count.fetch_sub(1, Ordering::AcqRel);
            return OpenAnswer::Refused(CloseCode::Busy);
        };
        // The rules wait OPEN_EXPIRY for the handshake; then the slot is freed either way.
        let visor = self.downgrade();
        let transport = transport.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(OPEN_EXPIRY) => {}
            }
            transport.pending_open_count.fetch_sub(1, Ordering::AcqRel);
            if let Some(visor) = visor.upgrade()
                && !lock(&visor.inner.groups).contains_key(&consume_key)
            {
                visor.remove_rule(consume_key);
                visor.remove_rule(forward_key);
            }
        });
        OpenAnswer::Accepted(consume_key)
    }

    /// Reserves and installs the responder's two rules of an OPEN; `None` if the table is
    /// full.
    fn install_opened(
        &self,
        transport: &Transport,
        their_key: RouteId,
        src_port: Port,
        dst_port: Port,
    ) -> Option<(RouteId, RouteId)> {
        let descriptor = RouteDescriptor {
            src_pk: transport.peer,
            dst_pk: self.public_key(),
            src_port,
            dst_port,
        };
        let keys = self.reserve(2).ok()?;
        let (consume_key, forward_key) = (keys[0], keys[1]);
        let consume = Rule {
            key: consume_key,
            keep_alive: DEFAULT_KEEP_ALIVE,
            kind: RuleKind::Consume(descriptor),
        };
        let forward = Rule {
            key: forward_key,
            keep_alive: DEFAULT_KEEP_ALIVE,
            kind: RuleKind::Forward {
                descriptor: descriptor.reversed(),
                next: NextHop {
                    route: their_key,
                    transport: transport.id,
                },
            },
        };
        if self.install(consume).is_err() || self.install(forward).is_err() {
            self.remove_rule(consume_key);
            self.remove_rule(forward_key);
            return None;
        }
        Some((consume_key, forward_key))
    }

    /// An OPENED arrived on `transport`: the answer to one of this visor's OPENs, or a stray
    /// one (dropped).
    pub(super) fn on_opened(&self, transport: &Arc<Transport>, key: RouteId, body: &[u8]) {
        let waiting = lock(&transport.pending_opens).remove(&key);
        match (waiting, parse_opened(body)) {
            (Some(waiting), Some(answer)) => {
                let _ = waiting.send(answer);
            }
            (Some(waiting), None) => {
                let _ = waiting.send(OpenAnswer::Refused(CloseCode::HandshakeFailed));
            }
            (None, _) => self
                .inner
                .count_drop(transport, crate::router::DropReason::UnknownRoute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_bodies_round_trip_and_nonsense_is_refused() {
        let key = RouteId::new(7).unwrap_or_else(|| unreachable!());
        for answer in [
            OpenAnswer::Accepted(key),
            OpenAnswer::Refused(CloseCode::NoListener),
            OpenAnswer::Refused(CloseCode::Busy),
        ] {
            let frame = opened_packet(key, answer);
            assert_eq!(frame.header.kind, FrameType::Opened);
            let parsed = parse_opened(&frame.body).unwrap_or_else(|| panic!("{answer:?}"));
            assert_eq!(format!("{parsed:?}"), format!("{answer:?}"));
        }
        assert!(parse_opened(&[0, 0, 0, 0, 0]).is_none(), "accepted, key 0");
        assert!(parse_opened(&[0xee, 0, 0, 0, 1]).is_none(), "unknown code");
        let open = open_packet(
            key,
            Port::new(50_000).unwrap_or_else(|| unreachable!()),
            Port::new(80).unwrap_or_else(|| unreachable!()),
        );
        assert_eq!(&open.body[..], &[0xc3, 0x50, 0, 80]);
    }
}
