//! Baselines shared by the dmsg and visor benches (`#[path]`-included by both, so both
//! measure the same code): one relayed dmsg stream, the same end-to-end encryption over one
//! plain TCP connection, and the helpers around them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, ClientConfig};
use dmsg::identity::Keypair;
use dmsg::noise::{self, PqSettings, ResponderNext};
use dmsg::server::{Server, ServerConfig};
use dmsg::wire::{MAX_RECORD_PLAINTEXT, Mode, Pattern, TAG_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The median of `samples`.
pub fn middle(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

pub fn gbps(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

pub async fn start_server(
    config: ServerConfig,
) -> (
    Server,
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(Keypair::generate(), config);
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (server, addr, task)
}

/// Sends `total` bytes through `writer` and reads them from `reader` concurrently.
pub async fn transfer<W, R>(mut writer: W, mut reader: R, total: usize) -> f64
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let started = Instant::now();
    let send = tokio::spawn(async move {
        let block = vec![0x5au8; 1 << 20];
        let mut left = total;
        while left > 0 {
            let n = left.min(block.len());
            writer.write_all(&block[..n]).await.unwrap();
            left -= n;
        }
        writer.shutdown().await.unwrap();
        writer
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < total {
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "early EOF at {got}");
        got += n;
    }
    let elapsed = started.elapsed();
    drop(send.await.unwrap());
    gbps(total, elapsed)
}

/// One stream A → server → B through the dmsg relay.
/// One stream A → dmsg server → B, Gbit/s.
pub async fn relay_gbps(total: usize) -> f64 {
    let (server, addr, task) = start_server(ServerConfig::default()).await;
    let alice = Client::new(Keypair::generate(), ClientConfig::default());
    let bob = Client::new(Keypair::generate(), ClientConfig::default());
    let session = alice.connect(server.public_key(), addr).await.unwrap();
    bob.connect(server.public_key(), addr).await.unwrap();
    let mut listener = bob.listen(Port::new(80).unwrap()).unwrap();
    let dst = DmsgAddr::new(bob.public_key(), Port::new(80).unwrap());
    let (stream, accepted) = tokio::join!(alice.dial_via(&session, dst), listener.accept());
    let rate = transfer(stream.unwrap(), accepted.unwrap(), total).await;
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
    task.await.unwrap().unwrap();
    rate
}

/// The same end-to-end encryption (KK keys, 64 KiB records, ChaCha20-Poly1305) A → B over
/// one plain TCP connection: no server.
pub async fn direct_e2e_gbps(total: usize) -> f64 {
    let a = Keypair::generate();
    let b = Keypair::generate();
    let pq = PqSettings::default();
    let (expect, msg1) =
        noise::initiate(Pattern::Kk, &a, b.public(), Mode::Hybrid, b"direct").unwrap();
    let responded = noise::respond(
        Pattern::Kk,
        &b,
        Some(a.public()),
        Mode::Hybrid,
        b"direct",
        &msg1,
        true,
    )
    .unwrap();
    let ResponderNext::Done(b_outcome) = responded.next else {
        unreachable!()
    };
    let a_outcome = expect.read_answer(&responded.reply).unwrap().outcome;
    let (mut seal, _) = pq.check(a_outcome, false, "stream").unwrap().into_ciphers();
    let (_, mut open) = pq.check(b_outcome, false, "stream").unwrap().into_ciphers();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap().0);
    let _ = client.set_nodelay(true);
    // Buffered like the dmsg path (256 KiB socket reads, batched writes), so the ratio
    // compares the relay hop, not IO strategies.
    let mut tx = tokio::io::BufWriter::with_capacity(256 * 1024, client);
    let mut rx = tokio::io::BufReader::with_capacity(256 * 1024, server);
    let started = Instant::now();
    let send = tokio::spawn(async move {
        let plain = vec![0x5au8; MAX_RECORD_PLAINTEXT];
        let mut record = Vec::with_capacity(4 + MAX_RECORD_PLAINTEXT + TAG_LEN);
        let mut left = total;
        while left > 0 {
            let n = left.min(plain.len());
            record.clear();
            record.extend_from_slice(&((n + TAG_LEN) as u32).to_be_bytes());
            record.extend_from_slice(&plain[..n]);
            let tag = seal.seal(&[0], &mut record[4..]).unwrap();
            record.extend_from_slice(&tag);
            tx.write_all(&record).await.unwrap();
            left -= n;
        }
        tx.flush().await.unwrap();
    });
    let mut got = 0;
    let mut record = vec![0u8; MAX_RECORD_PLAINTEXT + TAG_LEN];
    while got < total {
        let len = rx.read_u32().await.unwrap() as usize;
        rx.read_exact(&mut record[..len]).await.unwrap();
        let plain = open.open(&[0], &mut record[..len]).unwrap();
        got += plain.len();
    }
    let elapsed = started.elapsed();
    send.await.unwrap();
    gbps(total, elapsed)
}
