//! An in-memory network for the `Dial` / `Listen` seam: named addresses, `tokio::io::duplex`
//! pipes. No socket and no real time, so tests can run on paused time.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dmsg::net::{Connection, Dial, DialFuture, Dialer, Listen};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Pipe capacity.
pub const PIPE: usize = 256 * 1024;

/// Named in-memory addresses. Clones share the names.
#[derive(Clone, Default)]
pub struct MemoryNet(Arc<Mutex<HashMap<String, mpsc::Sender<DuplexStream>>>>);

impl MemoryNet {
    /// Listens on `name` (replacing whoever listened there); dialing it fails with
    /// "connection refused" once the listener is dropped.
    pub fn listen(&self, name: &str) -> MemoryListener {
        let (tx, rx) = mpsc::channel(64);
        self.0.lock().unwrap().insert(name.to_owned(), tx);
        MemoryListener(rx)
    }

    /// A client dialer over this network.
    pub fn dialer(&self) -> Dialer {
        Dialer::new(self.clone())
    }
}

impl Dial for MemoryNet {
    fn dial<'a>(&'a self, address: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let listener = self.0.lock().unwrap().get(address).cloned();
            let listener = listener
                .ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, "no such name"))?;
            let (near, far) = tokio::io::duplex(PIPE);
            listener
                .send(far)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(Connection {
                io: Box::new(near),
                peer: None,
            })
        })
    }
}

/// The listening end of a name.
pub struct MemoryListener(mpsc::Receiver<DuplexStream>);

impl Listen for MemoryListener {
    type Io = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, Option<SocketAddr>)> {
        match self.0.recv().await {
            Some(io) => Ok((io, None)),
            None => std::future::pending().await,
        }
    }
}
