//! An in-process relay server and clients on real loopback TCP.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig};
use dmsg::identity::Keypair;
use dmsg::server::{Server, ServerConfig};
use dmsg::session::Session;
use dmsg::stream::DmsgStream;
use tokio::task::JoinHandle;

pub mod memnet;

/// A relay server serving on 127.0.0.1 with an OS-chosen port.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub serve: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(Keypair::generate(), config);
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        Self {
            server,
            addr,
            serve,
        }
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        self.serve.await.unwrap().unwrap();
    }
}

/// A client with a session to `server`.
pub async fn connected(server: &TestServer, config: ClientConfig) -> (Client, Session) {
    let client = Client::new(Keypair::generate(), config);
    let session = client
        .connect(server.server.public_key(), server.addr)
        .await
        .unwrap();
    (client, session)
}

pub fn port(n: u16) -> Port {
    Port::new(n).unwrap()
}

pub fn addr(client: &Client, n: u16) -> DmsgAddr {
    DmsgAddr::new(client.public_key(), port(n))
}

/// Opens a stream from `dialer` through `session` to `listener_client`'s port 80 and passes
/// five bytes over it; returns the listener and both ends.
pub async fn stream_in_use(
    dialer: &Client,
    session: &Session,
    listener_client: &Client,
) -> (dmsg::client::Listener, DmsgStream, DmsgStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut listener = listener_client.listen(port(80)).unwrap();
    let mut stream = dialer
        .dial_via(session, addr(listener_client, 80))
        .await
        .unwrap();
    let mut peer = listener.accept().await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    (listener, stream, peer)
}

/// Waits (real time, bounded) until `condition` holds.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Rewrites the first `len` bytes of one direction of a connection (a handshake message).
pub struct Rewrite {
    pub len: usize,
    pub apply: Box<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>,
}

/// A TCP proxy in front of `target` that records every byte both ways and can rewrite the
/// start of either direction: a man in the middle on loopback.
pub struct Proxy {
    pub addr: SocketAddr,
    pub to_server: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    pub to_client: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr, up: Option<Rewrite>, down: Option<Rewrite>) -> Self {
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (up, down) = (Arc::new(up), Arc::new(down));
        let (ts, tc) = (to_server.clone(), to_client.clone());
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pipes.spawn(pipe(cr, sw, ts.clone(), up.clone()));
                pipes.spawn(pipe(sr, cw, tc.clone(), down.clone()));
            }
        });
        Self {
            addr,
            to_server,
            to_client,
            task,
        }
    }

    pub fn captured(&self) -> Vec<u8> {
        let mut all = self.to_server.lock().unwrap().clone();
        all.extend_from_slice(&self.to_client.lock().unwrap());
        all
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    rewrite: std::sync::Arc<Option<Rewrite>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut prefix = Vec::new();
    let mut rewritten = rewrite.is_none();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        let mut out = buf[..n].to_vec();
        if !rewritten {
            let rw = rewrite.as_ref().as_ref().unwrap();
            prefix.extend_from_slice(&out);
            if prefix.len() < rw.len {
                continue;
            }
            let rest = prefix.split_off(rw.len);
            out = (rw.apply)(std::mem::take(&mut prefix));
            out.extend_from_slice(&rest);
            rewritten = true;
        }
        if to.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// True if `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
