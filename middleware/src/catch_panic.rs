//! Turns a panic in a gRPC handler into an INTERNAL status for that one call.
//!
//! A panic can happen in three places, and each is caught: while the service builds its
//! response future (`call`), while that future runs (a unary handler), and while the response
//! body is polled (a server stream producing its items). The first two answer with a
//! trailers-only INTERNAL response; the third ends the stream with INTERNAL trailers — not the
//! CANCELLED / protocol error an unguarded panic would give. Other calls, including those on
//! the same HTTP/2 connection, are not affected.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::status_body::StatusBody;

/// Layer that recovers from handler panics; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// A service whose panics become INTERNAL statuses.
#[derive(Clone, Copy, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

/// The status a caught panic answers with.
fn panic_status(payload: &(dyn Any + Send), path: &str) -> tonic::Status {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(%path, panic = %message, "handler panicked; answering INTERNAL");
    tonic::Status::internal(format!("handler for {path} panicked: {message}"))
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CatchPanic<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<CatchPanicBody<ResBody>>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path: Arc<str> = request.uri().path().into();
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => CatchPanicFuture {
                state: CatchPanicState::Running { future, path },
            },
            Err(payload) => CatchPanicFuture {
                state: CatchPanicState::Panicked {
                    status: Some(panic_status(&*payload, &path)),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`CatchPanic`].
    pub struct CatchPanicFuture<F> {
        #[pin]
        state: CatchPanicState<F>,
    }
}

pin_project! {
    #[project = CatchPanicFutureProj]
    enum CatchPanicState<F> {
        /// The handler is running.
        Running {
            #[pin]
            future: F,
            path: Arc<str>,
        },
        /// The handler panicked while building its future.
        Panicked {
            status: Option<tonic::Status>,
        },
    }
}

impl<F, ResBody, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<http::Response<CatchPanicBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            CatchPanicFutureProj::Running { future, path } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(result.map(|response| {
                        response.map(|inner| CatchPanicBody {
                            body: StatusBody::new(inner),
                            path: path.clone(),
                        })
                    })),
                    Err(payload) => Poll::Ready(Ok(panic_status(&*payload, path).into_http())),
                }
            }
            CatchPanicFutureProj::Panicked { status } => Poll::Ready(Ok(status
                .take()
                .unwrap_or_else(|| tonic::Status::internal("polled after completion"))
                .into_http())),
        }
    }
}

pin_project! {
    /// A response body whose panics end the stream with INTERNAL trailers.
    pub struct CatchPanicBody<B> {
        #[pin]
        body: StatusBody<B>,
        path: Arc<str>,
    }
}

impl<B: Default> Default for CatchPanicBody<B> {
    fn default() -> Self {
        Self {
            body: StatusBody::default(),
            path: "".into(),
        }
    }
}

impl<B: Body> Body for CatchPanicBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut body = this.body;
        match catch_unwind(AssertUnwindSafe(|| body.as_mut().poll_frame(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                let status = panic_status(&*payload, this.path);
                Poll::Ready(Some(Ok(body.end_with(&status))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
