//! The scaffolding of setup-svc's tests and bench: four visors A–B–C–D in one process, stcp
//! transports A–B, B–C, C–D, dmsg sessions to one relay, their route gateways trusting one
//! route-setup key, and route-setup's dmsg client with a session. Include it with
//! `#[path]` next to `visor/tests/common` (included as `common`).

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use dmsg::identity::{Keypair, PublicKey};
use setup_svc::paths::Graph;
use visor::gateway::TrustedKeys;
use visor::node::VisorConfig;
use visor::router::rule::TransportId;

use crate::common;

/// See the module docs.
pub struct Line {
    pub relay: common::Relay,
    pub net: Vec<common::Node>,
    pub gateways: common::ServedGateways,
    pub transports: Vec<(PublicKey, PublicKey, TransportId)>,
    pub setup_key: Keypair,
    /// route-setup's dmsg client (its key is `setup_key`), with a session.
    pub route_setup: dmsg::client::Client,
}

impl Line {
    /// Starts the line; with `visors_ask_route_setup` the visors also dial routes through
    /// it (`VisorConfig::route_setups`).
    pub async fn start(visors_ask_route_setup: bool) -> Self {
        let relay = common::Relay::start().await;
        let setup_key = Keypair::generate();
        let config = VisorConfig {
            route_setups: if visors_ask_route_setup {
                vec![setup_key.public()]
            } else {
                Vec::new()
            },
            ..VisorConfig::default()
        };
        let net = common::nodes_on_with(4, &relay, config).await;
        let gateways = common::ServedGateways::start(&net, |_| TrustedKeys {
            route_setup: [setup_key.public()].into(),
            ..TrustedKeys::default()
        });
        let mut transports = Vec::new();
        for i in 0..3 {
            let id = common::link(&net[i], &net[i + 1]).await;
            transports.push((net[i].visor.public_key(), net[i + 1].visor.public_key(), id));
        }
        let route_setup = relay.client(&setup_key);
        common::wait_until("route-setup has a session", || {
            !route_setup.connected_servers().is_empty()
        })
        .await;
        Self {
            relay,
            net,
            gateways,
            transports,
            setup_key,
            route_setup,
        }
    }

    /// Serves route-setup (the core over this line's graph and gateways) on dmsg port 36 of
    /// its client, as the binary does; returns the core and the server task.
    pub fn serve_route_setup(
        &self,
    ) -> (
        setup_svc::route_setup::RouteSetup,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        use setup_svc::service::{BreakerBoard, ROUTE_SETUP_PORT, RouteSetupService};
        let core = setup_svc::route_setup::RouteSetup::new(
            std::sync::Arc::new(setup_svc::gateway::GrpcGateways::new(
                self.route_setup.downgrade(),
            )),
            std::sync::Arc::new(setup_svc::route_setup::StaticGraph(self.graph())),
            setup_svc::route_setup::RouteSetupConfig::default(),
        );
        let listener = self.route_setup.listen(ROUTE_SETUP_PORT).unwrap();
        let served = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    skywire_proto::skywire::setup::v1::route_setup_server::RouteSetupServer::new(
                        RouteSetupService::new(core.clone(), BreakerBoard::default()),
                    ),
                )
                .serve_with_incoming(dmsg::grpc::Incoming::new(listener)),
        );
        (core, served)
    }

    /// The transport graph of the line.
    pub fn graph(&self) -> Graph {
        Graph::new(self.transports.clone())
    }

    /// Stops everything, gateways first.
    pub async fn stop(self) {
        self.gateways.stop().await;
        self.route_setup.close().await;
        for node in &self.net {
            node.visor.shutdown().await;
        }
        self.relay.stop().await;
    }
}
