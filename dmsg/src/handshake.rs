//! The session handshake over any byte stream (PROTOCOL.md §4.1): preamble, refusal or
//! the three `XK` messages, each framed as `u16 length ‖ message`. Its result, a
//! [`Handshake`], is what [`crate::session::Session::over`] runs a session on.
//!
//! Reads go through a small buffer (a message arrives in one segment; reading it in pieces
//! would cost a system call per field). Bytes read past the handshake are returned with the
//! keys and become the session's first input — nothing the peer sent is lost.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::identity::{Keypair, PublicKey};
use crate::mux::refusal_frame;
use crate::noise::{self, Established, HandshakeError, PqSettings, PqStatus, ResponderNext};
use crate::wire::{
    Code, HandshakeRefusal, MAX_HANDSHAKE_MESSAGE, PREAMBLE_LEN, PROTOCOL_VERSION, Pattern,
    Preamble, PreambleError,
};

async fn write_message<T: AsyncWrite + Unpin>(io: &mut T, message: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(2 + message.len());
    // Handshake messages are at most MAX_HANDSHAKE_MESSAGE bytes.
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    io.write_all(&framed).await
}

async fn read_message<T: AsyncRead + Unpin>(io: &mut T) -> Result<Vec<u8>, HandshakeError> {
    let len = usize::from(io.read_u16().await?);
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::MessageTooLong(len));
    }
    let mut message = vec![0u8; len];
    io.read_exact(&mut message).await?;
    Ok(message)
}

/// A completed session handshake: the keys (past the PQ policy) and the bytes the peer sent
/// right behind it, which become the session's first input.
#[derive(Debug)]
pub struct Handshake {
    /// The peer, the PQ status and the traffic ciphers.
    pub established: Established,
    /// Bytes read past the handshake.
    pub read_ahead: BytesMut,
}

/// Size of the handshake read buffer: holds the largest handshake message.
const HANDSHAKE_BUFFER: usize = 4096;

/// The initiator's side (a client to `server`), over `io`. Not bounded in time: the caller
/// sets the deadline.
///
/// `advertised` says the server is known to support PQ (config or its signed entry), which
/// makes a classical completion an error whatever the policy.
pub async fn initiate<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    local: &Keypair,
    server: PublicKey,
    pq: &PqSettings,
    advertised: bool,
) -> Result<Handshake, HandshakeError> {
    let mut reader = BufReader::with_capacity(HANDSHAKE_BUFFER, io);
    let io = &mut reader;
    let mode = pq.offer();
    let (expect, msg1) = noise::initiate(Pattern::Xk, local, server, mode, &[])?;
    let mut first = Preamble::session(mode).encode().to_vec();
    first.extend_from_slice(&(msg1.len() as u16).to_be_bytes());
    first.extend_from_slice(&msg1);
    io.write_all(&first).await?;
    let status = io.read_u8().await?;
    if status != 0 {
        let detail = io.read_u8().await.unwrap_or(0);
        return Err(HandshakeError::Refused(
            HandshakeRefusal::decode(status, detail).unwrap_or(HandshakeRefusal::Other(status)),
        ));
    }
    let msg2 = read_message(io).await?;
    let answered = expect.read_answer(&msg2)?;
    let msg3 = answered.confirm.ok_or(HandshakeError::MissingRemote)?;
    // Applied before message 3: a refused downgrade never completes on either end.
    let established = pq.check(answered.outcome, advertised, "session")?;
    write_message(io, &msg3).await?;
    Ok(Handshake {
        established,
        read_ahead: BytesMut::from(reader.buffer()),
    })
}

/// Writes a refusal and returns it as the error.
pub(crate) async fn refuse<T: AsyncWrite + Unpin>(
    io: &mut T,
    refusal: HandshakeRefusal,
) -> HandshakeError {
    let _ = io.write_all(&refusal.encode()).await;
    let _ = io.shutdown().await;
    HandshakeError::Refused(refusal)
}

/// The deadlines of a responder: a connection must deliver its first message (preamble and
/// message 1) within `first_message`, and finish within `total` (PROTOCOL.md §4.1, §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponderDeadlines {
    /// Preamble and message 1.
    pub first_message: std::time::Duration,
    /// The whole handshake.
    pub total: std::time::Duration,
}

