//! A scriptable implementation of `skywire.testing.v1.Probe` for tests (feature `testing`).
//!
//! Each request says what the handler does: reply, fail with a code, panic before replying, or
//! panic in the middle of a server stream. The service counts every call it receives so tests
//! can assert how many requests got past a breaker.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tonic::{Code, Request, Response, Status};

use crate::skywire::testing::v1::probe_server::{Probe, ProbeServer};
use crate::skywire::testing::v1::{Behavior, ProbeReply, ProbeRequest};

pub use crate::skywire::testing::v1::probe_client::ProbeClient;

/// The scriptable probe service. Clones share the call counter.
#[derive(Clone, Debug, Default)]
pub struct ProbeService {
    calls: Arc<AtomicU64>,
}

impl ProbeService {
    /// A new service with its counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls (unary and streaming) reached a handler.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> ProbeServer<Self> {
        ProbeServer::new(self)
    }

    fn count(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The status a `BEHAVIOR_FAIL` request asks for.
fn scripted_status(req: &ProbeRequest) -> Status {
    Status::new(
        Code::from_i32(req.code),
        format!("scripted failure ({})", req.payload),
    )
}

#[tonic::async_trait]
impl Probe for ProbeService {
    async fn unary(&self, request: Request<ProbeRequest>) -> Result<Response<ProbeReply>, Status> {
        let calls = self.count();
        let req = request.into_inner();
        // No delay, no await: a true no-op (a zero sleep still registers a timer).
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        match req.behavior() {
            Behavior::Fail => Err(scripted_status(&req)),
            Behavior::Panic | Behavior::PanicMidStream => {
                panic!("probe handler told to panic ({})", req.payload)
            }
            Behavior::OkUnspecified => Ok(Response::new(ProbeReply {
                calls,
                index: 0,
                payload: req.payload,
            })),
        }
    }

    type ServerStreamStream = Pin<Box<dyn Stream<Item = Result<ProbeReply, Status>> + Send>>;

    async fn server_stream(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let calls = self.count();
        let req = request.into_inner();
        if req.behavior() == Behavior::Panic {
            panic!("probe stream handler told to panic ({})", req.payload);
        }
        let delay = Duration::from_millis(req.delay_ms.into());
        let stream = futures::stream::unfold(0u32, move |index| {
            let req = req.clone();
            async move {
                tokio::time::sleep(delay).await;
                if index < req.items {
                    let item = ProbeReply {
                        calls,
                        index,
                        payload: req.payload.clone(),
                    };
                    return Some((Ok(item), index + 1));
                }
                match req.behavior() {
                    Behavior::PanicMidStream if index == req.items => {
                        panic!("probe stream told to panic after {index} items")
                    }
                    Behavior::Fail if index == req.items => {
                        Some((Err(scripted_status(&req)), index + 1))
                    }
                    _ => None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
