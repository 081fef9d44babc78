//! The stcp transport handshake (ROUTING.md §2.2): dmsg's Noise `KK`, hybrid under the PQ
//! policy, behind a short preamble that names the dialer. The parser of the preamble is sans-IO
//! ([`Hello::decode`]); [`dial`] and [`accept`] run it over any byte stream with deadlines.

use std::time::Duration;

use dmsg::identity::{Keypair, PUBLIC_KEY_LEN, PublicKey};
use dmsg::noise::{self, Established, HandshakeError, PqSettings, ResponderNext};
use dmsg::wire::{HandshakeRefusal, Mode, Pattern};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::packet::MAX_HANDSHAKE_MESSAGE;

/// The first bytes a dialer sends.
pub const MAGIC: &[u8; 8] = b"SKYSTCP1";
/// Bytes of the dialer's hello before Noise message 1.
pub const HELLO_LEN: usize = MAGIC.len() + 1 + PUBLIC_KEY_LEN + 2;
/// Deadline of the whole handshake, each end.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the dialer's hello and message 1 at the listener.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Label of the Noise binding.
const BINDING_LABEL: &[u8] = b"skywire-stcp/1";

/// The dialer's hello: the mode it offers, who it is, and the length of message 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Offered mode.
    pub mode: Mode,
    /// The dialer's key (validated: not a small-order point).
    pub dialer: PublicKey,
    /// Bytes of Noise message 1 that follow.
    pub message_len: usize,
}

/// Why a hello is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Not an stcp dialer (or another version).
    #[error("not an stcp hello (bad magic)")]
    Magic,
    /// The mode byte is neither classical nor hybrid.
    #[error("unknown handshake mode {0:#04x}")]
    Mode(u8),
    /// The dialer key is not a valid public key.
    #[error("the dialer key is not a valid public key")]
    Key,
    /// Message 1 is empty or longer than the maximum.
    #[error("a Noise message of {0} bytes is outside 1..=4096")]
    MessageLen(usize),
}

impl Hello {
    /// The bytes on the wire.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8] = self.mode as u8;
        out[9..41].copy_from_slice(self.dialer.as_bytes());
        let len = u16::try_from(self.message_len).unwrap_or(u16::MAX);
        out[41..43].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Reads and validates a hello.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, HelloError> {
        if &bytes[..8] != MAGIC {
            return Err(HelloError::Magic);
        }
        let mode = Mode::from_u8(bytes[8]).ok_or(HelloError::Mode(bytes[8]))?;
        let dialer = PublicKey::from_slice(&bytes[9..41]).map_err(|_| HelloError::Key)?;
        let message_len = usize::from(u16::from_be_bytes([bytes[41], bytes[42]]));
        if message_len == 0 || message_len > MAX_HANDSHAKE_MESSAGE {
            return Err(HelloError::MessageLen(message_len));
        }
        Ok(Self {
            mode,
            dialer,
            message_len,
        })
    }
}

/// Why an stcp handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum StcpHandshakeError {
    /// Noise, the PQ policy, a refusal, a deadline or the connection.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The dialer's hello was not valid.
    #[error("bad stcp hello: {0}")]
    Hello(#[from] HelloError),
    /// The dialer claimed the listener's own key.
    #[error("the dialer claims this visor's own key")]
    OwnKey,
}

fn binding(dialer: &PublicKey, listener: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(BINDING_LABEL.len() + 2 * PUBLIC_KEY_LEN);
    out.extend_from_slice(BINDING_LABEL);
    out.extend_from_slice(dialer.as_bytes());
    out.extend_from_slice(listener.as_bytes());
    out
}

async fn read_message<T: AsyncRead + Unpin>(io: &mut T) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::MessageTooLong(len));
    }
    let mut message = vec![0u8; len];
    io.read_exact(&mut message).await?;
    Ok(message)
}

/// Dials: runs the handshake as the dialer with the listener `remote`. `advertised` says the
/// listener is known to offer PQ (a classical completion then fails whatever the policy).
pub async fn dial<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    local: &Keypair,
    remote: PublicKey,
    pq: &PqSettings,
    advertised: bool,
) -> Result<Established, StcpHandshakeError> {
    let run = async {
        let mode = pq.offer();
        let (expect, message) = noise::initiate(
            Pattern::Kk,
            local,
            remote,
            mode,
            &binding(&local.public(), &remote),
        )?;
        let hello = Hello {
            mode,
            dialer: local.public(),
            message_len: message.len(),
        };
        let mut out = Vec::with_capacity(HELLO_LEN + message.len());
        out.extend_from_slice(&hello.encode());
        out.extend_from_slice(&message);
        io.write_all(&out).await.map_err(HandshakeError::Io)?;
        let mut status = [0u8; 2];
        io.read_exact(&mut status)
            .await
            .map_err(HandshakeError::Io)?;
        if let Some(refusal) = HandshakeRefusal::decode(status[0], status[1]) {
            return Err(HandshakeError::Refused(refusal).into());
        }
        let reply = read_message(io).await?;
        let answered = expect.read_answer(&reply)?;
        Ok(pq.check(answered.outcome, advertised, "stcp transport")?)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))?
}

