//! A dmsg mux session over a route group: the stream multiplexer skysocks rides on.
//!
//! dmsg's session (its mux: per-stream and per-session credit windows, opens with a request
//! body, pings) runs over any byte stream after a dmsg handshake ([`Session::over`]); here
//! the byte stream is a route group, already end-to-end encrypted between the two visors, so
//! the session's handshake (XK, the dialer as initiator) only has to name the same peer. The
//! stream bodies travel as they are (a dmsg session never re-encrypts DATA), so the cost per
//! byte is one 8-byte header and its tag per frame.
//!
//! A skysocks stream: the OPEN body is the target, `HOST:PORT` in UTF-8 (`[v6]:port` for
//! IPv6, at most [`MAX_TARGET_LEN`] bytes); the exit accepts at once (ACCEPT body: the one
//! byte [`STREAM_VERSION`]), connects, and writes one byte — the RFC 1928 reply code (`0x00`
//! connected) — then carries the bytes both ways, or closes the stream after a failure code.
//! (Accepting first keeps a slow connect, up to 10 s, inside the mux's 5 s open deadline.)

use std::time::Duration;

use dmsg::handshake::{self, ResponderDeadlines};
use dmsg::identity::{Keypair, PublicKey};
use dmsg::mux::{MuxConfig, Role};
use dmsg::noise::{HandshakeError, PqSettings};
use dmsg::session::{IncomingHandler, Session, SessionDriver, SessionSetup};
pub use dmsg::stream::PlainStream;

use crate::route_group::RouteGroup;

/// The longest OPEN body of a skysocks stream: a 255-byte host name, brackets, a port.
pub const MAX_TARGET_LEN: usize = 255 + 8;

/// The ACCEPT body of a skysocks stream: its version.
pub const STREAM_VERSION: u8 = 1;

/// How long the session handshake over a fresh route group may take.
pub const TUNNEL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The session handshake failed.
    #[error("the session handshake over the route group failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The session handshake named another key than the route group's peer.
    #[error("the session peer {got} is not the route group's {expected}")]
    WrongPeer {
        /// The route group's peer.
        expected: PublicKey,
        /// Who answered.
        got: PublicKey,
    },
    /// It took too long.
    #[error("the session handshake took longer than {TUNNEL_HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// The session did not become ready.
    #[error("the session closed before it was ready: {}", .0.label())]
    NotReady(dmsg::wire::Code),
}

/// A session and the driver to spawn (on a tracked task) to run it.
pub type Tunnel = (Session, SessionDriver<RouteGroup>);

/// The dialing end's session over `group` (whose peer is the exit).
pub async fn initiate(
    mut group: RouteGroup,
    keypair: &Keypair,
    pq: &PqSettings,
    incoming: IncomingHandler,
) -> Result<Tunnel, TunnelError> {
    let peer = group.addr().remote;
    let handshake = tokio::time::timeout(
        TUNNEL_HANDSHAKE_TIMEOUT,
        handshake::initiate(&mut group, keypair, peer, pq, false),
    )
    .await
    .map_err(|_| TunnelError::Timeout)??;
    Ok(Session::over(
        group,
        handshake,
        setup(Role::Initiator, incoming),
    ))
}

/// The accepting end's session over `group`.
pub async fn respond(
    mut group: RouteGroup,
    keypair: &Keypair,
    pq: &PqSettings,
    incoming: IncomingHandler,
) -> Result<Tunnel, TunnelError> {
    let expected = group.addr().remote;
    let deadlines = ResponderDeadlines {
        first_message: TUNNEL_HANDSHAKE_TIMEOUT,
        total: TUNNEL_HANDSHAKE_TIMEOUT,
    };
    let handshake = handshake::respond(&mut group, keypair, pq, deadlines).await?;
    let got = handshake.established.remote();
    if got != expected {
        return Err(TunnelError::WrongPeer { expected, got });
    }
    Ok(Session::over(
        group,
        handshake,
        setup(Role::Responder, incoming),
    ))
}

fn setup(role: Role, incoming: IncomingHandler) -> SessionSetup {
    SessionSetup {
        role,
        mux: MuxConfig::default(),
        remote_addr: None,
        incoming,
    }
}
