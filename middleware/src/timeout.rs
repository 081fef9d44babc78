//! Deadlines for every RPC, on servers and clients, mapped to DEADLINE_EXCEEDED.
//!
//! The effective deadline of a call is the smaller of the configured budget (per method, or
//! the default) and the caller's `grpc-timeout`. It covers the whole call — the response
//! headers and, for a stream, every message up to the trailers. The layer rewrites
//! `grpc-timeout` to the effective value so the layers below it and the next hop see the same
//! deadline. On expiry the caller gets DEADLINE_EXCEEDED: as a trailers-only response if no
//! response had started, or as trailers ending the stream — never INTERNAL or CANCELLED.
//!
//! On a tonic server, tonic itself also applies the caller's `grpc-timeout`, outside every
//! user layer, and answers CANCELLED "Timeout expired" when it fires. tonic polls the layers
//! inside it before its own timer, so this layer ends a call bound by the caller's deadline
//! a little early ([`caller_margin`]): it then fires first, and its DEADLINE_EXCEEDED reaches
//! the caller before the caller's own timer ends the call as CANCELLED (a moment before its
//! deadline, which it would not meet anyway).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::deadline;
use crate::status_body::StatusBody;

/// The most a call bound by its caller's deadline is ended early (see [`caller_margin`]).
pub const CALLER_DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// How much earlier than the caller's deadline `caller` a call bound by it is ended: a fifth
/// of it, at most [`CALLER_DEADLINE_MARGIN`] — room for the answer to travel back on a busy
/// machine, so the caller hears DEADLINE_EXCEEDED rather than its own timer (a 5 ms margin
/// lost that race on a loaded 2-core machine).
pub fn caller_margin(caller: Duration) -> Duration {
    (caller / 5).min(CALLER_DEADLINE_MARGIN)
}

/// Per-method time budgets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// Budget of a method not listed in [`TimeoutConfig::methods`].
    pub default: Duration,
    /// Budgets by gRPC path, `/pkg.Service/Method` (a long-lived stream gets a long budget).
    pub methods: HashMap<String, Duration>,
}

impl Default for TimeoutConfig {
    /// 30 s for every method.
    fn default() -> Self {
        Self::uniform(Duration::from_secs(30))
    }
}

impl TimeoutConfig {
    /// The same budget for every method.
    pub fn uniform(budget: Duration) -> Self {
        Self {
            default: budget,
            methods: HashMap::new(),
        }
    }

    /// Adds a budget for one method (`/pkg.Service/Method`).
    pub fn with_method(mut self, path: impl Into<String>, budget: Duration) -> Self {
        self.methods.insert(path.into(), budget);
        self
    }

    /// The budget of the method at `path`.
    pub fn budget(&self, path: &str) -> Duration {
        self.methods.get(path).copied().unwrap_or(self.default)
    }
}

/// Layer applying [`TimeoutConfig`] to every call.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    config: Arc<TimeoutConfig>,
}

impl TimeoutLayer {
    /// Applies `config`.
    pub fn new(config: TimeoutConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            config: self.config.clone(),
        }
    }
}

/// A service whose calls end with DEADLINE_EXCEEDED at their deadline.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    config: Arc<TimeoutConfig>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Timeout<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<TimeoutBody<ResBody>>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let budget = self.config.budget(&path);
        let (timeout, fire_after) = match deadline::grpc_timeout(request.headers()) {
            Some(caller) if caller <= budget => {
                (caller, caller.saturating_sub(caller_margin(caller)))
            }
            _ => (budget, budget),
        };
        deadline::set_grpc_timeout(request.headers_mut(), timeout);
        TimeoutFuture {
            future: self.inner.call(request),
            expiry: Some(Expiry {
                sleep: Box::pin(tokio::time::sleep_until(Instant::now() + fire_after)),
                timeout,
                path: path.into(),
            }),
        }
    }
}

/// A call's deadline: the timer and what to say when it fires.
struct Expiry {
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    path: Arc<str>,
}

impl Expiry {
    fn status(&self) -> tonic::Status {
        tonic::Status::deadline_exceeded(format!(
            "{} did not finish within its deadline of {:?}",
            self.path, self.timeout
        ))
    }
}

pin_project! {
    /// Response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        future: F,
        expiry: Option<Expiry>,
    }
}

impl<F, ResBody, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<http::Response<TimeoutBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            let expiry = this.expiry.take();
            return Poll::Ready(result.map(|response| {
                response.map(|inner| TimeoutBody {
                    body: StatusBody::new(inner),
                    expiry,
                })
            }));
        }
        let Some(expiry) = this.expiry.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(expiry.sleep.as_mut().poll(cx));
        let status = expiry.status();
        tracing::debug!(path = %expiry.path, timeout = ?expiry.timeout, "rpc deadline exceeded");
        *this.expiry = None;
        // Dropping the inner future here cancels the call below this layer.
        Poll::Ready(Ok(status.into_http()))
    }
}

pin_project! {
    /// A response body that ends with DEADLINE_EXCEEDED trailers if its deadline passes first.
    pub struct TimeoutBody<B> {
        #[pin]
        body: StatusBody<B>,
        expiry: Option<Expiry>,
    }
}

impl<B: Default> Default for TimeoutBody<B> {
    fn default() -> Self {
        Self {
            body: StatusBody::default(),
            expiry: None,
        }
    }
}

impl<B: Body> Body for TimeoutBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.as_mut().poll_frame(cx) {
            if frame
                .as_ref()
                .is_none_or(|f| f.as_ref().is_ok_and(Frame::is_trailers))
            {
                *this.expiry = None; // finished in time
            }
            return Poll::Ready(frame);
        }
        let Some(expiry) = this.expiry.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(expiry.sleep.as_mut().poll(cx));
        let status = expiry.status();
        *this.expiry = None;
        Poll::Ready(Some(Ok(this.body.end_with(&status))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
