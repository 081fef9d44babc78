//! Frames over a byte stream (ROUTING.md §3): a reader that checks each header before it
//! allocates the body, and a writer that batches frames; both seal per hop on `stcp`
//! (ROUTING.md §3.3) and pass frames as they are on `dmsg`.

use bytes::{Bytes, BytesMut};
use dmsg::noise::Aead;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::packet::{HEADER_LEN, Header, HeaderError, TAG_LEN, check_header};

/// A frame: its checked header and its body (plaintext for control frames; the end-to-end
/// record, as it travels, for DATA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body.
    pub body: Bytes,
}

/// Why reading a frame failed (each closes the transport).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header broke ROUTING.md §3.1.
    #[error("bad frame header: {0}")]
    Header(#[from] HeaderError),
    /// The hop tag did not verify: altered, reordered or forged.
    #[error("a frame failed authentication")]
    Authentication,
    /// The connection failed or ended inside a frame.
    #[error("transport connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from `io`, opening them with `open` when the transport is sealed.
pub struct FrameReader<R> {
    io: R,
    open: Option<Aead>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io`; `open` is the receive cipher of a sealed (stcp) transport.
    pub fn new(io: R, open: Option<Aead>) -> Self {
        Self { io, open }
    }

    /// The next frame; `None` when the stream ends cleanly between frames.
    pub async fn read(&mut self) -> Result<Option<Frame>, FrameError> {
        let mut head = [0u8; HEADER_LEN];
        match self.io.read(&mut head[..1]).await? {
            0 => return Ok(None),
            _ => self.io.read_exact(&mut head[1..]).await?,
        };
        let header = check_header(&head)?;
        let len = usize::from(header.body_len);
        let tag = if self.open.is_some() { TAG_LEN } else { 0 };
        // Bounded by the checked header: at most 65 535 + 16 bytes.
        let mut body = BytesMut::zeroed(len + tag);
        self.io.read_exact(&mut body).await?;
        if let Some(open) = &mut self.open {
            if header.kind.sealed_body() {
                let plain = open
                    .open(&head, &mut body)
                    .map_err(|_| FrameError::Authentication)?
                    .len();
                body.truncate(plain);
            } else {
                let mut tag = body.split_off(len);
                open.open(&head, &mut tag)
                    .map_err(|_| FrameError::Authentication)?;
            }
        }
        Ok(Some(Frame {
            header,
            body: body.freeze(),
        }))
    }
}

/// Writes frames to `io`, sealing them with `seal` when the transport is sealed. Frames are
/// buffered by [`FrameWriter::push`] and written by [`FrameWriter::flush`], so a batch costs
/// one write.
pub struct FrameWriter<W> {
    io: W,
    seal: Option<Aead>,
    buf: Vec<u8>,
}

/// Bytes a writer buffers before [`FrameWriter::push`] asks for a flush.
pub const WRITE_BATCH: usize = 256 * 1024;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `io`; `seal` is the send cipher of a sealed (stcp) transport.
    pub fn new(io: W, seal: Option<Aead>) -> Self {
        Self {
            io,
            seal,
            buf: Vec::with_capacity(WRITE_BATCH + crate::packet::MAX_PACKET),
        }
    }

    /// Appends a frame to the batch. `body` must be within the header's bounds (the caller
    /// built the header from it). Returns whether the batch is big enough to flush.
    pub fn push(&mut self, header: &Header, body: &[u8]) -> Result<bool, FrameError> {
        let head = header.encode();
        self.buf.extend_from_slice(&head);
        let start = self.buf.len();
        self.buf.extend_from_slice(body);
        if let Some(seal) = &mut self.seal {
            let tag = if header.kind.sealed_body() {
                seal.seal(&head, &mut self.buf[start..])
            } else {
                seal.seal(&head, &mut [])
            }
            .map_err(|_| FrameError::Authentication)?;
            self.buf.extend_from_slice(&tag);
        }
        Ok(self.buf.len() >= WRITE_BATCH)
    }

    /// Writes the batch out.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.io.flush().await
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}
