//! The network seam: how a client reaches a server and how a server takes connections.
//!
//! A session runs over any `AsyncRead + AsyncWrite` byte stream ([`crate::session::Session::over`]).
//! [`Dial`] and [`Listen`] are the two small traits the client and the server use to get
//! one, so TCP is one implementation among others: the visor's stcp transports, an in-memory
//! network in tests, a simulator's sockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream a session can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection a [`Dial`] opened: the byte stream and, if it has one, the peer's socket
/// address (shown in logs and stats).
pub struct Connection {
    /// The byte stream.
    pub io: Box<dyn Io>,
    /// The peer's socket address, if the transport has one.
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The future a [`Dial`] returns.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Connection>> + Send + 'a>>;

/// Opens byte streams to servers by address (`host:port` for TCP). Object safe, so a client
/// holds one as `Arc<dyn Dial>` whatever the transport.
pub trait Dial: Send + Sync + 'static {
    /// Opens a byte stream to `address`.
    fn dial<'a>(&'a self, address: &'a str) -> DialFuture<'a>;
}

/// Dials TCP, with Nagle's algorithm off (frames are written whole).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDial;

impl Dial for TcpDial {
    fn dial<'a>(&'a self, address: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let tcp = TcpStream::connect(address).await?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr().ok();
            Ok(Connection {
                io: Box::new(tcp),
                peer,
            })
        })
    }
}

/// The dialer a client uses; TCP unless configured otherwise.
#[derive(Clone)]
pub struct Dialer(pub Arc<dyn Dial>);

impl Dialer {
    /// Wraps any [`Dial`].
    pub fn new(dial: impl Dial) -> Self {
        Self(Arc::new(dial))
    }
}

impl Default for Dialer {
    /// [`TcpDial`].
    fn default() -> Self {
        Self::new(TcpDial)
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

/// Accepts byte streams for a server. The server calls [`Listen::accept`] in its accept loop
/// and runs each connection's handshake in its own task.
pub trait Listen: Send + 'static {
    /// The byte stream of one accepted connection.
    type Io: Io;

    /// The next connection and its peer's socket address (if it has one). An error is
    /// retried with a backoff; only a persistent one ends the accept loop.
    fn accept(&mut self)
    -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (tcp, peer) = TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, Some(peer)))
    }
}
