//! route-setup benchmarks: `cargo run --release -p setup-svc --example setup_bench [-- --quick]`.
//!
//! Four visors A–B–C–D in one process (stcp transports in a line, dmsg sessions to one
//! relay), their route gateways trusting route-setup; route-setup on dmsg port 36 of its own
//! dmsg client, behind the shared server stack, as the binary runs it. A visor's dmsg client
//! calls it through the shared client stack, as `Visor::dial_route` does:
//! - `grpc_dmsg_rtt_ms_p50`: a no-op call (`Breakers`) — the baseline, measured in the same
//!   run and interleaved with the setups;
//! - `hop_call_ms_p50`: one call of route-setup to one visor's gateway (ReserveIds), and
//!   `hop_round4_ms_p50`: four at once, as a setup's first round makes them — what a round
//!   costs on these two cores;
//! - `setup_2hop_ms_p50` (A → C), `setup_3hop_ms_p50` and `_p99` (A → D): `DialRouteGroup`,
//!   which reserves on every hop at once, then installs the intermediaries' and the
//!   destination's rules at once;
//! - `setup_3hop_vs_rtt`: the p50 ratio (goal ≤ 4: the issue counts one call plus three
//!   rounds; there are two rounds now);
//! - `setups_per_s`: 3-hop setups with 32 dialers at once (goal ≥ 300).
//!
//! The last lines are the summary, one `key=value` per line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../../visor/tests/common/mod.rs"]
mod common;
#[path = "../tests/support/line.rs"]
mod line;

use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::DmsgAddr;
use dmsg::identity::PublicKey;
use line::Line;
use middleware::{Breaker, BreakerConfig, ClientStackConfig, GrpcChannel, ServerStackConfig};
use observability::HealthStates;
use service::GrpcEndpoint;
use setup_svc::gateway::{Gateways, GrpcGateways};
use setup_svc::route_setup::{RouteSetup, RouteSetupConfig, StaticGraph};
use setup_svc::service::{BreakerBoard, ROUTE_SETUP_PORT, RouteSetupService};
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::route_setup_client::RouteSetupClient;
use skywire_proto::skywire::setup::v1::route_setup_server::RouteSetupServer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Sizes {
    samples: usize,
    concurrent_total: usize,
}

