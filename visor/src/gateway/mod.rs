//! The visor's gateways (ARCHITECTURE §6): `TransportGateway` on dmsg port 47 and
//! `RouteGateway` on dmsg port 136 — tonic services fed by dmsg listeners, behind the shared
//! server stack. Each serves only the keys the visor trusts for it: a stream from any other
//! key is refused with `NOT_ALLOWED` when it opens (dmsg PROTOCOL.md §7.5), before the
//! end-to-end handshake and any HTTP/2 byte (so no RPC is ever served on it), and counted.

pub mod route;
pub mod transport;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use middleware::ServerStackConfig;
use observability::HealthStates;
use service::GrpcEndpoint;
use skywire_proto::skywire::visor::v1::route_gateway_server::RouteGatewayServer;
use skywire_proto::skywire::visor::v1::transport_gateway_server::TransportGatewayServer;
use tokio_util::sync::CancellationToken;

use crate::node::Visor;

/// The dmsg port of the transport gateway.
pub const TRANSPORT_GATEWAY_PORT: Port = match Port::new(47) {
    Some(port) => port,
    None => unreachable!(),
};
/// The dmsg port of the route gateway.
pub const ROUTE_GATEWAY_PORT: Port = match Port::new(136) {
    Some(port) => port,
    None => unreachable!(),
};
/// The error domain of gateway errors (`google.rpc.ErrorInfo`).
pub const ERROR_DOMAIN: &str = "skywire-visor";

/// An INVALID_ARGUMENT naming what was wrong.
pub(crate) fn invalid(message: impl Into<String>) -> tonic::Status {
    gateway_status(tonic::Code::InvalidArgument, message, "invalid_argument")
}

/// A status with the gateway's `ErrorInfo`.
pub(crate) fn gateway_status(
    code: tonic::Code,
    message: impl Into<String>,
    reason: &str,
) -> tonic::Status {
    skywire_proto::status::status_with_info(
        code,
        message,
        ERROR_DOMAIN,
        reason,
        std::collections::HashMap::new(),
    )
}

/// The keys each gateway serves (config: transport-setup keys, route-setup keys).
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    /// Keys allowed on the transport gateway (port 47).
    pub transport_setup: HashSet<PublicKey>,
    /// Keys allowed on the route gateway (port 136).
    pub route_setup: HashSet<PublicKey>,
}

/// Streams refused when they opened (key not trusted), per gateway.
#[derive(Clone, Debug, Default)]
pub struct GatewayCounters {
    /// On the transport gateway.
    pub transport_refused: Arc<AtomicU64>,
    /// On the route gateway.
    pub route_refused: Arc<AtomicU64>,
}

/// Why the gateways could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A gateway port is taken on the dmsg client.
    #[error("cannot listen on dmsg port {port}: {error}")]
    Listen {
        /// The port.
        port: Port,
        /// Why.
        error: dmsg::client::ListenError,
    },
    /// The gRPC endpoint could not be built.
    #[error(transparent)]
    Endpoint(#[from] service::EndpointError),
}

/// Serves both gateways on `visor`'s dmsg client until `stop`, behind the shared server
/// stack, their health driven by `health`; spawns them on `tasks` (they end after `stop`,
/// within `grace`) and returns their refusal counters.
pub fn serve(
    visor: &Visor,
    trusted: TrustedKeys,
    health: &HealthStates,
    stop: &CancellationToken,
    grace: std::time::Duration,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<GatewayCounters, GatewayError> {
    let counters = GatewayCounters::default();
    let listen = |port: Port, trusted: HashSet<PublicKey>, refused: Arc<AtomicU64>| {
        visor
            .dmsg()
            .listen_filtered(port, move |peer| {
                let admitted = trusted.contains(peer);
                if !admitted {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, %port, "gateway stream from an untrusted key refused");
                }
                admitted
            })
            .map_err(|error| GatewayError::Listen { port, error })
    };
    let transport_listener = listen(
        TRANSPORT_GATEWAY_PORT,
        trusted.transport_setup,
        counters.transport_refused.clone(),
    )?;
    let route_listener = listen(
        ROUTE_GATEWAY_PORT,
        trusted.route_setup,
        counters.route_refused.clone(),
    )?;
    let (transport_endpoint, transport_health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(TransportGatewayServer::new(
            transport::TransportGatewayService::new(visor.clone_internal()),
        ))
        .build(health, stop)?;
    let (route_endpoint, route_health) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(RouteGatewayServer::new(route::RouteGatewayService::new(
            visor.clone_internal(),
        )))
        .build(health, stop)?;
    let transports = transport_endpoint.serve(
        dmsg::grpc::Incoming::new(transport_listener),
        stop.clone(),
        grace,
    );
    let routes = route_endpoint.serve(
        dmsg::grpc::Incoming::new(route_listener),
        stop.clone(),
        grace,
    );
    for serve in [
        Box::pin(transports) as Pin<Box<dyn Future<Output = _> + Send>>,
        Box::pin(routes),
    ] {
        tasks.spawn(async move {
            if let Err(error) = serve.await {
                tracing::error!(%error, "a gateway stopped");
            }
        });
    }
    tasks.spawn(transport_health);
    tasks.spawn(route_health);
    Ok(counters)
}
