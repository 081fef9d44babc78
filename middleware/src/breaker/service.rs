//! The breaker as a tower layer over HTTP (gRPC) services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use observability::rpc::{OutcomeBody, RpcOutcome, observe_response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Breaker, BreakerOpen, Permit};
use crate::deadline;

/// Layer guarding a service with one [`Breaker`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: Breaker,
}

impl CircuitBreakerLayer {
    /// Guards with `breaker` (keep a clone to observe it).
    pub fn new(breaker: Breaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
            admitted: None,
        }
    }
}

/// A service guarded by a [`Breaker`].
///
/// The breaker is asked in `poll_ready`, before the inner service: a refused call is answered
/// at once with an UNAVAILABLE response (a trailers-only gRPC response naming the breaker)
/// even while the inner service is saturated, and never reaches it.
#[derive(Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Breaker,
    /// The breaker's answer for the next call, taken in `poll_ready`.
    admitted: Option<Result<Permit, BreakerOpen>>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            admitted: None,
        }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CircuitBreaker<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<OutcomeBody<ResBody, Permit>>;
    type Error = S::Error;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let admitted = self
            .admitted
            .get_or_insert_with(|| self.breaker.try_acquire());
        if admitted.is_err() {
            // Refused: `call` answers without touching the inner service.
            return Poll::Ready(Ok(()));
        }
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Err(_)) = &ready
            && let Some(Ok(permit)) = self.admitted.take()
        {
            permit.record(RpcOutcome::Transport);
        }
        ready
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let admitted = self
            .admitted
            .take()
            .unwrap_or_else(|| self.breaker.try_acquire());
        call_admitted(&mut self.inner, admitted, request)
    }
}

/// Calls `inner` if the breaker admitted the call, else answers with the refusal.
pub(crate) fn call_admitted<S, ReqBody>(
    inner: &mut S,
    admitted: Result<Permit, BreakerOpen>,
    request: http::Request<ReqBody>,
) -> BreakerFuture<S::Future>
where
    S: Service<http::Request<ReqBody>>,
{
    match admitted {
        Err(refusal) => BreakerFuture {
            state: BreakerFutureState::Refused {
                refusal: Some(refusal),
            },
        },
        Ok(permit) => {
            let permit = match deadline::grpc_timeout(request.headers()) {
                Some(timeout) => permit.with_timeout(timeout),
                None => permit,
            };
            BreakerFuture {
                state: BreakerFutureState::Called {
                    future: inner.call(request),
                    permit: Some(permit),
                },
            }
        }
    }
}

pin_project! {
    /// Response future of [`CircuitBreaker`] and the keyed breaker.
    pub struct BreakerFuture<F> {
        #[pin]
        state: BreakerFutureState<F>,
    }
}

pin_project! {
    #[project = BreakerFutureProj]
    enum BreakerFutureState<F> {
        /// The breaker refused; resolves at once.
        Refused {
            refusal: Option<BreakerOpen>,
        },
        /// The call is in flight under a permit (dropped with the future if it is cancelled
        /// or a panic unwinds through it — which releases a probe slot).
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
    }
}

impl<F, ResBody, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<http::Response<OutcomeBody<ResBody, Permit>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            BreakerFutureProj::Refused { refusal } => {
                let status = refusal.take().map_or_else(
                    || tonic::Status::internal("breaker future polled after completion"),
                    |refusal| refusal.to_status(),
                );
                Poll::Ready(Ok(status.into_http()))
            }
            BreakerFutureProj::Called { future, permit } => {
                let result = std::task::ready!(future.poll(cx));
                let Some(permit) = permit.take() else {
                    return Poll::Ready(result.map(|r| r.map(|_| OutcomeBody::default())));
                };
                Poll::Ready(match result {
                    Ok(response) => Ok(observe_response(response, permit)),
                    Err(error) => {
                        permit.record(RpcOutcome::Transport);
                        Err(error)
                    }
                })
            }
        }
    }
}
