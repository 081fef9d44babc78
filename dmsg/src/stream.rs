//! Stream handles: [`RawStream`] moves DATA bodies as they are (what a relay needs),
//! [`PlainStream`] reads and writes them as bytes (over an already encrypted carrier), and
//! [`DmsgStream`] is an end-to-end encrypted byte stream over one (PROTOCOL.md §6.3).
//!
//! Each DATA body of a `DmsgStream` is one ChaCha20-Poly1305 record under the stream's `KK`
//! keys, with the FIN flag as associated data: a relay can neither read the stream nor end
//! it early (a forged FIN fails to authenticate).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::addr::DmsgAddr;
use crate::mux::StreamError;
use crate::noise::{Aead, Established, PqStatus};
use crate::port::PortGuard;
use crate::session::Session;
use crate::wire::{Code, MAX_DATA_BODY, MAX_RECORD_PLAINTEXT, TAG_LEN};

/// Plaintext one `poll_write` call seals at most (several records).
const MAX_WRITE_BATCH: usize = 512 * 1024;

/// Associated data of a record that does not end the stream.
const AD_DATA: &[u8] = &[0];
/// Associated data of the record that ends the stream.
const AD_FIN: &[u8] = &[1];

/// A stream of DATA bodies, carried as they are. Dropping it after this end finished
/// sending loses nothing (the peer still gets every body and the FIN, PROTOCOL.md §6.2);
/// dropping it before aborts the stream with a reset.
#[derive(Debug)]
pub struct RawStream {
    session: Session,
    id: u32,
    /// Send credit taken and not yet spent.
    reserved: usize,
}

impl RawStream {
    pub(crate) fn new(session: Session, id: u32) -> Self {
        Self {
            session,
            id,
            reserved: 0,
        }
    }

    /// The session carrying the stream.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next DATA body and whether it carried FIN; `Ok(None)` after the FIN was taken.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(Bytes, bool)>, StreamError>> {
        self.session.poll_recv(cx, self.id)
    }

    /// Waits for the next DATA body (see [`RawStream::poll_recv`]).
    pub async fn recv(&mut self) -> Result<Option<(Bytes, bool)>, StreamError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Waits until at least `min` bytes of send credit (up to `max`, within one frame) are
    /// reserved for this stream; returns the reservation. Other streams of the session cannot
    /// spend it; [`RawStream::send`] spends it.
    pub fn poll_reserve(
        &mut self,
        cx: &mut Context<'_>,
        min: usize,
        max: usize,
    ) -> Poll<Result<usize, StreamError>> {
        if self.reserved >= min.max(1) {
            return Poll::Ready(Ok(self.reserved));
        }
        let held = std::mem::take(&mut self.reserved);
        let id = self.id;
        if held > 0 {
            self.session.with_mux(|mux| mux.unreserve(id, held));
        }
        let reserved = ready!(self.session.poll_reserve(cx, id, min, max))?;
        self.reserved = reserved;
        Poll::Ready(Ok(reserved))
    }

    /// Sends one DATA body against the reservation (no longer than it); `fin` finishes this
    /// direction. The unused credit goes back to the session.
    pub fn send(&mut self, body: &[u8], fin: bool) -> Result<(), StreamError> {
        let id = self.id;
        let reserved = std::mem::take(&mut self.reserved);
        self.session
            .with_mux(|mux| mux.send_reserved(id, reserved, body, fin))
    }

    /// Sends one DATA body of `len` bytes that `fill` appends to the session's output in
    /// place (against the reservation, as [`RawStream::send`]).
    pub(crate) fn send_with(
        &mut self,
        len: usize,
        fin: bool,
        fill: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Result<(), StreamError> {
        let id = self.id;
        let reserved = std::mem::take(&mut self.reserved);
        self.session
            .with_mux(|mux| mux.send_reserved_with(id, reserved, len, fin, fill))
    }

    /// Sends `body` (at most one frame) once the stream has credit for it, in one step.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        body: &[u8],
        fin: bool,
    ) -> Poll<Result<(), StreamError>> {
        if self.reserved > 0 {
            return Poll::Ready(self.send(body, fin));
        }
        self.session.poll_send(cx, self.id, body, fin)
    }

    /// Waits for credit, then sends `body` (at most one frame).
    pub async fn send_all(&mut self, body: &[u8], fin: bool) -> Result<(), StreamError> {
        poll_fn(|cx| self.poll_reserve(cx, body.len(), body.len())).await?;
        self.send(body, fin)
    }

    /// Stops reading: the peer is told to send no more; sending is not affected.
    pub fn stop(&mut self, code: Code) {
        let id = self.id;
        self.session.with_mux(|mux| mux.stop_stream(id, code));
    }

    /// Resolves once the peer stopped reading (its STOP); returns its code.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Code> {
        self.session.poll_stopped(cx, self.id)
    }

    /// Aborts the stream with `code`.
    pub fn reset(self, code: Code) {
        let id = self.id;
        self.session.with_mux(|mux| mux.reset_stream(id, code));
    }
}

