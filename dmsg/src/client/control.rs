//! Pings through dmsg streams: every lifecycle client answers on [`PING_PORT`] (PROTOCOL.md
//! §15), and [`Client::ping`] measures the round trip to another client through the relay.
//!
//! A ping is 9 bytes, `0x09` then an 8-byte nonce; the answer is `0x0A` and the same nonce.
//! A responder serves at most [`MAX_PING_STREAMS`] streams at once, each for at most
//! [`PING_IDLE`] between pings.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Client;
use super::dial::DialByAddrError;
use crate::addr::{DmsgAddr, Port};
use crate::identity::PublicKey;
use crate::stream::DmsgStream;

/// The dmsg port pings are answered on.
pub const PING_PORT: Port = match Port::new(7) {
    Some(port) => port,
    None => panic!("7 is a valid port"),
};
/// First byte of a ping.
const PING: u8 = 0x09;
/// First byte of a pong.
const PONG: u8 = 0x0A;
/// Length of a ping and of a pong.
const MESSAGE_LEN: usize = 9;
/// Ping streams a responder serves at once; more wait in the listener's backlog.
pub const MAX_PING_STREAMS: usize = 32;
/// A ping stream idle this long is closed.
pub const PING_IDLE: Duration = Duration::from_secs(30);
/// Longest [`Client::ping`] waits for the pong.
const PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a ping failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The stream to the peer could not be opened.
    #[error(transparent)]
    Dial(#[from] DialByAddrError),
    /// The stream failed while pinging.
    #[error("ping stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not the pong of this ping.
    #[error("the peer answered something other than a pong")]
    BadReply,
    /// No pong came in time.
    #[error("no pong within {0:?}")]
    Timeout(Duration),
}

/// Starts answering pings on [`PING_PORT`], in the client's lifecycle tracker, until `stop`.
/// A port already taken (the application listens on it) is left to the application.
pub(crate) fn start_responder(client: &Client, stop: CancellationToken) {
    let listener = match client.listen(PING_PORT) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "not answering pings");
            return;
        }
    };
    let tracker = client.inner.lifecycle.clone();
    client
        .inner
        .lifecycle
        .spawn(listener.serve(MAX_PING_STREAMS, tracker, stop, answer_pings));
}

/// Answers pings on one stream until it ends, misbehaves or idles.
async fn answer_pings(mut stream: DmsgStream) {
    let mut message = [0u8; MESSAGE_LEN];
    loop {
        match tokio::time::timeout(PING_IDLE, stream.read_exact(&mut message)).await {
            Ok(Ok(_)) if message[0] == PING => {}
            _ => return,
        }
        message[0] = PONG;
        if stream.write_all(&message).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

impl Client {
    /// The round trip to the client `pk` through the relay: the stream is dialed first (by
    /// [`Client::dial`]); the time is one ping and its pong on it.
    pub async fn ping(&self, pk: PublicKey) -> Result<Duration, PingError> {
        let mut stream = self.dial(DmsgAddr::new(pk, PING_PORT)).await?;
        ping_once(&mut stream).await
    }
}

/// One ping on `stream`; the time until its pong.
pub async fn ping_once(stream: &mut DmsgStream) -> Result<Duration, PingError> {
    let nonce: u64 = rand::random();
    let mut message = [0u8; MESSAGE_LEN];
    message[0] = PING;
    message[1..].copy_from_slice(&nonce.to_be_bytes());
    let started = Instant::now();
    stream.write_all(&message).await?;
    stream.flush().await?;
    let mut reply = [0u8; MESSAGE_LEN];
    tokio::time::timeout(PONG_TIMEOUT, stream.read_exact(&mut reply))
        .await
        .map_err(|_| PingError::Timeout(PONG_TIMEOUT))??;
    if reply[0] != PONG || reply[1..] != message[1..] {
        return Err(PingError::BadReply);
    }
    Ok(started.elapsed())
}
