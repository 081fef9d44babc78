//! Ends open response streams at shutdown: once the endpoint stops, a response body that is
//! waiting for its next message (a health `Watch`, a long server stream) ends at once with
//! UNAVAILABLE "the server is shutting down", so the caller reconnects elsewhere and the
//! drain is not held up by streams that never end by themselves. Calls whose answer is on its
//! way are untouched and finish within the grace period.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_layer::Layer;
use tower_service::Service;

/// The `grpc-message` of a stream ended by shutdown (percent-encoded, as on the wire:
/// "the server is shutting down").
const SHUTTING_DOWN: &str = "the%20server%20is%20shutting%20down";

/// Layer wrapping every response body in an [`EndingBody`].
#[derive(Clone, Debug)]
pub struct EndStreamsLayer {
    stop: CancellationToken,
}

impl EndStreamsLayer {
    /// Ends open streams once `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self { stop }
    }
}

impl<S> Layer<S> for EndStreamsLayer {
    type Service = EndStreams<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EndStreams {
            inner,
            stop: self.stop.clone(),
        }
    }
}

/// A service whose response streams end at shutdown; see the module docs.
#[derive(Clone, Debug)]
pub struct EndStreams<S> {
    inner: S,
    stop: CancellationToken,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for EndStreams<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<EndingBody<ResBody>>;
    type Error = S::Error;
    type Future = EndStreamsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        EndStreamsFuture {
            inner: self.inner.call(request),
            stop: Some(self.stop.clone()),
        }
    }
}

pin_project! {
    /// Response future of [`EndStreams`].
    pub struct EndStreamsFuture<F> {
        #[pin]
        inner: F,
        stop: Option<CancellationToken>,
    }
}

impl<F, B, E> std::future::Future for EndStreamsFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<EndingBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let stop = this.stop.take().unwrap_or_default();
        Poll::Ready(Ok(response.map(|inner| EndingBody {
            inner,
            stopped: stop.cancelled_owned(),
            ended: false,
        })))
    }
}

pin_project! {
    /// A response body that ends with UNAVAILABLE trailers when shutdown finds it waiting.
    pub struct EndingBody<B> {
        #[pin]
        inner: B,
        #[pin]
        stopped: WaitForCancellationFutureOwned,
        ended: bool,
    }
}

impl<B: Default> Default for EndingBody<B> {
    /// An empty body that shutdown never ends (tonic's placeholder for failed requests).
    fn default() -> Self {
        Self {
            inner: B::default(),
            stopped: CancellationToken::new().cancelled_owned(),
            ended: false,
        }
    }
}

impl<B: Body> Body for EndingBody<B> {
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
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if this.stopped.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.ended = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    http::HeaderValue::from_static(SHUTTING_DOWN),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
