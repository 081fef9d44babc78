//! The visor control API, `skywire.visor.v1.VisorControl`, served on the admin address
//! (default `127.0.0.1:3435`) beside health, reflection and `/metrics`: what `skywire-cli`
//! and grpcurl ask the visor they run — its status, its transports (the same calls as the
//! transport gateway), its rules and route groups.

use std::net::SocketAddr;
use std::sync::Arc;

use discovery_client::hexfield::{id_to_proto, pk_to_proto};
use skywire_proto::skywire::visor::v1 as pb;
use skywire_proto::skywire::visor::v1::transport_gateway_server::TransportGateway;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::apps::registry::{AppRegistry, AppStatus, AppsError, SKYSOCKS, SKYSOCKS_CLIENT};
use crate::apps::skysocks_client::{ClientConfig, DEFAULT_LISTEN};
use crate::forward::{Forwarded, Forwarding};
use crate::gateway::transport::TransportGatewayService;
use crate::node::Visor;
use crate::router::{Rule, RuleKind};
use crate::uptime::{Ratio, Uptime};

fn forward_proto(forward: &Forwarded) -> pb::Forward {
    pb::Forward {
        listen: forward.listen.to_string(),
        dst_pk: pk_to_proto(&forward.dst),
        port: u32::from(forward.port.get()),
        direct: forward.direct,
    }
}

fn app_info(app: AppStatus) -> pb::AppInfo {
    pb::AppInfo {
        name: app.name.to_owned(),
        running: app.running,
        status: app.detail,
        args: app.args,
    }
}

/// An app error as a status with its `google.rpc.ErrorInfo` reason.
fn apps_status(error: AppsError) -> Status {
    let (code, reason) = match &error {
        AppsError::Unknown(_) => (tonic::Code::NotFound, "unknown_app"),
        AppsError::Running(_) => (tonic::Code::FailedPrecondition, "app_running"),
        AppsError::Bind { .. } | AppsError::Listen(_) => {
            (tonic::Code::FailedPrecondition, "cannot_listen")
        }
    };
    crate::gateway::gateway_status(code, error.to_string(), reason)
}

fn tier_ratio(ratio: Ratio) -> Option<pb::TierRatio> {
    Some(pb::TierRatio {
        up: ratio.up,
        counted: ratio.counted,
        ratio: ratio.value().unwrap_or(0.0),
    })
}

/// What the control API reports on and drives besides the data plane.
#[derive(Clone, Debug)]
pub struct ControlParts {
    /// The uptime probe.
    pub uptime: Uptime,
    /// The apps.
    pub apps: Arc<AppRegistry>,
    /// The forwards.
    pub forwarding: Arc<Forwarding>,
}

