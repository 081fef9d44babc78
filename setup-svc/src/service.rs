//! The `RouteSetup` gRPC service over route-setup's core: `DialRouteGroup` with every
//! failure as a status a person can act on (`google.rpc.ErrorInfo`, domain `route-setup`),
//! and `Breakers`, the destination breakers that are not closed and since when.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use discovery_client::hexfield::{id_to_proto, pk_from_proto, pk_to_proto};
use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use middleware::{BreakerState, KeyedBreakers};
use skywire_proto::skywire::setup::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Code, Request, Response, Status};

use crate::paths::Path;
use crate::route_setup::{DialError, RouteSetup};
use crate::setup::{DEFAULT_MAX_HOPS, DEFAULT_MIN_HOPS, SetupError, SetupRequest};

/// The error domain of route-setup's errors.
pub const ERROR_DOMAIN: &str = "route-setup";
/// The most hops a request may ask for.
pub const MAX_HOPS: usize = 10;
/// How much sooner than the caller's `grpc-timeout` a setup gives up, so its answer arrives.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(100);
pub use visor::route_dial::ROUTE_SETUP_PORT;

fn status(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: &[(&str, String)],
) -> Status {
    skywire_proto::status::status_with_info(
        code,
        message,
        ERROR_DOMAIN,
        reason,
        metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, message, "invalid_argument", &[])
}

/// The destination breakers that are not closed, and since when (kept from the breakers'
/// events by a task).
#[derive(Clone, Debug, Default)]
pub struct BreakerBoard {
    states: Arc<Mutex<HashMap<PublicKey, (BreakerState, SystemTime)>>>,
}