fn main() {
    bench::main(
        Sizes {
            samples: 200,
            concurrent_total: 1_000,
        },
        Sizes {
            samples: 1_000,
            concurrent_total: 4_000,
        },
        |sizes| async move { run(&sizes).await },
    );
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn dial(src: PublicKey, dst: PublicKey) -> pb::DialRouteGroupRequest {
    pb::DialRouteGroupRequest {
        src: src.to_string(),
        dst: dst.to_string(),
        src_port: 7,
        dst_port: 80,
        min_hops: 0,
        max_hops: 0,
    }
}

async fn timed<T>(call: impl Future<Output = T>) -> f64 {
    let started = Instant::now();
    call.await;
    started.elapsed().as_secs_f64() * 1e3
}

async fn run(sizes: &Sizes) -> Vec<(&'static str, String)> {
    let line = Line::start(false).await;
    let (net, route_setup, setup_key) = (&line.net, &line.route_setup, &line.setup_key);
    // route-setup as the binary runs it: its dmsg client, port 36, the server stack.
    let core = RouteSetup::new(
        Arc::new(GrpcGateways::new(route_setup.downgrade())),
        Arc::new(StaticGraph(line.graph())),
        RouteSetupConfig::default(),
    );
    let stop = CancellationToken::new();
    let health = HealthStates::new();
    let (endpoint, health_driver) = GrpcEndpoint::new(ServerStackConfig::default())
        .add_service(RouteSetupServer::new(RouteSetupService::new(
            core.clone(),
            BreakerBoard::default(),
        )))
        .build(&health, &stop)
        .unwrap();
    let _serving_health = health.component("bench");
    let served = tokio::spawn(endpoint.serve(
        dmsg::grpc::Incoming::new(route_setup.listen(ROUTE_SETUP_PORT).unwrap()),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let health_task = tokio::spawn(health_driver);

    // A visor's client, as `Visor::dial_route` builds it.
    let (a, c, d) = (
        net[0].visor.public_key(),
        net[2].visor.public_key(),
        net[3].visor.public_key(),
    );
    let channel: GrpcChannel = middleware::client_stack(
        dmsg::grpc::channel_any(
            net[0].visor.dmsg().downgrade(),
            DmsgAddr::new(setup_key.public(), ROUTE_SETUP_PORT),
        ),
        &ClientStackConfig::default(),
        Breaker::new("route-setup/bench", BreakerConfig::default()),
    );
    let client = RouteSetupClient::new(channel);
    for _ in 0..20 {
        client.clone().dial_route_group(dial(a, d)).await.unwrap();
    }

    // Route-setup's own calls to the gateways, as one round of a setup makes them: one
    // visor alone, and all four at once (what the first round does).
    let hops = GrpcGateways::new(route_setup.downgrade());
    let visors: Vec<PublicKey> = net.iter().map(|n| n.visor.public_key()).collect();
    let (mut hop_one, mut hop_four) = (Vec::new(), Vec::new());
    let (mut rtt, mut two, mut three) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.samples {
        hop_one.push(
            timed(async {
                let ids = hops.reserve_ids(visors[1], 1).await.unwrap();
                hops.release_ids(visors[1], ids).await.unwrap();
            })
            .await
                / 2.0,
        );
        hop_four.push(
            timed(async {
                futures::future::join_all(visors.iter().map(|v| hops.reserve_ids(*v, 1))).await
            })
            .await,
        );
        rtt.push(
            timed(async {
                client
                    .clone()
                    .breakers(pb::BreakersRequest {})
                    .await
                    .unwrap()
            })
            .await,
        );
        two.push(timed(async { client.clone().dial_route_group(dial(a, c)).await.unwrap() }).await);
        three.push(
            timed(async { client.clone().dial_route_group(dial(a, d)).await.unwrap() }).await,
        );
    }
    let rtt_p50 = percentile(&mut rtt, 0.5);
    let hop_one_p50 = percentile(&mut hop_one, 0.5);
    let hop_four_p50 = percentile(&mut hop_four, 0.5);
    let two_p50 = percentile(&mut two, 0.5);
    let three_p50 = percentile(&mut three, 0.5);
    let three_p99 = percentile(&mut three, 0.99);
    eprintln!(
        "rtt {rtt_p50:.2} ms, 2 hops {two_p50:.2} ms, 3 hops {three_p50:.2} ms (p99 {three_p99:.2})"
    );

    let started = Instant::now();
    let mut dialers = tokio::task::JoinSet::new();
    let per_dialer = sizes.concurrent_total / 32;
    for _ in 0..32 {
        let client = client.clone();
        dialers.spawn(async move {
            for _ in 0..per_dialer {
                client.clone().dial_route_group(dial(a, d)).await.unwrap();
            }
        });
    }
    while let Some(joined) = dialers.join_next().await {
        joined.unwrap();
    }
    let per_s = (per_dialer * 32) as f64 / started.elapsed().as_secs_f64();
    eprintln!("{per_s:.0} 3-hop setups/s with 32 dialers");

    stop.cancel();
    served.await.unwrap().unwrap();
    health_task.await.unwrap();
    core.drain().await;
    line.stop().await;
    vec![
        ("grpc_dmsg_rtt_ms_p50", format!("{rtt_p50:.3}")),
        ("hop_call_ms_p50", format!("{hop_one_p50:.3}")),
        ("hop_round4_ms_p50", format!("{hop_four_p50:.3}")),
        ("setup_2hop_ms_p50", format!("{two_p50:.3}")),
        ("setup_3hop_ms_p50", format!("{three_p50:.3}")),
        ("setup_3hop_ms_p99", format!("{three_p99:.3}")),
        ("setup_3hop_vs_rtt", format!("{:.2}", three_p50 / rtt_p50)),
        ("setups_per_s", format!("{per_s:.0}")),
    ]
}