impl ControlParts {
    /// Fresh parts for `visor`: an unsampled probe (every `every`), no app, no forward.
    pub fn new(
        visor: &Visor,
        every: std::time::Duration,
    ) -> Result<Self, crate::forward::ForwardError> {
        Ok(Self {
            uptime: Uptime::new(every),
            apps: Arc::new(AppRegistry::new(visor.clone_internal())),
            forwarding: Arc::new(Forwarding::new(visor)?),
        })
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct ControlService {
    visor: Visor,
    transports: TransportGatewayService,
    started: Instant,
    stcp_addr: SocketAddr,
    uptime: Uptime,
    apps: Arc<AppRegistry>,
    forwarding: Arc<Forwarding>,
}

impl ControlService {
    /// The control API of `visor`, whose stcp listener is bound at `stcp_addr`, with its
    /// uptime probe, its apps and its forwards.
    pub fn new(visor: Visor, stcp_addr: SocketAddr, parts: ControlParts) -> Self {
        Self {
            transports: TransportGatewayService::new(visor.clone()),
            visor,
            started: Instant::now(),
            stcp_addr,
            uptime: parts.uptime,
            apps: parts.apps,
            forwarding: parts.forwarding,
        }
    }

    fn app_info(&self, name: &str) -> pb::AppInfo {
        self.apps
            .list()
            .into_iter()
            .find(|app| app.name == name)
            .map(app_info)
            .unwrap_or_default()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn rule_info(rule: &Rule) -> pb::RuleInfo {
    let mut info = pb::RuleInfo {
        key: rule.key.get(),
        keep_alive_ms: u64::try_from(rule.keep_alive.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    let (kind, descriptor, next) = match rule.kind {
        RuleKind::Consume(descriptor) => ("consume", Some(descriptor), None),
        RuleKind::Forward { descriptor, next } => ("forward", Some(descriptor), Some(next)),
        RuleKind::Intermediary(next) => ("intermediary", None, Some(next)),
    };
    info.r#type = kind.to_owned();
    if let Some(descriptor) = descriptor {
        info.src_pk = pk_to_proto(&descriptor.src_pk);
        info.dst_pk = pk_to_proto(&descriptor.dst_pk);
        info.src_port = u32::from(descriptor.src_port.get());
        info.dst_port = u32::from(descriptor.dst_port.get());
    }
    if let Some(next) = next {
        info.next_route = next.route.get();
        info.next_transport = id_to_proto(&next.transport);
    }
    info
}

#[tonic::async_trait]
impl pb::visor_control_server::VisorControl for ControlService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let stats = self.visor.stats();
        let mut servers: Vec<String> = self
            .visor
            .dmsg()
            .connected_servers()
            .iter()
            .map(pk_to_proto)
            .collect();
        servers.sort();
        let rules = stats.rules;
        Ok(Response::new(pb::StatusResponse {
            pk: pk_to_proto(&self.visor.public_key()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            dmsg_servers: servers,
            transports: count(stats.transports),
            route_groups: count(stats.route_groups),
            rules: count(rules.consume + rules.forward + rules.intermediary),
            uptime_secs: self.started.elapsed().as_secs(),
            stcp_addr: self.stcp_addr.to_string(),
            apps: self
                .apps
                .list()
                .into_iter()
                .filter(|app| app.running)
                .map(|app| app.name.to_owned())
                .collect(),
        }))
    }

    async fn list_transports(
        &self,
        request: Request<pb::ListTransportsRequest>,
    ) -> Result<Response<pb::TransportList>, Status> {
        self.transports.list_transports(request).await
    }

    async fn add_transport(
        &self,
        request: Request<pb::AddTransportRequest>,
    ) -> Result<Response<pb::TransportInfo>, Status> {
        self.transports.add_transport(request).await
    }

    async fn remove_transport(
        &self,
        request: Request<pb::RemoveTransportRequest>,
    ) -> Result<Response<pb::RemoveTransportResponse>, Status> {
        self.transports.remove_transport(request).await
    }

    async fn routes(
        &self,
        _: Request<pb::RoutesRequest>,
    ) -> Result<Response<pb::RoutesResponse>, Status> {
        let route_groups = self
            .visor
            .route_groups()
            .iter()
            .map(|group| {
                let (sent, received) = group.bytes();
                pb::RouteGroupInfo {
                    remote_pk: pk_to_proto(&group.addr.remote),
                    local_port: u32::from(group.addr.local_port.get()),
                    remote_port: u32::from(group.addr.remote_port.get()),
                    consume_key: group.consume_key.get(),
                    forward_key: group.forward_key.get(),
                    bytes_sent: sent,
                    bytes_received: received,
                    pq: if group.pq().is_hybrid() {
                        "hybrid"
                    } else {
                        "classical"
                    }
                    .to_owned(),
                }
            })
            .collect();
        Ok(Response::new(pb::RoutesResponse {
            rules: self.visor.rules().iter().map(rule_info).collect(),
            route_groups,
            reservations: count(self.visor.stats().rules.reserved),
        }))
    }

    async fn uptime(
        &self,
        _: Request<pb::UptimeRequest>,
    ) -> Result<Response<pb::UptimeResponse>, Status> {
        let report = self.uptime.report();
        let last = report.last;
        Ok(Response::new(pb::UptimeResponse {
            every_ms: u64::try_from(report.every.as_millis()).unwrap_or(u64::MAX),
            dmsg_up: last.is_some_and(|s| s.dmsg),
            routes_up: last.is_some_and(|s| s.routes == Some(true)),
            routes_sampled: last.is_some_and(|s| s.routes.is_some()),
            dmsg_hour: tier_ratio(report.dmsg_hour),
            dmsg_day: tier_ratio(report.dmsg_day),
            routes_hour: tier_ratio(report.routes_hour),
            routes_day: tier_ratio(report.routes_day),
        }))
    }

    async fn list_apps(
        &self,
        _: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::AppList>, Status> {
        Ok(Response::new(pb::AppList {
            apps: self.apps.list().into_iter().map(app_info).collect(),
        }))
    }

    async fn start_app(
        &self,
        request: Request<pb::StartAppRequest>,
    ) -> Result<Response<pb::AppInfo>, Status> {
        let request = request.into_inner();
        match request.name.as_str() {
            SKYSOCKS => self.apps.start_skysocks().map_err(apps_status)?,
            SKYSOCKS_CLIENT => {
                let exit = discovery_client::hexfield::pk_from_proto(&request.exit_pk, "exit_pk")
                    .map_err(|error| crate::gateway::invalid(error.to_string()))?;
                let listen = if request.listen.is_empty() {
                    DEFAULT_LISTEN
                } else {
                    request.listen.parse().map_err(|error| {
                        crate::gateway::invalid(format!(
                            "listen {:?} is not HOST:PORT: {error}",
                            request.listen
                        ))
                    })?
                };
                let config = ClientConfig {
                    direct: request.direct,
                    ..ClientConfig::new(exit)
                };
                self.apps
                    .start_client(config, listen)
                    .await
                    .map_err(apps_status)?;
            }
            other => return Err(apps_status(AppsError::Unknown(other.to_owned()))),
        }
        Ok(Response::new(self.app_info(&request.name)))
    }

    async fn stop_app(
        &self,
        request: Request<pb::StopAppRequest>,
    ) -> Result<Response<pb::AppInfo>, Status> {
        let name = request.into_inner().name;
        self.apps.stop(&name).await.map_err(apps_status)?;
        Ok(Response::new(self.app_info(&name)))
    }

    async fn add_forward(
        &self,
        request: Request<pb::Forward>,
    ) -> Result<Response<pb::Forward>, Status> {
        let request = request.into_inner();
        let invalid = |what: String| crate::gateway::invalid(what);
        let forward = Forwarded {
            listen: request.listen.parse().map_err(|error| {
                invalid(format!(
                    "listen {:?} is not HOST:PORT: {error}",
                    request.listen
                ))
            })?,
            dst: discovery_client::hexfield::pk_from_proto(&request.dst_pk, "dst_pk")
                .map_err(|error| invalid(error.to_string()))?,
            port: u16::try_from(request.port)
                .ok()
                .and_then(dmsg::addr::Port::new)
                .ok_or_else(|| invalid(format!("port must be 1..=65535, not {}", request.port)))?,
            direct: request.direct,
        };
        if !forward.direct && self.visor.route_setups().is_empty() {
            return Err(crate::gateway::gateway_status(
                tonic::Code::FailedPrecondition,
                "this visor knows no route-setup (--route-setup-pks): forward with direct",
                "no_route_setup",
            ));
        }
        self.forwarding.forward_on(forward).await.map_err(|error| {
            crate::gateway::gateway_status(
                tonic::Code::FailedPrecondition,
                error.to_string(),
                "cannot_listen",
            )
        })?;
        Ok(Response::new(forward_proto(&forward)))
    }

    async fn list_forwards(
        &self,
        _: Request<pb::ListForwardsRequest>,
    ) -> Result<Response<pb::ForwardList>, Status> {
        Ok(Response::new(pb::ForwardList {
            forwards: self
                .forwarding
                .forwards()
                .iter()
                .map(forward_proto)
                .collect(),
        }))
    }
}
