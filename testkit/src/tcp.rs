//! Plain TCP services on loopback for tests.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering each connection, once the client has half-closed, with `echo:` and
/// everything it sent: a test sees both that the half-close went through and that the reply
/// still came back in full. Runs until the test's runtime ends.
pub async fn echo_after_eof() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if tcp.read_to_end(&mut got).await.is_ok() {
                    let _ = tcp.write_all(b"echo:").await;
                    let _ = tcp.write_all(&got).await;
                }
            });
        }
    });
    addr
}
