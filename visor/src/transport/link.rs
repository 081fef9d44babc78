//! The two tasks of one transport: a writer that drains the outgoing queue in batches, and a
//! reader that hands each frame to the node. Either ending closes the transport; the reader
//! reports the close once.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Transport;
use super::frame::{Frame, FrameError, FrameReader, FrameWriter};
use super::queue::OutFrame;

/// How long a closing transport may still write what it had queued (a BYE, say).
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// What receives a transport's frames.
pub trait FrameSink: Send + Sync + 'static {
    /// A frame arrived on `transport`.
    fn on_frame(&self, transport: &Arc<Transport>, frame: Frame);
    /// `transport` closed; called once, after its last frame.
    fn on_closed(&self, transport: &Arc<Transport>);
}

/// Writes what is queued on `transport` until it closes (then for at most
/// [`CLOSE_LINGER`] more), then shuts the write side down.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    transport: Arc<Transport>,
    mut writer: FrameWriter<W>,
) {
    let work = async {
        let mut batch: Vec<OutFrame> = Vec::new();
        while transport.queue.take_all(&mut batch).await {
            let mut written = 0;
            for frame in batch.drain(..) {
                written += crate::packet::HEADER_LEN + frame.body.len();
                let full = match writer.push(&frame.header, &frame.body) {
                    Ok(full) => full,
                    Err(error) => {
                        transport.close(format!("sealing failed: {error}"));
                        return;
                    }
                };
                if full && let Err(error) = writer.flush().await {
                    transport.close(format!("write failed: {error}"));
                    return;
                }
            }
            if let Err(error) = writer.flush().await {
                transport.close(format!("write failed: {error}"));
                return;
            }
            transport.count_sent(written);
        }
        let _ = writer.shutdown().await;
    };
    let linger = async {
        transport.closed.cancelled().await;
        tokio::time::sleep(CLOSE_LINGER).await;
    };
    tokio::select! {
        () = work => {}
        () = linger => {}
    }
}

/// Reads frames from `reader` into `sink` until the transport closes or the stream ends,
/// then closes the transport and tells the sink.
pub async fn run_reader<R: AsyncRead + Unpin>(
    transport: Arc<Transport>,
    mut reader: FrameReader<R>,
    sink: Arc<dyn FrameSink>,
) {
    loop {
        let read = tokio::select! {
            () = transport.closed.cancelled() => break,
            read = reader.read() => read,
        };
        match read {
            Ok(Some(frame)) => {
                transport.count_received(crate::packet::HEADER_LEN + frame.body.len());
                sink.on_frame(&transport, frame);
            }
            Ok(None) => {
                transport.close("the peer closed the connection");
                break;
            }
            Err(error) => {
                // A frame that broke ROUTING.md §3 is answered with BYE before the close.
                if matches!(error, FrameError::Header(_) | FrameError::Authentication) {
                    let _ = transport.send(super::bye(crate::packet::ByeCode::ProtocolViolation));
                }
                transport.close(error.to_string());
                break;
            }
        }
    }
    sink.on_closed(&transport);
}
