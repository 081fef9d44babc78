//! Route groups dialed through route-setup (ARCHITECTURE §6): the visor asks a route-setup
//! service it knows by key (dmsg port 36, gRPC through the shared client stack: trace
//! context, deadline, breaker, concurrency limit) for a route group to `dst`, installs the
//! two rules it gets back, and runs the end-to-end handshake. The dial succeeds only when
//! that handshake completes; on every failure what was reserved or installed on this visor
//! is released (the other hops' reservations expire on their own, ROUTING.md §5.2).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dmsg::addr::{DmsgAddr, Port};
use dmsg::identity::PublicKey;
use middleware::{Breaker, BreakerConfig, ClientStackConfig, FailurePolicy, GrpcChannel};
use rand::Rng;
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::route_setup_client::RouteSetupClient;
use tokio::time::Instant;
use tracing::Instrument;

use crate::node::Visor;
use crate::route_group::{RouteGroup, RouteGroupError};
use crate::router::{Rule, RuleKind};

/// The dmsg port route-setup serves visors on.
pub const ROUTE_SETUP_PORT: Port = match Port::new(36) {
    Some(port) => port,
    None => panic!("36 is a valid port"),
};

/// How long a route dial may take by default: route-setup's own setup deadline, plus the
/// handshake.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(35);

/// The local route ports a dial picks from (the dmsg ephemeral range).
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = Port::EPHEMERAL_START..=u16::MAX;

/// A random local route port for a dial.
pub(crate) fn ephemeral_port() -> Port {
    const FIRST: Port = match Port::new(Port::EPHEMERAL_START) {
        Some(port) => port,
        None => panic!("the ephemeral range starts above 0"),
    };
    Port::new(rand::rng().random_range(EPHEMERAL_PORTS)).unwrap_or(FIRST)
}

/// How a route is dialed. Every field has a default, so `RouteOptions::default()` (or any
/// partial options) always dials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Fewest hops of each direction's path; 0 takes route-setup's default (1).
    pub min_hops: u32,
    /// Most hops; 0 takes route-setup's default (3).
    pub max_hops: u32,
    /// Deadline of the whole dial, setup and handshake; `None`: [`DEFAULT_DIAL_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// Why a route dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteDialError {
    /// The visor knows no route-setup service.
    #[error("no route-setup is configured (the visor's --route-setup-pks)")]
    NoRouteSetup,
    /// route-setup answered with an error (its `ErrorInfo` says why: `no_route`,
    /// `breaker_open`, `hop_failed`, …), or could not be reached.
    #[error("route-setup: {}", .0.message())]
    Setup(tonic::Status),
    /// route-setup's answer does not make a route group.
    #[error("route-setup's answer is unusable: {0}")]
    BadAnswer(String),
    /// The route group could not be opened (the end-to-end handshake, say).
    #[error(transparent)]
    Group(#[from] RouteGroupError),
    /// The deadline passed.
    #[error("the route dial took longer than {0:?}")]
    Timeout(Duration),
}

/// One reused gRPC channel per route-setup service, each behind the client stack.
#[derive(Debug, Default)]
pub(crate) struct RouteSetupChannels {
    channels: Mutex<HashMap<PublicKey, RouteSetupClient<GrpcChannel>>>,
}

impl RouteSetupChannels {
    fn client(&self, visor: &Visor, route_setup: PublicKey) -> RouteSetupClient<GrpcChannel> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channels
            .entry(route_setup)
            .or_insert_with(|| {
                let transport = dmsg::grpc::channel_to(
                    visor.dmsg().downgrade(),
                    DmsgAddr::new(route_setup, ROUTE_SETUP_PORT),
                );
                // Only route-setup being unreachable counts: its UNAVAILABLE answers are
                // about destinations and hops (their breakers live in route-setup).
                let breaker = Breaker::with_policy(
                    format!("route-setup/{}", route_setup.short()),
                    BreakerConfig::default(),
                    FailurePolicy::counting(&[]),
                );
                RouteSetupClient::new(middleware::client_stack(
                    transport,
                    &ClientStackConfig::default(),
                    breaker,
                ))
            })
            .clone()
    }
}

impl Visor {
    /// Dials a route group to `dst`'s route port `port` through route-setup (see the module
    /// docs). Tries the configured route-setup services in order while one cannot be reached.
    pub async fn dial_route(
        &self,
        dst: PublicKey,
        port: Port,
        options: RouteOptions,
    ) -> Result<RouteGroup, RouteDialError> {
        let timeout = options.timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT);
        let span = tracing::info_span!("visor.dial_route", %dst, %port);
        tokio::time::timeout(timeout, self.dial_route_within(dst, port, options, timeout))
            .instrument(span)
            .await
            .map_err(|_| RouteDialError::Timeout(timeout))?
    }

    async fn dial_route_within(
        &self,
        dst: PublicKey,
        port: Port,
        options: RouteOptions,
        timeout: Duration,
    ) -> Result<RouteGroup, RouteDialError> {
        let deadline = Instant::now() + timeout;
        let src_port = ephemeral_port().get();
        let request = pb::DialRouteGroupRequest {
            src: self.public_key().to_string(),
            dst: dst.to_string(),
            src_port: u32::from(src_port),
            dst_port: u32::from(port.get()),
            min_hops: options.min_hops,
            max_hops: options.max_hops,
        };
        let mut last = RouteDialError::NoRouteSetup;
        for route_setup in self.route_setups().to_vec() {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match self
                .route_setup_channels()
                .client(self, route_setup)
                .dial_route_group(call)
                .await
            {
                Ok(answer) => return self.open_dialed(answer.into_inner()).await,
                Err(status) if unreachable(&status) => {
                    tracing::debug!(%route_setup, %status, "route-setup unreachable; next");
                    last = RouteDialError::Setup(status);
                }
                Err(status) => return Err(RouteDialError::Setup(status)),
            }
        }
        Err(last)
    }

    /// Installs route-setup's two rules and runs the handshake; on failure nothing stays.
    async fn open_dialed(
        &self,
        answer: pb::DialRouteGroupResponse,
    ) -> Result<RouteGroup, RouteDialError> {
        let forward = Rule::decode(&answer.forward_rule);
        let consume = Rule::decode(&answer.consume_rule);
        let (forward, consume) = match (forward, consume) {
            (Ok(forward), Ok(consume)) => (forward, consume),
            (forward, consume) => {
                // Release what route-setup reserved here, whatever parsed.
                for rule in [forward.ok(), consume.ok()].into_iter().flatten() {
                    self.remove_rule(rule.key);
                }
                return Err(RouteDialError::BadAnswer(
                    "a rule of the answer does not decode".into(),
                ));
            }
        };
        if !matches!(forward.kind, RuleKind::Forward { .. }) {
            self.remove_rule(forward.key);
            self.remove_rule(consume.key);
            return Err(RouteDialError::BadAnswer(
                "forward_rule is not a FORWARD rule".into(),
            ));
        }
        let dialed = self.dial(forward, consume).await;
        if dialed.is_err() {
            // `dial` removes the rules it installed; a reservation it never reached goes too.
            self.remove_rule(forward.key);
            self.remove_rule(consume.key);
        }
        Ok(dialed?)
    }
}

/// True if `status` says route-setup itself was not reached (another one may be): a
/// transport failure, or this visor's breaker for that route-setup being open.
fn unreachable(status: &tonic::Status) -> bool {
    if middleware::BreakerOpen::breaker_of(status)
        .is_some_and(|name| name.starts_with("route-setup/"))
    {
        return true;
    }
    let answered = skywire_proto::status::error_info(status).is_some();
    !answered
        && matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        )
}