impl BreakerBoard {
    /// Follows `breakers` until they are dropped; the returned future is the task (spawn it
    /// in the owner's task set).
    pub fn follow(
        &self,
        breakers: &KeyedBreakers<PublicKey>,
    ) -> impl Future<Output = ()> + Send + use<> {
        let mut events = breakers.subscribe();
        let states = self.states.clone();
        async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(pk) = event
                    .breaker
                    .rsplit('/')
                    .next()
                    .and_then(|text| text.parse::<PublicKey>().ok())
                else {
                    continue;
                };
                let mut states = states
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if event.transition.to == BreakerState::Closed {
                    states.remove(&pk);
                } else {
                    states.insert(pk, (event.transition.to, SystemTime::now()));
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<pb::Breaker> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<pb::Breaker> = states
            .iter()
            .map(|(pk, (state, since))| pb::Breaker {
                destination: pk_to_proto(pk),
                state: state.as_str().to_owned(),
                since_unix_nanos: since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
            })
            .collect();
        list.sort_by(|a, b| a.destination.cmp(&b.destination));
        list
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct RouteSetupService {
    core: RouteSetup,
    board: BreakerBoard,
}

impl RouteSetupService {
    /// The service over `core`, reporting breakers from `board` (follow the core's breakers
    /// with it).
    pub fn new(core: RouteSetup, board: BreakerBoard) -> Self {
        Self { core, board }
    }

    fn parse(request: &pb::DialRouteGroupRequest) -> Result<SetupRequest, Status> {
        let pk = |text: &str, field: &str| {
            pk_from_proto(text, field).map_err(|error| invalid(error.to_string()))
        };
        let port = |value: u32, field: &str| {
            u16::try_from(value)
                .ok()
                .and_then(Port::new)
                .ok_or_else(|| invalid(format!("{field} must be 1..=65535, not {value}")))
        };
        let src = pk(&request.src, "src")?;
        let dst = pk(&request.dst, "dst")?;
        if src == dst {
            return Err(invalid("src and dst are the same visor"));
        }
        let min_hops = match request.min_hops {
            0 => DEFAULT_MIN_HOPS,
            n => n as usize,
        };
        let max_hops = match request.max_hops {
            0 => DEFAULT_MAX_HOPS,
            n => n as usize,
        };
        if max_hops > MAX_HOPS || min_hops > max_hops {
            return Err(invalid(format!(
                "hops must satisfy 1 <= min_hops <= max_hops <= {MAX_HOPS} (0 takes the \
                 defaults {DEFAULT_MIN_HOPS} and {DEFAULT_MAX_HOPS}); got {min_hops} and {max_hops}"
            )));
        }
        Ok(SetupRequest {
            src: (src, port(request.src_port, "src_port")?),
            dst: (dst, port(request.dst_port, "dst_port")?),
            min_hops,
            max_hops,
        })
    }
}

fn path_to_proto(path: &Path) -> pb::Path {
    pb::Path {
        hops: path
            .iter()
            .map(|hop| pb::Hop {
                transport_id: id_to_proto(&hop.transport),
                from: pk_to_proto(&hop.from),
                to: pk_to_proto(&hop.to),
            })
            .collect(),
    }
}

fn dial_status(dst: &PublicKey, error: DialError) -> Status {
    match error {
        DialError::BreakerOpen(open) => open.to_status(),
        DialError::Overloaded(_) => status(
            Code::ResourceExhausted,
            error.to_string(),
            "overloaded",
            &[],
        ),
        DialError::Graph(_) => status(
            Code::Unavailable,
            error.to_string(),
            "registry_unavailable",
            &[],
        ),
        DialError::Timeout(_) => status(Code::DeadlineExceeded, error.to_string(), "timeout", &[]),
        DialError::Setup(SetupError::NoRoute(which)) => status(
            Code::NotFound,
            format!(
                "no {which} route to {dst} within the hop bounds: build transports first (transport-setup)"
            ),
            "no_route",
            &[("direction", which.to_owned())],
        ),
        DialError::Setup(SetupError::Rules(rules)) => {
            status(Code::Internal, rules.to_string(), "rule_generation", &[])
        }
        DialError::Setup(SetupError::Hop {
            visor,
            role,
            step,
            error,
        }) => status(
            Code::Unavailable,
            format!("{step:?} on {visor} ({role:?}) failed: {error}"),
            "hop_failed",
            &[
                ("visor", pk_to_proto(&visor)),
                ("role", format!("{role:?}").to_lowercase()),
                ("step", format!("{step:?}").to_lowercase()),
            ],
        ),
    }
}

#[tonic::async_trait]
impl pb::route_setup_server::RouteSetup for RouteSetupService {
    async fn dial_route_group(
        &self,
        request: Request<pb::DialRouteGroupRequest>,
    ) -> Result<Response<pb::DialRouteGroupResponse>, Status> {
        let caller = request
            .extensions()
            .get::<dmsg::grpc::DmsgConnectInfo>()
            .map(|info| info.remote.pk);
        // The caller's deadline, less a margin so the answer (and the release of what was
        // reserved) comes before the caller gives up.
        let deadline = request
            .metadata()
            .get(middleware::deadline::GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(middleware::deadline::parse)
            .map(|timeout| timeout.saturating_sub(DEADLINE_MARGIN));
        let request = Self::parse(request.get_ref())?;
        // Over dmsg a visor sets up only its own route groups; operators (TCP) any.
        if let Some(caller) = caller
            && caller != request.src.0
        {
            return Err(status(
                Code::PermissionDenied,
                format!(
                    "{caller} may dial only its own route groups: src must be {caller}, not {}",
                    request.src.0
                ),
                "not_source",
                &[("caller", pk_to_proto(&caller))],
            ));
        }
        let setup = self
            .core
            .dial(request, deadline)
            .await
            .map_err(|error| dial_status(&request.dst.0, error))?;
        Ok(Response::new(pb::DialRouteGroupResponse {
            forward_rule: setup.forward_rule.encode(),
            consume_rule: setup.consume_rule.encode(),
            forward: Some(path_to_proto(&setup.forward)),
            reverse: Some(path_to_proto(&setup.reverse)),
        }))
    }

    async fn breakers(
        &self,
        _: Request<pb::BreakersRequest>,
    ) -> Result<Response<pb::BreakersResponse>, Status> {
        Ok(Response::new(pb::BreakersResponse {
            breakers: self.board.snapshot(),
        }))
    }
}
