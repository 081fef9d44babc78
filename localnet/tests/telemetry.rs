//! Traces across processes, with every binary's default log settings: a call from outside
//! into an agent that has to ask discovery (over TCP, and over dmsg) is one trace in the
//! collector, spanning the caller's context, the agent and discovery; health checks,
//! reflection and `/metrics` scrapes in the same run export no span; every process tells its
//! instance apart with `service.instance.id`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use dmsg::entry::pk_to_proto;
use localnet::{ECHO_PORT, Fleet, FleetSpec, Role, StartOrder};
use skywire_proto::skywire::client::v1 as agent_pb;
use testkit::otlp::Span;

/// One fleet at a time (they share two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn one_trace_through_an_agent_to_discovery(over_dmsg: bool) {
    let _serial = SERIAL.lock().await;
    let collector = testkit::otlp::start_collector().await;
    let mut spec = FleetSpec::new(env!("CARGO_BIN_EXE_skywire-localnet"), 1, 2);
    spec.registration_backoff_cap = Duration::from_secs(2);
    spec.log_filter = None;
    spec.clients_discover_over_dmsg = over_dmsg;
    spec.env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint())];
    let mut fleet = Fleet::create(&spec).unwrap();
    fleet.start(StartOrder::Dependencies).unwrap();
    fleet.wait_converged(Duration::from_secs(30)).await.unwrap();

    // Health checks, reflection and scrapes: none of them may export a span.
    let mut admin_ports = vec![fleet.discovery_admin_port()];
    for role in fleet.roles() {
        fleet.health(role).await.unwrap();
        if role != Role::Discovery {
            admin_ports.push(fleet.member(role).unwrap().admin_port);
        }
    }
    for port in &admin_ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        testkit::metrics::scrape(addr).await;
        testkit::grpc::list_services_v1(testkit::grpc::connect(addr).await).await;
    }

    // The caller's own trace context, as a traced client would send it.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let caller_span = format!("{:016x}", rand::random::<u64>() | 1);
    let mut request = tonic::Request::new(agent_pb::ProbeRequest {
        pk: pk_to_proto(&fleet.member(Role::Client(1)).unwrap().pk),
        port: u32::from(ECHO_PORT),
        bytes: 512,
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    fleet
        .agent(Role::Client(0))
        .unwrap()
        .probe(request)
        .await
        .unwrap();
    // Members flush their spans when they stop.
    assert!(fleet.shutdown(Duration::from_secs(15)).await.is_empty());

    let spans = collector.spans();
    let traced: Vec<&(String, Span)> = spans
        .iter()
        .filter(|(_, span)| hex(&span.trace_id) == trace_id)
        .collect();
    let find = |service: &str, name: &str, kind: i32| {
        traced
            .iter()
            .find(|(s, span)| s == service && span.name == name && span.kind == kind)
            .map(|(_, span)| span)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span of {service} in the trace: {:?}",
                    traced
                        .iter()
                        .map(|(s, span)| (s, &span.name))
                        .collect::<Vec<_>>()
                )
            })
    };
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let probe = find("dmsg-cli", "skywire.client.v1.Agent/Probe", SERVER);
    assert_eq!(
        hex(&probe.parent_span_id),
        caller_span,
        "the agent joins the caller's trace"
    );
    let lookup = find(
        "dmsg-cli",
        "skywire.discovery.v1.Discovery/GetEntry",
        CLIENT,
    );
    let served = find(
        "dmsg-discovery",
        "skywire.discovery.v1.Discovery/GetEntry",
        SERVER,
    );
    assert_eq!(
        served.parent_span_id, lookup.span_id,
        "discovery joins the agent's call"
    );

    for (service, span) in &spans {
        let name = span.name.to_lowercase();
        assert!(
            !(name.contains("health") || name.contains("reflection") || name.contains("metrics")),
            "{service} exported a span for {}",
            span.name
        );
    }
    let instances: BTreeSet<(String, String)> = collector
        .resources()
        .into_iter()
        .map(|resource| {
            let get = |key: &str| {
                resource
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("no {key} in {resource:?}"))
            };
            (get("service.name"), get("service.instance.id"))
        })
        .collect();
    let agents = instances
        .iter()
        .filter(|(name, _)| name == "dmsg-cli")
        .count();
    assert_eq!(agents, 2, "two agents, two instance ids: {instances:?}");
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_an_agent_to_discovery_over_tcp_is_one_trace() {
    one_trace_through_an_agent_to_discovery(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_an_agent_to_discovery_over_dmsg_is_one_trace() {
    one_trace_through_an_agent_to_discovery(true).await;
}