impl Drop for RawStream {
    fn drop(&mut self) {
        self.session.release(self.id, self.reserved);
    }
}

/// An end-to-end encrypted stream between two dmsg addresses. Reads and writes plaintext.
pub struct DmsgStream {
    raw: RawStream,
    send: Aead,
    recv: Aead,
    local: DmsgAddr,
    remote: DmsgAddr,
    pq: PqStatus,
    /// Decrypted bytes not yet returned to the reader.
    pending: Bytes,
    read_eof: bool,
    write_closed: bool,
    _port: Option<PortGuard>,
}

impl std::fmt::Debug for DmsgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmsgStream")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("pq", &self.pq)
            .finish_non_exhaustive()
    }
}

fn io_error(error: StreamError) -> io::Error {
    let kind = match error {
        StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
        StreamError::SessionClosed(_) => io::ErrorKind::ConnectionAborted,
        StreamError::Finished | StreamError::Stopped(_) => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

impl DmsgStream {
    pub(crate) fn new(
        raw: RawStream,
        established: Established,
        local: DmsgAddr,
        remote: DmsgAddr,
        port: Option<PortGuard>,
    ) -> Self {
        let pq = established.pq();
        let (send, recv) = established.into_ciphers();
        Self {
            raw,
            send,
            recv,
            local,
            remote,
            pq,
            pending: Bytes::new(),
            read_eof: false,
            write_closed: false,
            _port: port,
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> DmsgAddr {
        self.local
    }

    /// The other end's address.
    pub fn remote_addr(&self) -> DmsgAddr {
        self.remote
    }

    /// Whether the stream's end-to-end handshake was hybrid.
    pub fn pq(&self) -> PqStatus {
        self.pq
    }

    /// The session (to a relay server) that carries the stream.
    pub fn session(&self) -> &Session {
        self.raw.session()
    }

    /// The raw stream underneath (tests forge records with it).
    #[cfg(test)]
    pub(crate) fn raw_mut(&mut self) -> &mut RawStream {
        &mut self.raw
    }

    /// Decrypts one record; a record that fails authentication resets the stream.
    fn open_record(&mut self, body: Bytes, fin: bool) -> io::Result<Bytes> {
        let mut record = BytesMut::from(&body[..]);
        let ad = if fin { AD_FIN } else { AD_DATA };
        match self.recv.open(ad, &mut record) {
            Ok(plain) => {
                let len = plain.len();
                record.truncate(len);
                Ok(record.freeze())
            }
            Err(_) => Err(self.bad_record()),
        }
    }

    /// Seals `plain` as one record, in place in the session's output, and sends it.
    fn send_record(&mut self, plain: &[u8], fin: bool) -> io::Result<()> {
        let ad = if fin { AD_FIN } else { AD_DATA };
        let send = &mut self.send;
        self.raw
            .send_with(plain.len() + TAG_LEN, fin, |out| {
                let start = out.len();
                out.extend_from_slice(plain);
                match send.seal(ad, &mut out[start..]) {
                    Ok(tag) => {
                        out.extend_from_slice(&tag);
                        true
                    }
                    Err(_) => false,
                }
            })
            .map_err(io_error)
    }

    /// Decrypts one record straight into `buf` when it fits; returns false if it does not.
    fn open_into(&mut self, body: &[u8], fin: bool, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        if buf.remaining() < body.len() {
            return Ok(false);
        }
        let ad = if fin { AD_FIN } else { AD_DATA };
        let room = buf.initialize_unfilled_to(body.len());
        room.copy_from_slice(body);
        match self.recv.open(ad, room) {
            Ok(plain) => {
                let len = plain.len();
                buf.advance(len);
                Ok(true)
            }
            Err(_) => Err(self.bad_record()),
        }
    }

    /// Resets the stream after a record failed to authenticate; returns the error to report.
    fn bad_record(&mut self) -> io::Error {
        let id = self.raw.id;
        self.raw
            .session
            .with_mux(|mux| mux.reset_stream(id, Code::BadRecord));
        io::Error::new(
            io::ErrorKind::InvalidData,
            "end-to-end record failed to authenticate (tampered, truncated or forged)",
        )
    }
}

impl AsyncRead for DmsgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.raw.poll_recv(cx)).map_err(io_error)? {
                None => {
                    this.read_eof = true;
                }
                Some((body, fin)) => {
                    this.read_eof = fin;
                    if this.open_into(&body, fin, buf)? {
                        return Poll::Ready(Ok(()));
                    }
                    this.pending = this.open_record(body, fin)?;
                }
            }
        }
    }
}