/// Accepts: runs the handshake as the listener. The hello and message 1 must arrive within
/// [`FIRST_MESSAGE_TIMEOUT`], the whole within [`HANDSHAKE_TIMEOUT`].
pub async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    local: &Keypair,
    pq: &PqSettings,
) -> Result<Established, StcpHandshakeError> {
    let first = async {
        let mut hello = [0u8; HELLO_LEN];
        io.read_exact(&mut hello)
            .await
            .map_err(HandshakeError::Io)?;
        let hello = Hello::decode(&hello)?;
        let mut message = vec![0u8; hello.message_len];
        io.read_exact(&mut message)
            .await
            .map_err(HandshakeError::Io)?;
        Ok::<_, StcpHandshakeError>((hello, message))
    };
    let started = tokio::time::Instant::now();
    let (hello, message) = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, first)
        .await
        .map_err(|_| HandshakeError::Timeout(FIRST_MESSAGE_TIMEOUT))??;
    if hello.dialer == local.public() {
        return Err(StcpHandshakeError::OwnKey);
    }
    let rest = async {
        if hello.mode == Mode::Classical && pq.required_for(&hello.dialer, false).is_some() {
            pq.stats.count_pq_refused();
            io.write_all(&HandshakeRefusal::PqRequired.encode())
                .await
                .map_err(HandshakeError::Io)?;
            return Err(HandshakeError::Refused(HandshakeRefusal::PqRequired).into());
        }
        let responded = noise::respond(
            Pattern::Kk,
            local,
            Some(hello.dialer),
            hello.mode,
            &binding(&hello.dialer, &local.public()),
            &message,
            pq.enabled,
        )?;
        let ResponderNext::Done(outcome) = responded.next else {
            return Err(HandshakeError::MissingRemote.into());
        };
        let established = match pq.check(outcome, false, "stcp transport") {
            Ok(established) => established,
            Err(error) => {
                let _ = io.write_all(&HandshakeRefusal::PqRequired.encode()).await;
                return Err(error.into());
            }
        };
        let len = u16::try_from(responded.reply.len())
            .map_err(|_| HandshakeError::MessageTooLong(responded.reply.len()))?;
        let mut out = Vec::with_capacity(4 + responded.reply.len());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&responded.reply);
        io.write_all(&out).await.map_err(HandshakeError::Io)?;
        Ok(established)
    };
    let remaining = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
    tokio::time::timeout(remaining, rest)
        .await
        .map_err(|_| HandshakeError::Timeout(HANDSHAKE_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{FrameType, Header, RouteId};
    use crate::transport::frame::{Frame, FrameError, FrameReader, FrameWriter};
    use dmsg::noise::{PqPolicy, PqStatus};
    use proptest::prelude::*;

    async fn pair(
        dialer_pq: PqSettings,
        listener_pq: PqSettings,
    ) -> (
        Result<Established, StcpHandshakeError>,
        Result<Established, StcpHandshakeError>,
    ) {
        let (dialer, listener) = (Keypair::generate(), Keypair::generate());
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let remote = listener.public();
        tokio::join!(
            async { dial(&mut a, &dialer, remote, &dialer_pq, false).await },
            async { accept(&mut b, &listener, &listener_pq).await },
        )
    }

    /// ROUTING.md §2.2: two PQ-capable ends complete hybrid and agree on each other's key.
    #[tokio::test]
    async fn two_visors_complete_hybrid() {
        let (dialed, accepted) = pair(PqSettings::default(), PqSettings::default()).await;
        let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        assert_eq!(dialed.pq(), PqStatus::Hybrid);
        assert_eq!(accepted.pq(), PqStatus::Hybrid);
        assert_ne!(dialed.remote(), accepted.remote());
    }

    /// ROUTING.md §2.2: a listener that requires PQ refuses a classical dialer before Noise;
    /// a dialer that requires PQ refuses a classical listener.
    #[tokio::test]
    async fn the_pq_policy_holds_on_both_ends() {
        let classical = PqSettings {
            enabled: false,
            ..PqSettings::default()
        };
        let require = PqSettings {
            policy: PqPolicy::Require,
            ..PqSettings::default()
        };
        let (dialed, accepted) = pair(classical.clone(), require.clone()).await;
        assert!(
            matches!(
                dialed,
                Err(StcpHandshakeError::Handshake(HandshakeError::Refused(
                    HandshakeRefusal::PqRequired
                )))
            ),
            "{dialed:?}"
        );
        assert!(accepted.is_err());
        assert_eq!(require.stats.snapshot().pq_refused, 1);

        let (dialed, _accepted) = pair(require.clone(), classical).await;
        assert!(
            matches!(
                dialed,
                Err(StcpHandshakeError::Handshake(
                    HandshakeError::PqRequired { .. }
                ))
            ),
            "{dialed:?}"
        );
    }

    /// ROUTING.md §2.2: a dialer that sends nothing is dropped after the first-message
    /// deadline.
    #[tokio::test(start_paused = true)]
    async fn a_silent_dialer_times_out_after_the_first_message_deadline() {
        let (_a, mut b) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let result = accept(&mut b, &Keypair::generate(), &PqSettings::default()).await;
        assert!(matches!(
            result,
            Err(StcpHandshakeError::Handshake(HandshakeError::Timeout(_)))
        ));
        assert_eq!(started.elapsed(), FIRST_MESSAGE_TIMEOUT);
    }

    /// Both ciphers of one direction of a fresh hybrid transport.
    async fn one_direction() -> (dmsg::noise::Aead, dmsg::noise::Aead) {
        let (dialed, accepted) = pair(PqSettings::default(), PqSettings::default()).await;
        let (send, _) = dialed.unwrap().into_ciphers();
        let (_, recv) = accepted.unwrap().into_ciphers();
        (send, recv)
    }

    /// Writes a DATA frame and a SIGN frame sealed with `send`; returns the raw bytes.
    async fn sealed_frames(send: dmsg::noise::Aead, record: &[u8], signature: &[u8]) -> Vec<u8> {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::new(a, Some(send));
        let route = RouteId::new(5).unwrap();
        let len = u16::try_from(record.len()).unwrap();
        writer
            .push(
                &Header::for_route(FrameType::Data, route, len),
                &bytes::Bytes::copy_from_slice(record),
            )
            .unwrap();
        writer
            .push(
                &Header::for_transport(FrameType::Sign, 72),
                &bytes::Bytes::copy_from_slice(signature),
            )
            .unwrap();
        writer.flush().await.unwrap();
        let mut raw = vec![0u8; 8 + record.len() + 16 + 8 + 72 + 16];
        b.read_exact(&mut raw).await.unwrap();
        raw
    }

    async fn read_all(raw: &[u8], recv: dmsg::noise::Aead) -> Vec<Result<Frame, FrameError>> {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tx.write_all(raw).await.unwrap();
        drop(tx);
        let mut reader = FrameReader::new(rx, Some(recv));
        let mut out = Vec::new();
        loop {
            match reader.read().await {
                Ok(None) => return out,
                Ok(Some(frame)) => out.push(Ok(frame)),
                Err(error) => {
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }

    /// ROUTING.md §3.3: after the handshake, frames cross sealed: DATA bodies in the clear
    /// with the header authenticated, control bodies encrypted; a flipped bit anywhere but a
    /// DATA body (which its own end-to-end record protects) is refused.
    #[tokio::test]
    async fn frames_are_sealed_per_hop_and_tampering_is_refused() {
        let record = vec![0xAB; 100];
        let signature = [0x55; crate::packet::SIGN_BODY_LEN];
        let (send, recv) = one_direction().await;
        let raw = sealed_frames(send, &record, &signature).await;
        assert_eq!(&raw[8..108], &record[..], "DATA bodies travel as they are");
        assert_ne!(
            &raw[132..204],
            &signature[..],
            "control bodies are encrypted"
        );
        let frames = read_all(&raw, recv).await;
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].as_ref().unwrap().body, record);
        assert_eq!(frames[1].as_ref().unwrap().body, &signature[..]);

        for (what, at) in [
            ("a DATA header", 3),
            ("a DATA tag", 110),
            ("a SIGN body", 140),
        ] {
            let (send, recv) = one_direction().await;
            let mut raw = sealed_frames(send, &record, &signature).await;
            raw[at] ^= 1;
            let frames = read_all(&raw, recv).await;
            assert!(
                frames
                    .iter()
                    .any(|f| matches!(f, Err(FrameError::Authentication))),
                "{what}: {frames:?}"
            );
        }
    }

    proptest! {
        /// Arbitrary hello bytes never panic and never declare more than 4096 bytes.
        #[test]
        fn arbitrary_hellos_never_panic_or_overstate(bytes in any::<[u8; HELLO_LEN]>()) {
            if let Ok(hello) = Hello::decode(&bytes) {
                prop_assert!(hello.message_len <= MAX_HANDSHAKE_MESSAGE);
                prop_assert_eq!(hello.encode(), bytes);
            }
        }

        /// A valid hello with one byte changed decodes canonically or fails.
        #[test]
        fn mutated_hellos_decode_canonically_or_fail(at in 0usize..HELLO_LEN, byte in any::<u8>()) {
            let hello = Hello {
                mode: Mode::Hybrid,
                dialer: Keypair::from_seed(&[7; 32]).public(),
                message_len: 1300,
            };
            let mut bytes = hello.encode();
            bytes[at] = byte;
            if let Ok(decoded) = Hello::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
