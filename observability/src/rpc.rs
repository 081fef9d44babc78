//! The real outcome of one gRPC call, learned where it is actually known.
//!
//! A unary or streaming gRPC response carries its status either in the response headers (a
//! "trailers-only" response, used for errors before any message) or in the trailers after the
//! last message. [`observe_response`] wraps a response so a [`OnOutcome`] hook hears the outcome
//! exactly once: from the headers, from the trailers, from a body error, or — if the body is
//! dropped before its end — as [`RpcOutcome::Cancelled`]. Tracing spans and circuit breakers
//! both use it, so "the outcome is recorded at the real result" is implemented once.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;

/// How one RPC ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcOutcome {
    /// The call ended with this gRPC status code (from the headers or the trailers).
    Status(Code),
    /// The HTTP response was not a gRPC response: a non-200 status without `grpc-status`.
    Http(http::StatusCode),
    /// The transport failed: the service returned an error, or the body broke mid-way.
    Transport,
    /// The body ended without any `grpc-status` (a broken or non-gRPC peer).
    MissingStatus,
    /// The response or its body was dropped before the result was known: the caller gave up.
    Cancelled,
}

impl RpcOutcome {
    /// The gRPC code a client would see for this outcome.
    pub fn code(&self) -> Code {
        match self {
            Self::Status(code) => *code,
            Self::Http(status) => http_to_grpc(*status),
            Self::Transport => Code::Unavailable,
            Self::MissingStatus => Code::Unknown,
            Self::Cancelled => Code::Cancelled,
        }
    }
}

/// The gRPC code for a non-gRPC HTTP status, per gRPC's "HTTP to gRPC status code mapping".
fn http_to_grpc(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The `grpc-status` code in a header map, if there is one.
pub fn grpc_status_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Splits a gRPC request path `/pkg.Service/Method` into `("pkg.Service", "Method")`.
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// Hears the outcome of one RPC, exactly once.
pub trait OnOutcome: Send + 'static {
    /// Called once with the outcome.
    fn on_outcome(self, outcome: RpcOutcome);
}

impl<F> OnOutcome for F
where
    F: FnOnce(RpcOutcome) + Send + 'static,
{
    fn on_outcome(self, outcome: RpcOutcome) {
        self(outcome)
    }
}

/// Wraps `response` so `hook` hears the call's real outcome.
///
/// A trailers-only response (status in the headers) or a non-200 HTTP status is reported at
/// once; otherwise the report comes when the body yields its trailers, fails, ends, or is
/// dropped.
pub fn observe_response<B, H: OnOutcome>(
    response: http::Response<B>,
    hook: H,
) -> http::Response<OutcomeBody<B, H>> {
    let immediate = match grpc_status_code(response.headers()) {
        Some(code) => Some(RpcOutcome::Status(code)),
        None if response.status() != http::StatusCode::OK => {
            Some(RpcOutcome::Http(response.status()))
        }
        None => None,
    };
    let hook = match immediate {
        Some(outcome) => {
            hook.on_outcome(outcome);
            None
        }
        None => Some(hook),
    };
    response.map(|inner| OutcomeBody { inner, hook })
}

pin_project! {
    /// A response body that reports the RPC's outcome to its hook when the result is known.
    /// Built by [`observe_response`].
    pub struct OutcomeBody<B, H: OnOutcome> {
        #[pin]
        inner: B,
        hook: Option<H>,
    }

    impl<B, H: OnOutcome> PinnedDrop for OutcomeBody<B, H> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(hook) = this.project().hook.take() {
                hook.on_outcome(RpcOutcome::Cancelled);
            }
        }
    }
}

impl<B: Default, H: OnOutcome> Default for OutcomeBody<B, H> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            hook: None,
        }
    }
}

impl<B: Body, H: OnOutcome> Body for OutcomeBody<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let outcome = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                grpc_status_code(trailers).map_or(RpcOutcome::MissingStatus, RpcOutcome::Status)
            }),
            Poll::Ready(Some(Err(_))) => Some(RpcOutcome::Transport),
            Poll::Ready(None) => Some(RpcOutcome::MissingStatus),
            Poll::Pending => None,
        };
        if let Some(outcome) = outcome
            && let Some(hook) = this.hook.take()
        {
            hook.on_outcome(outcome);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