impl Default for ResponderDeadlines {
    /// 1 s for the first message, 5 s in all.
    fn default() -> Self {
        Self {
            first_message: crate::wire::FIRST_MESSAGE_TIMEOUT,
            total: crate::wire::HANDSHAKE_TIMEOUT,
        }
    }
}

/// The responder's side (a server), over `io`, bounded by `deadlines`. A connection that
/// misses the first-message deadline is told so (refusal `ff 00`); once message 2 has gone
/// out no refusal is ever sent — the connection is only closed (PROTOCOL.md §4.1).
pub async fn respond<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    local: &Keypair,
    pq: &PqSettings,
    deadlines: ResponderDeadlines,
) -> Result<Handshake, HandshakeError> {
    let started = tokio::time::Instant::now();
    let mut reader = BufReader::with_capacity(HANDSHAKE_BUFFER, io);
    let io = &mut reader;
    let first_deadline = deadlines.first_message.min(deadlines.total);
    let first = tokio::time::timeout(first_deadline, read_first(io, pq)).await;
    let (preamble, msg1) = match first {
        Ok(first) => first?,
        Err(_) => {
            let refused = refuse(io, HandshakeRefusal::Other(TIMEOUT_REFUSAL));
            let _ = tokio::time::timeout_at(started + deadlines.total, refused).await;
            return Err(HandshakeError::Timeout(first_deadline));
        }
    };
    let rest = answer(io, local, pq, preamble, &msg1);
    let established = tokio::time::timeout_at(started + deadlines.total, rest)
        .await
        .map_err(|_| HandshakeError::Timeout(deadlines.total))??;
    Ok(Handshake {
        established,
        read_ahead: BytesMut::from(reader.buffer()),
    })
}

/// The refusal status of a handshake that did not arrive in time (`ff 00`).
const TIMEOUT_REFUSAL: u8 = 0xff;

/// Reads the preamble and message 1, refusing what this responder never answers.
async fn read_first<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    pq: &PqSettings,
) -> Result<(Preamble, Vec<u8>), HandshakeError> {
    let mut raw = [0u8; PREAMBLE_LEN];
    io.read_exact(&mut raw).await?;
    let preamble = Preamble::decode(&raw)?;
    if preamble.version != PROTOCOL_VERSION {
        return Err(refuse(io, HandshakeRefusal::UnsupportedVersion(PROTOCOL_VERSION)).await);
    }
    if preamble.pattern != Pattern::Xk {
        return Err(HandshakeError::Preamble(PreambleError::Pattern(
            preamble.pattern as u8,
        )));
    }
    if preamble.mode == crate::wire::Mode::Classical && pq.policy == noise::PqPolicy::Require {
        // Refused for PQ reasons, so counted as such (not only as a failed handshake).
        pq.stats.count_pq_refused();
        return Err(refuse(io, HandshakeRefusal::PqRequired).await);
    }
    let msg1 = read_message(io).await?;
    Ok((preamble, msg1))
}

/// Answers message 1 and reads message 3: the rest of the responder's handshake.
async fn answer<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    local: &Keypair,
    pq: &PqSettings,
    preamble: Preamble,
    msg1: &[u8],
) -> Result<Established, HandshakeError> {
    let responded = noise::respond(
        Pattern::Xk,
        local,
        None,
        preamble.mode,
        &[],
        msg1,
        pq.enabled,
    )?;
    let mut reply = vec![0u8];
    reply.extend_from_slice(&(responded.reply.len() as u16).to_be_bytes());
    reply.extend_from_slice(&responded.reply);
    io.write_all(&reply).await?;
    let ResponderNext::ExpectConfirm(expect) = responded.next else {
        return Err(HandshakeError::MissingRemote);
    };
    let msg3 = read_message(io).await?;
    let outcome = expect.read_confirm(&msg3)?;
    // A refusal is decided (and counted) by the policy gate first; then the client is told
    // why, under the session keys, so it gets a typed error.
    let refusal = (outcome.pq() == PqStatus::Classical
        && pq.required_for(&outcome.remote(), false).is_some())
    .then(|| {
        refusal_frame(
            &outcome,
            Code::PqRequired,
            "this server requires a post-quantum hybrid session with you",
        )
    });
    let checked = pq.check(outcome, false, "session");
    if let Some(frame) = refusal {
        let _ = io.write_all(&frame).await;
        let _ = io.shutdown().await;
    }
    checked
}
