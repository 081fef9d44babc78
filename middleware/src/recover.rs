//! Turns service errors into gRPC status responses, so the layers above see a real status.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

/// Layer that answers errors of the service below with a gRPC status response.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoverErrorLayer;

impl<S> Layer<S> for RecoverErrorLayer {
    type Service = RecoverError<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecoverError {
            inner,
            not_ready: None,
        }
    }
}

/// A service whose errors become gRPC statuses; see [`error_status`] for the mapping.
#[derive(Debug)]
pub struct RecoverError<S> {
    inner: S,
    /// A readiness error, answered by the next `call` without calling the inner service.
    not_ready: Option<tonic::Status>,
}

impl<S: Clone> Clone for RecoverError<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

/// The status for an error from a server-side layer.
///
/// A load-shed refusal becomes RESOURCE_EXHAUSTED with advice; a `tonic::Status` anywhere in
/// the chain is kept; anything else is classified by `tonic::Status::from_error`.
pub fn error_status(error: BoxError) -> tonic::Status {
    if error.is::<tower::load_shed::error::Overloaded>() {
        return tonic::Status::resource_exhausted(
            "server is at its limit of concurrent requests; retry with backoff",
        );
    }
    tonic::Status::from_error(error)
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RecoverError<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = std::convert::Infallible;
    type Future = RecoverErrorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                self.not_ready = Some(error_status(error.into()));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.not_ready.take() {
            Some(status) => RecoverErrorFuture {
                state: RecoverErrorState::Failed {
                    status: Some(status),
                },
            },
            None => RecoverErrorFuture {
                state: RecoverErrorState::Called {
                    future: self.inner.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`RecoverError`].
    pub struct RecoverErrorFuture<F> {
        #[pin]
        state: RecoverErrorState<F>,
    }
}

pin_project! {
    #[project = RecoverErrorProj]
    enum RecoverErrorState<F> {
        /// The inner service is answering.
        Called {
            #[pin]
            future: F,
        },
        /// The inner service could not take the call.
        Failed {
            status: Option<tonic::Status>,
        },
    }
}

impl<F, ResBody, E> Future for RecoverErrorFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Default,
{
    type Output = Result<http::Response<ResBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let status = match self.project().state.project() {
            RecoverErrorProj::Called { future } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => return Poll::Ready(Ok(response)),
                Err(error) => error_status(error.into()),
            },
            RecoverErrorProj::Failed { status } => status
                .take()
                .unwrap_or_else(|| tonic::Status::internal("polled after completion")),
        };
        Poll::Ready(Ok(status.into_http()))
    }
}