impl AsyncWrite for DmsgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Seal as many records as the credit allows in one call, so the session driver
        // writes them to the socket in one batch.
        let mut written = 0;
        while written < buf.len() && written < MAX_WRITE_BATCH {
            let rest = &buf[written..];
            let want = rest.len().min(MAX_RECORD_PLAINTEXT) + TAG_LEN;
            let reserved = match this.raw.poll_reserve(cx, TAG_LEN + 1, want) {
                Poll::Ready(Ok(reserved)) => reserved,
                Poll::Ready(Err(error)) if written == 0 => {
                    return Poll::Ready(Err(io_error(error)));
                }
                Poll::Pending if written == 0 => return Poll::Pending,
                // Report what was written; the error or the wait comes with the next call.
                Poll::Ready(Err(_)) | Poll::Pending => break,
            };
            let n = rest.len().min(reserved - TAG_LEN).min(MAX_RECORD_PLAINTEXT);
            this.send_record(&rest[..n], false)?;
            written += n;
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Records are handed to the session driver as they are written; it writes them out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        match ready!(this.raw.poll_reserve(cx, TAG_LEN, TAG_LEN)) {
            Ok(_) => this.send_record(&[], true)?,
            // The peer stopped reading: this direction is over either way.
            Err(StreamError::Stopped(_)) => {}
            Err(error) => return Poll::Ready(Err(io_error(error))),
        }
        this.write_closed = true;
        Poll::Ready(Ok(()))
    }
}

/// A [`RawStream`] as a byte stream, DATA bodies carried as they are (no record layer): for
/// a session over a byte stream that is already end-to-end encrypted, such as a visor's
/// route group. FIN is the half-close.
#[derive(Debug)]
pub struct PlainStream {
    raw: RawStream,
    pending: Bytes,
    read_eof: bool,
    write_closed: bool,
}

impl PlainStream {
    /// Reads and writes `raw`'s bodies.
    pub fn new(raw: RawStream) -> Self {
        Self {
            raw,
            pending: Bytes::new(),
            read_eof: false,
            write_closed: false,
        }
    }
}

impl AsyncRead for PlainStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.raw.poll_recv(cx)).map_err(io_error)? {
                None => this.read_eof = true,
                Some((body, fin)) => {
                    this.read_eof = fin;
                    this.pending = body;
                }
            }
        }
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_DATA_BODY);
        let reserved = ready!(this.raw.poll_reserve(cx, 1, want)).map_err(io_error)?;
        let n = want.min(reserved);
        this.raw.send(&buf[..n], false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bodies go to the session driver as they are written; it writes them out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        match ready!(this.raw.poll_reserve(cx, 1, 1)) {
            Ok(_) => this.raw.send(&[], true).map_err(io_error)?,
            // The peer stopped reading: this direction is over either way.
            Err(StreamError::Stopped(_)) => {}
            Err(error) => return Poll::Ready(Err(io_error(error))),
        }
        this.write_closed = true;
        Poll::Ready(Ok(()))
    }
}
