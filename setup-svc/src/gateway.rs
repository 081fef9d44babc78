//! Calls to visor gateways (STYLE.md "setup-svc/"): [`Gateways`], what route-setup asks of the
//! visors on a path, with the gRPC implementation over dmsg ([`GrpcGateways`], one reused
//! channel per visor) and an in-memory one keyed by public key ([`MemoryGateways`]) so the
//! setup logic is tested without processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::WeakClient;
use dmsg::identity::PublicKey;
use middleware::{Breaker, BreakerConfig, ClientStackConfig, FailurePolicy, GrpcChannel};
use skywire_proto::skywire::visor::v1 as pb;
use skywire_proto::skywire::visor::v1::route_gateway_client::RouteGatewayClient;
use visor::gateway::ROUTE_GATEWAY_PORT;
use visor::packet::RouteId;
use visor::router::Rule;

/// Why a gateway call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The visor could not be reached (no session, no answer).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The visor answered with an error, or refused this caller's key
    /// (`PermissionDenied`).
    #[error("refused ({code:?}): {message}")]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

impl From<tonic::Status> for GatewayError {
    fn from(status: tonic::Status) -> Self {
        if dmsg::grpc::refusal(&status) == Some(dmsg::wire::Code::NotAllowed) {
            return Self::Refused {
                code: tonic::Code::PermissionDenied,
                message: "the visor does not trust this route-setup's key (its \
                          --route-setup-pks)"
                    .into(),
            };
        }
        match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled => Self::Unreachable(status.message().to_owned()),
            code => Self::Refused {
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

/// What route-setup asks of a visor's route gateway.
#[tonic::async_trait]
pub trait Gateways: Send + Sync + 'static {
    /// Reserves `n` route IDs on `visor`.
    async fn reserve_ids(&self, visor: PublicKey, n: usize) -> Result<Vec<RouteId>, GatewayError>;
    /// Installs INTERMEDIARY rules on `visor`.
    async fn add_intermediary_rules(
        &self,
        visor: PublicKey,
        rules: Vec<Rule>,
    ) -> Result<(), GatewayError>;
    /// Installs the destination's two edge rules on `visor`.
    async fn add_edge_rules(&self, visor: PublicKey, rules: [Rule; 2]) -> Result<(), GatewayError>;
    /// Releases IDs (and the rules under them) on `visor`.
    async fn release_ids(&self, visor: PublicKey, ids: Vec<RouteId>) -> Result<(), GatewayError>;
}

/// One lazily connecting gRPC channel per visor to its gateway on `port`, tunnelled through
/// a dmsg client's sessions, kept and reused (no dmsg handshake per call), each behind the
/// shared client stack: the caller's trace context goes along (`traceparent`) and every call
/// has a deadline. The stack's breaker never opens here: the destination breakers of
/// route-setup are the breakers of these calls (one per destination, their durations
/// configured), and a second one per visor would refuse a recovered visor on its own clock.
#[derive(Debug)]
pub struct VisorChannels {
    client: WeakClient,
    port: Port,
    stack: ClientStackConfig,
    channels: Mutex<HashMap<PublicKey, GrpcChannel>>,
}

impl VisorChannels {
    /// Channels to dmsg `port` of each visor, through `client`, 30 s per call.
    pub fn new(client: WeakClient, port: Port) -> Self {
        Self::with_call_timeout(client, port, std::time::Duration::from_secs(30))
    }

    /// The same with `timeout` per call.
    pub fn with_call_timeout(client: WeakClient, port: Port, timeout: std::time::Duration) -> Self {
        Self {
            client,
            port,
            stack: ClientStackConfig {
                timeouts: middleware::TimeoutConfig::uniform(timeout),
                ..ClientStackConfig::default()
            },
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `visor`'s gateway.
    pub fn channel(&self, visor: PublicKey) -> GrpcChannel {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        channels
            .entry(visor)
            .or_insert_with(|| {
                let transport =
                    dmsg::grpc::channel_to(self.client.clone(), DmsgAddr::new(visor, self.port));
                let breaker = Breaker::with_policy(
                    format!("visor-gateway/{}/{}", self.port, visor.short()),
                    BreakerConfig::default(),
                    FailurePolicy::custom(|_| false),
                );
                middleware::client_stack(transport, &self.stack, breaker)
            })
            .clone()
    }
}

/// Route gateways over gRPC tunnelled through dmsg.
#[derive(Debug)]
pub struct GrpcGateways {
    channels: VisorChannels,
}

/// How long one gateway call may take by default: a third of route-setup's 30 s setup
/// deadline (a setup is three rounds of calls).
pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl GrpcGateways {
    /// Gateways reached through `client`'s sessions, [`DEFAULT_CALL_TIMEOUT`] per call.
    pub fn new(client: WeakClient) -> Self {
        Self::with_call_timeout(client, DEFAULT_CALL_TIMEOUT)
    }

    /// The same with `timeout` per call. Keep it under a third of the setup deadline: a hop
    /// that hangs then fails as itself (a hung destination counts against its breaker)
    /// before the whole setup times out (which is nobody's fault).
    pub fn with_call_timeout(client: WeakClient, timeout: std::time::Duration) -> Self {
        Self {
            channels: VisorChannels::with_call_timeout(client, ROUTE_GATEWAY_PORT, timeout),
        }
    }

    fn gateway(&self, visor: PublicKey) -> RouteGatewayClient<GrpcChannel> {
        RouteGatewayClient::new(self.channels.channel(visor))
    }
}

#[tonic::async_trait]
impl Gateways for GrpcGateways {
    async fn reserve_ids(&self, visor: PublicKey, n: usize) -> Result<Vec<RouteId>, GatewayError> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let ids = self
            .gateway(visor)
            .reserve_ids(pb::ReserveIdsRequest { n })
            .await?
            .into_inner()
            .ids;
        ids.into_iter()
            .map(|id| {
                RouteId::new(id).ok_or_else(|| GatewayError::Refused {
                    code: tonic::Code::DataLoss,
                    message: "the visor reserved route id 0".into(),
                })
            })
            .collect()
    }

    async fn add_intermediary_rules(
        &self,
        visor: PublicKey,
        rules: Vec<Rule>,
    ) -> Result<(), GatewayError> {
        let rules = rules.iter().map(Rule::encode).collect();
        self.gateway(visor)
            .add_intermediary_rules(pb::AddRulesRequest { rules })
            .await?;
        Ok(())
    }

    async fn add_edge_rules(&self, visor: PublicKey, rules: [Rule; 2]) -> Result<(), GatewayError> {
        let rules = rules.iter().map(Rule::encode).collect();
        self.gateway(visor)
            .add_edge_rules(pb::AddRulesRequest { rules })
            .await?;
        Ok(())
    }

    async fn release_ids(&self, visor: PublicKey, ids: Vec<RouteId>) -> Result<(), GatewayError> {
        let ids = ids.iter().map(|id| id.get()).collect();
        self.gateway(visor)
            .release_ids(pb::ReleaseIdsRequest { ids })
            .await?;
        Ok(())
    }
}

/// One visor of [`MemoryGateways`].
#[derive(Debug, Default)]
pub struct MemoryVisor {
    next: u32,
    /// IDs reserved and not released.
    pub reserved: Vec<RouteId>,
    /// Rules installed and not released.
    pub rules: Vec<Rule>,
    /// Calls answered so far.
    pub calls: usize,
    /// Every call fails so, when set.
    pub fail: Option<GatewayError>,
    /// Only rule installs fail so, when set (reservations and releases work).
    pub fail_rules: Option<GatewayError>,
    /// Every call takes this long (a slow network), then answers.
    pub delay: std::time::Duration,
}

/// Route gateways in memory, keyed by public key (unit tests of the setup logic).
#[derive(Clone, Debug, Default)]
pub struct MemoryGateways {
    visors: Arc<Mutex<HashMap<PublicKey, MemoryVisor>>>,
}

impl MemoryGateways {
    /// Runs `f` on `visor`'s state (created on first use).
    pub fn with<T>(&self, visor: PublicKey, f: impl FnOnce(&mut MemoryVisor) -> T) -> T {
        let mut visors = self
            .visors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(visors.entry(visor).or_default())
    }

    async fn call<T>(
        &self,
        visor: PublicKey,
        f: impl FnOnce(&mut MemoryVisor) -> T,
    ) -> Result<T, GatewayError> {
        let delay = self.with(visor, |state| state.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.with(visor, |state| {
            state.calls += 1;
            match &state.fail {
                Some(error) => Err(error.clone()),
                None => Ok(f(state)),
            }
        })
    }
}

#[tonic::async_trait]
impl Gateways for MemoryGateways {
    async fn reserve_ids(&self, visor: PublicKey, n: usize) -> Result<Vec<RouteId>, GatewayError> {
        self.call(visor, |state| {
            let ids: Vec<RouteId> = (0..n)
                .filter_map(|_| {
                    state.next += 1;
                    RouteId::new(state.next)
                })
                .collect();
            state.reserved.extend(&ids);
            ids
        })
        .await
    }

    async fn add_intermediary_rules(
        &self,
        visor: PublicKey,
        rules: Vec<Rule>,
    ) -> Result<(), GatewayError> {
        self.call(visor, |state| match &state.fail_rules {
            Some(error) => Err(error.clone()),
            None => {
                state.rules.extend(rules);
                Ok(())
            }
        })
        .await?
    }

    async fn add_edge_rules(&self, visor: PublicKey, rules: [Rule; 2]) -> Result<(), GatewayError> {
        self.call(visor, |state| match &state.fail_rules {
            Some(error) => Err(error.clone()),
            None => {
                state.rules.extend(rules);
                Ok(())
            }
        })
        .await?
    }

    async fn release_ids(&self, visor: PublicKey, ids: Vec<RouteId>) -> Result<(), GatewayError> {
        self.call(visor, |state| {
            state.reserved.retain(|id| !ids.contains(id));
            state.rules.retain(|rule| !ids.contains(&rule.key));
        })
        .await
    }
}
