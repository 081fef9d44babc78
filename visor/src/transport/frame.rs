//! Frames over a byte stream (ROUTING.md §3): a reader that checks each header before it
//! allocates the body, and a writer that batches frames; both seal per hop on `stcp`
//! (ROUTING.md §3.3) and pass frames as they are on `dmsg`.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use dmsg::noise::Aead;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::packet::{HEADER_LEN, Header, HeaderError, TAG_LEN, check_header};

/// A frame: its checked header and its body (plaintext for control frames; the end-to-end
/// record, as it travels, for DATA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body, still in the read buffer's allocation (a route group opens it in place).
    pub body: BytesMut,
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

/// Bytes a reader asks the connection for at once.
pub const READ_CHUNK: usize = 256 * 1024;

/// Reads frames from `io`, opening them with `open` when the transport is sealed.
///
/// It reads in large chunks into one buffer and splits each frame off it without copying,
/// so a frame costs no syscall of its own and its body shares the chunk's allocation.
pub struct FrameReader<R> {
    io: R,
    open: Option<Aead>,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io`; `open` is the receive cipher of a sealed (stcp) transport.
    pub fn new(io: R, open: Option<Aead>) -> Self {
        Self {
            io,
            open,
            buf: BytesMut::new(),
        }
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    async fn fill(&mut self, want: usize) -> Result<bool, FrameError> {
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want.max(READ_CHUNK));
        }
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }

    /// The next frame; `None` when the stream ends cleanly between frames.
    pub async fn read(&mut self) -> Result<Option<Frame>, FrameError> {
        while self.buf.len() < HEADER_LEN {
            if !self.fill(HEADER_LEN - self.buf.len()).await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&self.buf[..HEADER_LEN]);
        // Checked before anything waits for or reserves room for the body.
        let header = check_header(&head)?;
        let len = usize::from(header.body_len);
        let tag = if self.open.is_some() { TAG_LEN } else { 0 };
        let total = HEADER_LEN + len + tag;
        while self.buf.len() < total {
            if !self.fill(total - self.buf.len()).await? {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let mut frame = self.buf.split_to(total);
        let mut body = frame.split_off(HEADER_LEN);
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
        Ok(Some(Frame { header, body }))
    }
}

/// Writes frames to `io`, sealing them with `seal` when the transport is sealed. Frames are
/// collected by [`FrameWriter::push`] and written by [`FrameWriter::flush`] with vectored
/// writes: a DATA body is written from its own buffer, never copied into another one.
pub struct FrameWriter<W> {
    io: W,
    seal: Option<Aead>,
    /// What to write, in order: runs of small bytes (headers, tags, control frames) and
    /// DATA bodies.
    parts: VecDeque<Bytes>,
    /// Small bytes not yet cut into a part.
    small: BytesMut,
    /// Bytes collected and not yet written.
    queued: usize,
}

/// Bytes a writer collects before [`FrameWriter::push`] asks for a flush.
pub const WRITE_BATCH: usize = 256 * 1024;

/// Parts one vectored write passes at most.
const MAX_IOVECS: usize = 64;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `io`; `seal` is the send cipher of a sealed (stcp) transport.
    pub fn new(io: W, seal: Option<Aead>) -> Self {
        Self {
            io,
            seal,
            parts: VecDeque::new(),
            small: BytesMut::with_capacity(4096),
            queued: 0,
        }
    }

    /// Appends a frame. `body` must be within the header's bounds (the caller built the
    /// header from it). Returns whether enough is collected to flush.
    pub fn push(&mut self, header: &Header, body: &Bytes) -> Result<bool, FrameError> {
        let head = header.encode();
        self.small.extend_from_slice(&head);
        let sealed_body = header.kind.sealed_body();
        if sealed_body || self.seal.is_none() && body.len() < 256 {
            // Control frames are small: copied, and encrypted in place when sealed.
            let start = self.small.len();
            self.small.extend_from_slice(body);
            if let Some(seal) = &mut self.seal {
                let tag = seal
                    .seal(&head, &mut self.small[start..])
                    .map_err(|_| FrameError::Authentication)?;
                self.small.extend_from_slice(&tag);
            }
        } else {
            self.parts.push_back(self.small.split().freeze());
            self.parts.push_back(body.clone());
            if let Some(seal) = &mut self.seal {
                let tag = seal
                    .seal(&head, &mut [])
                    .map_err(|_| FrameError::Authentication)?;
                self.small.extend_from_slice(&tag);
            }
        }
        self.queued += HEADER_LEN + body.len() + self.seal.as_ref().map_or(0, |_| TAG_LEN);
        Ok(self.queued >= WRITE_BATCH)
    }

    /// Writes everything collected.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.small.is_empty() {
            self.parts.push_back(self.small.split().freeze());
        }
        while !self.parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .parts
                .iter()
                .take(MAX_IOVECS)
                .map(|part| IoSlice::new(part))
                .collect();
            let mut written = self.io.write_vectored(&slices).await?;
            drop(slices);
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(front) = self.parts.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.parts.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        self.queued = 0;
        self.io.flush().await
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}
