//! Harnesses: an in-process relay server, clients, raw sessions that can send anything, and
//! a fake server that completes the handshake and then does what the test says.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, ClientConfig};
use crate::handshake::{initiate, respond};
use crate::identity::Keypair;
use crate::mux::{Mux, MuxConfig, Role};
use crate::noise::PqSettings;
use crate::server::{Server, ServerConfig};
use crate::session::{IncomingHandler, IncomingOpen, Session, SessionSetup};

/// A relay server on 127.0.0.1:0.
pub(crate) struct Relay {
    pub(crate) server: Server,
    pub(crate) addr: SocketAddr,
    serve: JoinHandle<std::io::Result<()>>,
}

impl Relay {
    pub(crate) async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    pub(crate) async fn client(&self) -> (Client, Session) {
        let client = Client::new(Keypair::generate(), ClientConfig::default());
        let session = client
            .connect(self.server.public_key(), self.addr)
            .await
            .unwrap();
        (client, session)
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown().await;
        self.serve.await.unwrap().unwrap();
    }
}

/// A session to the relay whose owner answers incoming opens with `handler` (or never).
pub(crate) async fn raw_session(
    relay: &Relay,
    keypair: &Keypair,
    handler: IncomingHandler,
) -> (Session, JoinHandle<crate::wire::Code>) {
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let handshake = initiate(
        &mut tcp,
        keypair,
        relay.server.public_key(),
        &PqSettings::default(),
        false,
    )
    .await
    .unwrap();
    let (session, driver) = Session::over(
        tcp,
        handshake,
        SessionSetup {
            role: Role::Initiator,
            mux: MuxConfig::default(),
            remote_addr: None,
            incoming: handler,
        },
    );
    let task = tokio::spawn(driver);
    session.ready().await.unwrap();
    (session, task)
}

/// An incoming handler that keeps every open unanswered (a destination that never replies).
pub(crate) fn never_answer() -> (IncomingHandler, Arc<std::sync::Mutex<Vec<IncomingOpen>>>) {
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = held.clone();
    (Arc::new(move |open| sink.lock().unwrap().push(open)), held)
}

/// A fake server: accepts one client, completes the handshake, sends READY, and hands the
/// socket and a responder mux to the test.
pub(crate) struct FakeServer {
    pub(crate) keypair: Keypair,
    pub(crate) addr: SocketAddr,
    listener: TcpListener,
}

impl FakeServer {
    pub(crate) async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self {
            keypair: Keypair::generate(),
            addr: listener.local_addr().unwrap(),
            listener,
        }
    }

    /// Accepts the client's session; returns the socket (READY already written), the bytes
    /// read past the handshake, and the mux.
    pub(crate) async fn accept(&self) -> (TcpStream, bytes::BytesMut, Mux) {
        let (mut tcp, _) = self.listener.accept().await.unwrap();
        let handshake = respond(
            &mut tcp,
            &self.keypair,
            &PqSettings::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let read_ahead = handshake.read_ahead;
        let (send, recv) = handshake.established.into_ciphers();
        let mut mux = Mux::new(
            Role::Responder,
            MuxConfig::default(),
            send,
            recv,
            Instant::now(),
        );
        tcp.write_all(&mux.take_output()).await.unwrap();
        (tcp, read_ahead, mux)
    }
}
