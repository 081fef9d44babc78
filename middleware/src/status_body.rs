//! A response body that a layer can end early with a gRPC status in its trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Wraps a response body so a layer can cut it short: [`StatusBody::end_with`] yields a
    /// trailers frame carrying a status, and the body yields nothing after it.
    pub(crate) struct StatusBody<B> {
        #[pin]
        inner: B,
        ended: bool,
    }
}

impl<B> StatusBody<B> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            ended: false,
        }
    }

    /// Ends the body: returns the trailers frame carrying `status`; later polls yield `None`.
    pub(crate) fn end_with<D>(self: Pin<&mut Self>, status: &tonic::Status) -> Frame<D> {
        *self.project().ended = true;
        let mut trailers = HeaderMap::new();
        // A status built from a plain message always encodes.
        let _ = status.add_header(&mut trailers);
        Frame::trailers(trailers)
    }
}

impl<B: Default> Default for StatusBody<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B: Body> Body for StatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}
