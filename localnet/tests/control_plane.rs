//! The control plane as real processes (issue 14's Done-when): `dmsg-discovery`, a
//! `dmsg-server`, four `skywire-visor`s, `transport-setup` (seeded with the server only, no
//! discovery URL) and `route-setup`. An operator lists both setup services through reflection
//! and calls them on TCP; transport-setup builds A–B, B–C, C–D on the visors over dmsg and
//! they appear in discovery's registry; route-setup sets a 3-hop route group A → D up on
//! every hop's gateway; a key A does not trust is refused at its gateway, counted, and
//! served nothing. Visor A's process forwards a local port to a service D publishes: each
//! connection is a route group A dials through route-setup over A–B–C–D, bytes both ways.
//! With an OTLP collector, such a dial is one trace from A's span across route-setup and
//! every hop's gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use discovery_client::hexfield::{id_from_proto, pk_to_proto};
use discovery_client::registry::{Registry, RegistryClient};
use dmsg::identity::PublicKey;
use localnet::{Fleet, FleetSpec, Role, StartOrder};
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::route_setup_client::RouteSetupClient;
use skywire_proto::skywire::setup::v1::transport_setup_client::TransportSetupClient;
use skywire_proto::skywire::visor::v1 as visor_pb;
use skywire_proto::skywire::visor::v1::transport_gateway_client::TransportGatewayClient;
use skywire_proto::skywire::visor::v1::visor_control_client::VisorControlClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_skywire-localnet");

/// One fleet at a time (they share two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn channel(fleet: &Fleet, role: Role) -> Channel {
    testkit::grpc::connect(loopback(fleet.member(role).unwrap().admin_port)).await
}

/// Calls `call` until it succeeds or `deadline` passes (the members connect to dmsg in the
/// background); returns its answer or panics with the last error.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match call().await {
            Ok(answer) => return answer,
            Err(status) if tokio::time::Instant::now() < until => {
                tracing::debug!(%status, what, "not yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => panic!("{what}: {status}"),
        }
    }
}

/// Calls `call` until it fails with a dmsg refusal (not merely "no route yet": the stranger
/// connects in the background) or `deadline` passes; returns the failure.
async fn eventually_err<T, F, Fut>(what: &str, deadline: Duration, mut call: F) -> tonic::Status
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match call().await {
            Ok(answer) => panic!("{what} was served: {answer:?}"),
            Err(status) if dmsg::grpc::refusal(&status).is_some() => return status,
            Err(status) => {
                assert!(tokio::time::Instant::now() < until, "{what}: {status}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Sends `payload` through A's forward, half-closes, and returns the whole reply; retried
/// while A closes the connection at once (its dial failed: the members connect to dmsg in
/// the background).
async fn through_the_forward(forward: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut tcp = tokio::net::TcpStream::connect(forward).await.unwrap();
        let mut reply = Vec::new();
        let exchange = async {
            tcp.write_all(payload).await?;
            tcp.shutdown().await?;
            tcp.read_to_end(&mut reply).await
        };
        let done = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .expect("a reply within 30 s");
        match done {
            Ok(_) if !reply.is_empty() => return reply,
            // Closed at once (or reset while sending): the dial failed.
            outcome => assert!(
                tokio::time::Instant::now() < until,
                "no reply through the forward: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A value of `role`'s `/metrics` (0 when the series is not there yet).
async fn metric(fleet: &Fleet, role: Role, series: &str) -> f64 {
    let text = testkit::metrics::scrape(loopback(fleet.member(role).unwrap().admin_port)).await;
    testkit::metrics::value(&text, series).unwrap_or(0.0)
}

/// The fleet of these tests (with `env` for every member), started, with transports A–B
/// (stcp), B–C (dmsg) and C–D (stcp) built by an operator through transport-setup and seen in
/// discovery's registry (Done-when a and f). A forwards two local ports to route port 80 of
/// D, which publishes an echo service there: one through route-setup, one direct. Returns
/// the fleet, the visors' keys and A's two forwards.
async fn fleet_with_a_line_of_transports(
    env: Vec<(String, String)>,
    route_setup_args: &[&str],
) -> (Fleet, Vec<PublicKey>, Forwards) {
    fleet_with(env, route_setup_args, false).await
}

/// [`fleet_with_a_line_of_transports`]; with `apps`, C runs skysocks, A a skysocks-client
/// through it (a 2-hop route A–B–C) and B a direct one (its dmsg transport to C).
async fn fleet_with(
    env: Vec<(String, String)>,
    route_setup_args: &[&str],
    apps: bool,
) -> (Fleet, Vec<PublicKey>, Forwards) {
    // Two servers: visors and services spread over them, so every control-plane call may
    // have to cross to the other one (found through discovery).
    let mut spec = FleetSpec::new(LAUNCHER, 2, 0);
    spec.env = env;
    spec.route_setup_args = route_setup_args.iter().map(|a| (*a).to_owned()).collect();
    spec.visors = 4;
    spec.setup_services = true;
    spec.registration_backoff_cap = Duration::from_secs(2);
    let mut fleet = Fleet::create(&spec).unwrap();
    let free = || loopback(testkit::free_port());
    let forwards = Forwards {
        routed: free(),
        direct: free(),
        socks_routed: free(),
        socks_direct: free(),
    };
    let service = testkit::tcp::echo_after_eof().await;
    let d = fleet.member(Role::Visor(3)).unwrap().pk;
    fleet.member_mut(Role::Visor(0)).unwrap().add_args([
        "--forward".to_owned(),
        format!("{}={d}:80", forwards.routed),
        "--forward-direct".to_owned(),
        format!("{}={d}:80", forwards.direct),
    ]);
    fleet
        .member_mut(Role::Visor(3))
        .unwrap()
        .add_args(["--publish".to_owned(), format!("80={service}")]);
    if apps {
        let c = fleet.member(Role::Visor(2)).unwrap().pk;
        fleet
            .member_mut(Role::Visor(2))
            .unwrap()
            .add_args(["--skysocks"]);
        fleet.member_mut(Role::Visor(0)).unwrap().add_args([
            "--skysocks-client".to_owned(),
            c.to_string(),
            "--socks-listen".to_owned(),
            forwards.socks_routed.to_string(),
        ]);
        fleet.member_mut(Role::Visor(1)).unwrap().add_args([
            "--skysocks-client".to_owned(),
            c.to_string(),
            "--skysocks-client-direct".to_owned(),
            "--socks-listen".to_owned(),
            forwards.socks_direct.to_string(),
        ]);
    }
    fleet.start(StartOrder::Dependencies).unwrap();
    let visors: Vec<_> = fleet
        .visors()
        .iter()
        .map(|role| fleet.member(*role).unwrap().pk)
        .collect();

    // Through reflection (v1 and v1alpha) and health, as grpcurl sees them, once each
    // reports SERVING (as a load balancer would wait).
    for role in [Role::TransportSetup, Role::RouteSetup] {
        testkit::grpc::wait_health(
            channel(&fleet, role).await,
            "",
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    }
    testkit::grpc::assert_serves_exactly(
        channel(&fleet, Role::TransportSetup).await,
        &["skywire.setup.v1.TransportSetup"],
    )
    .await;
    testkit::grpc::assert_serves_exactly(
        channel(&fleet, Role::RouteSetup).await,
        &["skywire.setup.v1.RouteSetup"],
    )
    .await;

    // (a) and (f): transport-setup knows only the seeded server, and builds A–B, B–C, C–D.
    let mut operator = TransportSetupClient::new(channel(&fleet, Role::TransportSetup).await);
    let mut ids = Vec::new();
    for (i, kind) in ["stcp", "dmsg", "stcp"].into_iter().enumerate() {
        let request = pb::AddTransportRequest {
            from: pk_to_proto(&visors[i]),
            to: pk_to_proto(&visors[i + 1]),
            r#type: kind.into(),
        };
        let info = eventually("AddTransport", Duration::from_secs(30), || {
            let mut operator = operator.clone();
            let request = request.clone();
            async move { operator.add_transport(request).await }
        })
        .await
        .into_inner();
        assert_eq!(info.r#type, kind);
        ids.push(id_from_proto(&info.id, "id").unwrap());
    }
    let listed = operator
        .list_transports(pb::ListTransportsRequest {
            pk: pk_to_proto(&visors[1]),
        })
        .await
        .unwrap()
        .into_inner();
    // B holds A–B and B–C (and, with the apps, the direct client's own transport to C).
    for id in &ids[..2] {
        assert!(
            listed
                .transports
                .iter()
                .any(|t| id_from_proto(&t.id, "id").unwrap() == *id),
            "{listed:?}"
        );
    }
    assert_eq!(
        listed.transports.len(),
        if apps { 3 } else { 2 },
        "{listed:?}"
    );
    let registry = RegistryClient::over_tcp(fleet.discovery_url()).unwrap();
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while registry.transport(id).await.unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "transport {} never registered",
                hex::encode(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    (fleet, visors, forwards)
}

/// Visor A's forwards to D's echo service.
#[derive(Clone, Copy, Debug)]
struct Forwards {
    /// Through route-setup (`--forward`).
    routed: SocketAddr,
    /// Direct (`--forward-direct`).
    direct: SocketAddr,
    /// A's skysocks-client (through route-setup, to C), when the fleet runs the apps.
    socks_routed: SocketAddr,
    /// B's skysocks-client (direct, to C).
    socks_direct: SocketAddr,
}

/// Runs `skywire-cli ARGS…` (as `skywire-localnet member skywire-cli`); success and output.
fn skywire_cli(args: &[&str]) -> (bool, String) {
    localnet::launcher::run_skywire_cli(std::path::Path::new(LAUNCHER), args).unwrap()
}

/// Runs the real curl through the SOCKS5 proxy at `socks` (names resolved at the exit);
/// `None` after a loud SKIPPED line only if curl is not installed (CI installs it).
fn curl(socks: SocketAddr, url: &str) -> Option<std::process::Output> {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--socks5-hostname"])
        .arg(socks.to_string())
        .arg(url)
        .output();
    match output {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("\n==== SKIPPED: curl is not installed (CI installs it) ====\n");
            None
        }
        Err(error) => panic!("curl: {error}"),
    }
}

/// Runs curl until it gets `want` (the client dials its tunnel in the background).
fn curl_until(socks: SocketAddr, url: &str, want: &str) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Some(output) = curl(socks, url) else {
            return;
        };
        let body = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && body == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "curl through {socks}: {} {body:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_build_transports_and_a_three_hop_route_group_through_the_setup_services() {
    let _serial = SERIAL.lock().await;
    let (mut fleet, visors, forwards) = fleet_with_a_line_of_transports(Vec::new(), &[]).await;

    // (b) Visor A's process dials D through route-setup for a connection to its forward: the
    // only route is A–B–C–D, so B and C each forward both directions; 256 KiB go each way.
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let reply = through_the_forward(forwards.routed, &payload).await;
    assert_eq!(reply.len(), 5 + payload.len());
    assert!(
        reply.starts_with(b"echo:") && reply[5..] == payload[..],
        "the reply differs"
    );
    for (role, series) in [
        (
            Role::Visor(0),
            r#"visor_forward_connections_total{outcome="done",side="forward"}"#,
        ),
        (
            Role::Visor(3),
            r#"visor_forward_connections_total{outcome="done",side="publish"}"#,
        ),
        (Role::Visor(1), r#"visor_rules{type="intermediary"}"#),
        (Role::Visor(2), r#"visor_rules{type="intermediary"}"#),
    ] {
        let want = if series.starts_with("visor_rules") {
            2.0
        } else {
            1.0
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = metric(&fleet, role, series).await;
            if got == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{role} {series}: {got}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // route-setup: a 3-hop route group from A to D, set up on every hop.
    // What the visors' control API shows of it: B holds an intermediary rule of each
    // direction; A's transports include the one to B.
    let mut control = VisorControlClient::new(channel(&fleet, Role::Visor(1)).await);
    let held = control
        .routes(visor_pb::RoutesRequest {})
        .await
        .unwrap()
        .into_inner();
    let intermediaries = held
        .rules
        .iter()
        .filter(|rule| rule.r#type == "intermediary")
        .count();
    assert_eq!(intermediaries, 2, "{held:?}");
    let mut control = VisorControlClient::new(channel(&fleet, Role::Visor(0)).await);
    let transports = control
        .list_transports(visor_pb::ListTransportsRequest {})
        .await
        .unwrap()
        .into_inner()
        .transports;
    assert!(
        transports
            .iter()
            .any(|t| t.remote_pk == pk_to_proto(&visors[1]) && t.r#type == "stcp"),
        "{transports:?}"
    );

    let mut routes = RouteSetupClient::new(channel(&fleet, Role::RouteSetup).await);
    let request = dial_request(&visors[0], &visors[3]);
    let answer = eventually("DialRouteGroup", Duration::from_secs(20), || {
        let mut routes = routes.clone();
        let request = request.clone();
        async move { routes.dial_route_group(request).await }
    })
    .await
    .into_inner();
    assert_eq!(answer.forward.unwrap().hops.len(), 3);
    assert_eq!(answer.reverse.unwrap().hops.len(), 3);
    let breakers = routes
        .breakers(pb::BreakersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(breakers.breakers.is_empty(), "{breakers:?}");

    // (c) A key visor A does not trust: its stream to the gateway is refused as it opens
    // (NOT_ALLOWED), counted, and no gateway RPC runs.
    let visor_a = loopback(fleet.member(Role::Visor(0)).unwrap().admin_port);
    // Every call the transport gateway answered, whatever the method and code.
    let handled = |text: &str| -> f64 {
        text.lines()
            .filter(|line| {
                line.starts_with("grpc_server_handled_total{")
                    && line.contains(r#"grpc_service="skywire.visor.v1.TransportGateway""#)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = testkit::metrics::scrape(visor_a).await;
    let server = fleet.member(Role::Server(0)).unwrap();
    let seed: dmsg::addr::ServerAddr = format!("{}@127.0.0.1:{}", server.pk, server.port.unwrap())
        .parse()
        .unwrap();
    let stranger = dmsg::client::Client::new(
        dmsg::identity::Keypair::generate(),
        dmsg::client::ClientConfig {
            lifecycle: dmsg::client::LifecycleConfig {
                include_default_seeds: false,
                seeds: vec![seed],
                // It finds A and route-setup wherever they are homed (two servers).
                discovery: dmsg::client::DiscoveryTarget::Tcp(fleet.discovery_url().to_owned()),
                publish_entry: false,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let untrusted = TransportGatewayClient::new(dmsg::grpc::channel_to(
        stranger.downgrade(),
        dmsg::addr::DmsgAddr::new(visors[0], visor::gateway::TRANSPORT_GATEWAY_PORT),
    ));
    let refused = eventually_err("the untrusted call", Duration::from_secs(20), || {
        let mut untrusted = untrusted.clone();
        async move {
            untrusted
                .list_transports(visor_pb::ListTransportsRequest {})
                .await
        }
    })
    .await;
    assert_eq!(
        dmsg::grpc::refusal(&refused),
        Some(dmsg::wire::Code::NotAllowed),
        "{refused:?}"
    );
    drop(untrusted);
    // On dmsg, route-setup sets up only the caller's own route groups.
    let route_setup_pk = fleet.member(Role::RouteSetup).unwrap().pk;
    let mut impostor = RouteSetupClient::new(dmsg::grpc::channel_to(
        stranger.downgrade(),
        dmsg::addr::DmsgAddr::new(route_setup_pk, setup_svc::service::ROUTE_SETUP_PORT),
    ));
    let denied = impostor
        .dial_route_group(request.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        skywire_proto::status::reason_in(&denied, setup_svc::service::ERROR_DOMAIN).as_deref(),
        Some("not_source")
    );
    drop(impostor);
    stranger.close().await;
    let after = testkit::metrics::scrape(visor_a).await;
    assert_eq!(
        testkit::metrics::value(
            &after,
            r#"visor_gateway_refused_total{gateway="transport"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        handled(&before) >= 1.0,
        "A's gateway served AddTransport:\n{before}"
    );
    assert_eq!(
        handled(&after),
        handled(&before),
        "no RPC ran for the stranger"
    );

    // Both serve Prometheus text on the same port.
    for role in [Role::TransportSetup, Role::RouteSetup] {
        let text = testkit::metrics::scrape(loopback(fleet.member(role).unwrap().admin_port)).await;
        let families = testkit::metrics::families(&text);
        for family in ["grpc_server_handled_total", "process_resident_memory_bytes"] {
            assert!(families.contains_key(family), "{role}: no {family}");
        }
    }

    // The direct path (seed 3144) needs no route-setup: with route-setup killed, A's routed
    // forward fails, and its direct forward still reaches D (one hop over a transport A
    // makes to D on demand).
    fleet.member_mut(Role::RouteSetup).unwrap().kill().unwrap();
    let reply = through_the_forward(forwards.direct, &payload).await;
    assert!(
        reply.starts_with(b"echo:") && reply[5..] == payload[..],
        "the direct reply differs"
    );
    assert_eq!(
        metric(
            &fleet,
            Role::Visor(0),
            r#"visor_forward_connections_total{outcome="done",side="forward"}"#
        )
        .await,
        2.0
    );
    let mut tcp = tokio::net::TcpStream::connect(forwards.routed)
        .await
        .unwrap();
    let mut nothing = Vec::new();
    let _ = tcp.write_all(b"x").await;
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(40), tcp.read_to_end(&mut nothing)).await;
    assert!(
        nothing.is_empty(),
        "the routed forward worked without route-setup"
    );
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (g) One route dial is one trace: visor A's `visor.dial_route` span (a connection to its
/// forward) → its client call to route-setup → route-setup's server span → its client call to
/// each hop's route gateway → that visor's server span, though every hop is gRPC over dmsg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_dial_is_one_trace_from_the_visor_across_route_setup_and_every_hop() {
    let _serial = SERIAL.lock().await;
    let collector = testkit::otlp::start_collector().await;
    let (mut fleet, _, forwards) = fleet_with_a_line_of_transports(
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint())],
        &[],
    )
    .await;
    let reply = through_the_forward(forwards.routed, b"traced").await;
    assert_eq!(reply, b"echo:traced");
    // Members flush their spans when they stop.
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");

    let all = collector.spans();
    let root = all
        .iter()
        .find(|(service, span)| service == "skywire-visor" && span.name == "visor.dial_route")
        .unwrap_or_else(|| panic!("no visor.dial_route span among {} spans", all.len()));
    let trace_id = hex_of(&root.1.trace_id);
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    let spans: Vec<(String, testkit::otlp::Span)> = collector
        .spans()
        .into_iter()
        .filter(|(_, span)| hex_of(&span.trace_id) == trace_id)
        .collect();
    let listing = || {
        spans
            .iter()
            .map(|(service, span)| format!("{service}: {} ({})", span.name, span.kind))
            .collect::<Vec<_>>()
    };
    let span_named = |service: &str, name: &str, kind: i32| {
        spans
            .iter()
            .find(|(s, span)| s == service && span.name == name && span.kind == kind)
            .unwrap_or_else(|| panic!("no {service} {name} ({kind}) span: {:?}", listing()))
    };
    const DIAL: &str = "skywire.setup.v1.RouteSetup/DialRouteGroup";
    let asked = span_named("skywire-visor", DIAL, CLIENT);
    assert_eq!(
        asked.1.parent_span_id, root.1.span_id,
        "A's call is in its dial"
    );
    let dial = span_named("route-setup", DIAL, SERVER);
    assert_eq!(
        dial.1.parent_span_id, asked.1.span_id,
        "route-setup serves A's call"
    );
    for (method, hops) in [
        ("ReserveIds", 4),
        ("AddIntermediaryRules", 2),
        ("AddEdgeRules", 1),
    ] {
        let name = format!("skywire.visor.v1.RouteGateway/{method}");
        let calls: Vec<_> = spans
            .iter()
            .filter(|(service, span)| {
                service == "route-setup" && span.name == name && span.kind == CLIENT
            })
            .collect();
        assert_eq!(calls.len(), hops, "{method} calls: {:?}", listing());
        for (_, call) in calls {
            let served = spans.iter().find(|(service, span)| {
                service == "skywire-visor"
                    && span.name == name
                    && span.kind == SERVER
                    && span.parent_span_id == call.span_id
            });
            assert!(
                served.is_some(),
                "no visor served {method} as a child of route-setup's call: {:?}",
                listing()
            );
        }
    }
    collector.stop().await;
}

/// Issue 15's Done-when (first part): the real curl through skysocks-client → a 2-hop route
/// (A–B–C, through route-setup) → skysocks at C → a loopback HTTP server; the same from B's
/// direct client, also while C's destination breaker is open and with route-setup stopped;
/// skywire-cli stops, starts and lists B's proxy and adds a forward; when the exit restarts
/// with route-setup still down, the direct proxy heals and the routed one answers a clear
/// SOCKS error (0x03) at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_skysocks_over_a_two_hop_route_and_direct() {
    let _serial = SERIAL.lock().await;
    // A frozen hop fails its call within 2 s (a third of the setup deadline).
    let (mut fleet, visors, forwards) =
        fleet_with(Vec::new(), &["--request-timeout-secs", "6"], true).await;
    let http = localnet::http::serve_text(b"hello through skysocks")
        .await
        .unwrap();
    let url = format!("http://localhost:{}/hello", http.port());
    let want = "hello through skysocks";
    tokio::task::block_in_place(|| {
        curl_until(forwards.socks_routed, &url, want);
        curl_until(forwards.socks_direct, &url, want);
        // Several connections over the one tunnel: no route setup each.
        for _ in 0..5 {
            curl_until(forwards.socks_routed, &url, want);
        }
    });
    // A connection refused at the exit is SOCKS reply 0x05; curl says so.
    let closed = format!("http://127.0.0.1:{}/", testkit::free_port());
    if let Some(output) = tokio::task::block_in_place(|| curl(forwards.socks_routed, &closed)) {
        assert!(!output.status.success());
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains("onnection refused") || said.contains("5"),
            "{said}"
        );
    }

    // The exit's breaker open (C frozen while three routed setups to it fail): route-setup
    // refuses C at once, and the direct proxy does not care.
    fleet
        .member(Role::Visor(2))
        .unwrap()
        .signal("STOP")
        .unwrap();
    let routes = RouteSetupClient::new(channel(&fleet, Role::RouteSetup).await);
    let failures = futures::future::join_all((0..3).map(|_| {
        let mut routes = routes.clone();
        let request = dial_request(&visors[0], &visors[2]);
        async move { routes.dial_route_group(request).await }
    }))
    .await;
    fleet
        .member(Role::Visor(2))
        .unwrap()
        .signal("CONT")
        .unwrap();
    assert!(failures.iter().all(Result::is_err), "{failures:?}");
    let refused = routes
        .clone()
        .dial_route_group(dial_request(&visors[0], &visors[2]))
        .await
        .unwrap_err();
    assert_eq!(
        skywire_proto::status::reason_in(&refused, "skywire").as_deref(),
        Some("breaker_open"),
        "{refused:?}"
    );
    tokio::task::block_in_place(|| curl_until(forwards.socks_direct, &url, want));

    // route-setup stopped: the direct client does not need it.
    fleet.member_mut(Role::RouteSetup).unwrap().kill().unwrap();
    tokio::task::block_in_place(|| curl_until(forwards.socks_direct, &url, want));

    // skywire-cli drives B's proxy through its control API: stop, start elsewhere, list.
    let b_admin = loopback(fleet.member(Role::Visor(1)).unwrap().admin_port).to_string();
    let c = fleet.member(Role::Visor(2)).unwrap().pk.to_string();
    let (ok, out) = skywire_cli(&["--rpc", &b_admin, "proxy", "stop"]);
    assert!(
        ok && out.contains("skysocks-client") && out.contains(" no "),
        "{out}"
    );
    assert!(
        std::net::TcpStream::connect(forwards.socks_direct).is_err(),
        "the stopped proxy still listens"
    );
    let moved = loopback(testkit::free_port());
    let (ok, out) = skywire_cli(&[
        "--rpc",
        &b_admin,
        "proxy",
        "start",
        "--direct",
        &c,
        "--listen",
        &moved.to_string(),
    ]);
    assert!(ok && out.contains(" yes "), "{out}");
    tokio::task::block_in_place(|| curl_until(moved, &url, want));
    let (ok, out) = skywire_cli(&["--rpc", &b_admin, "visor", "apps"]);
    assert!(
        ok && out.contains("tunnel to") && out.contains("up"),
        "{out}"
    );
    let (ok, out) = skywire_cli(&["--rpc", &b_admin, "proxy", "start", &c]);
    assert!(!ok && out.contains("running already"), "{out}");

    // skywire-cli fwd: B exposes D's published echo service on a new local port, directly.
    let d = fleet.member(Role::Visor(3)).unwrap().pk.to_string();
    let exposed = loopback(testkit::free_port());
    let (ok, out) = skywire_cli(&[
        "--rpc",
        &b_admin,
        "fwd",
        &exposed.to_string(),
        &format!("{d}:80"),
        "--direct",
    ]);
    assert!(ok && out.contains("direct"), "{out}");
    let reply = through_the_forward(exposed, b"via fwd").await;
    assert_eq!(reply, b"echo:via fwd");
    let (ok, out) = skywire_cli(&["--rpc", &b_admin, "fwd"]);
    assert!(ok && out.contains(&exposed.to_string()), "{out}");

    // The exit restarts while route-setup is still down: B's direct proxy heals by itself;
    // A's routed proxy cannot set a new tunnel up and says so at once — SOCKS reply 0x03,
    // which curl reports as "(3)" — instead of hanging.
    fleet.member_mut(Role::Visor(2)).unwrap().kill().unwrap();
    fleet.member_mut(Role::Visor(2)).unwrap().start().unwrap();
    tokio::task::block_in_place(|| curl_until(moved, &url, want));
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Some(output) = tokio::task::block_in_place(|| curl(forwards.socks_routed, &url)) {
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() && said.contains("(3)") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the routed proxy did not report its missing tunnel: {} {said}",
            output.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// The route reservations a visor holds now, from its `/metrics`.
async fn reservations(fleet: &Fleet, role: Role) -> f64 {
    let text = testkit::metrics::scrape(loopback(fleet.member(role).unwrap().admin_port)).await;
    testkit::metrics::value(&text, "visor_route_reservations").unwrap_or_else(|| panic!("{text}"))
}

/// (e) route-setup killed after the reservations and before any rule: the caller gets an
/// error at once (well within its deadline), and every hop's reservation expires (ROUTING.md
/// §5.2: 30 s) — nothing leaks. B is frozen for a moment so the setup is caught between its
/// two rounds: A, C and D have reserved, B's answer is still on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_setup_killed_mid_setup_leaks_no_reservation() {
    let _serial = SERIAL.lock().await;
    let (mut fleet, visors, _) = fleet_with_a_line_of_transports(Vec::new(), &[]).await;
    let mut routes = RouteSetupClient::new(channel(&fleet, Role::RouteSetup).await);
    // One setup first, so route-setup holds a channel to every visor (each on one of two
    // servers): what is measured below is the kill, not a first contact under load. Its
    // rules idle out within the wait below.
    let first = dial_request(&visors[0], &visors[3]);
    eventually("a first setup", Duration::from_secs(20), || {
        let (mut routes, first) = (routes.clone(), first.clone());
        async move { routes.dial_route_group(first).await }
    })
    .await;
    // What each visor holds now (A: the first setup's two IDs, which nobody installs).
    let mut held = Vec::new();
    for role in fleet.visors() {
        held.push(reservations(&fleet, role).await);
    }
    fleet
        .member(Role::Visor(1))
        .unwrap()
        .signal("STOP")
        .unwrap();
    let mut request = tonic::Request::new(dial_request(&visors[0], &visors[3]));
    let deadline = Duration::from_secs(10);
    request.set_timeout(deadline);
    let started = tokio::time::Instant::now();
    let dialing = tokio::spawn(async move { routes.dial_route_group(request).await });
    // The reservations on A, C and D land; B, frozen, cannot answer.
    let reserved_until = tokio::time::Instant::now() + Duration::from_secs(6);
    for (n, role) in [
        (0, Role::Visor(0)),
        (2, Role::Visor(2)),
        (3, Role::Visor(3)),
    ] {
        while reservations(&fleet, role).await <= held[n] {
            assert!(
                tokio::time::Instant::now() < reserved_until,
                "{role} never reserved"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    fleet.member_mut(Role::RouteSetup).unwrap().kill().unwrap();
    let answer = dialing.await.unwrap();
    let failed = answer.expect_err("route-setup was killed");
    assert!(
        started.elapsed() < deadline,
        "the error came after the deadline: {failed:?}"
    );
    fleet
        .member(Role::Visor(1))
        .unwrap()
        .signal("CONT")
        .unwrap();
    for (n, role) in [
        (0, Role::Visor(0)),
        (2, Role::Visor(2)),
        (3, Role::Visor(3)),
    ] {
        assert!(
            reservations(&fleet, role).await > held[n],
            "{role} held nothing more"
        );
    }

    // The reservation timeout (30 s) and a collection pass (every 5 s) later, none is left.
    let expired_by = tokio::time::Instant::now() + Duration::from_secs(50);
    // (The first setup's rules idle out meanwhile: 30 s keep-alive and a collection pass.)
    for role in fleet.visors() {
        loop {
            let text =
                testkit::metrics::scrape(loopback(fleet.member(role).unwrap().admin_port)).await;
            let held: f64 = ["reservations", "forward", "consume", "intermediary"]
                .iter()
                .map(|kind| {
                    let series = if *kind == "reservations" {
                        "visor_route_reservations".to_owned()
                    } else {
                        format!("visor_rules{{type=\"{kind}\"}}")
                    };
                    testkit::metrics::value(&text, &series).unwrap_or_else(|| panic!("{text}"))
                })
                .sum();
            if held == 0.0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < expired_by,
                "{role} still holds reservations or rules:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// Calls of `method` of `service` a member's gateway served, whatever their code.
async fn served(fleet: &Fleet, role: Role, service: &str, method: &str) -> f64 {
    let text = testkit::metrics::scrape(loopback(fleet.member(role).unwrap().admin_port)).await;
    text.lines()
        .filter(|line| {
            line.starts_with("grpc_server_handled_total{")
                && line.contains(&format!("grpc_method=\"{method}\""))
                && line.contains(&format!("grpc_service=\"{service}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// ReserveIds calls `role`'s route gateway served.
async fn reserves(fleet: &Fleet, role: Role) -> f64 {
    served(fleet, role, "skywire.visor.v1.RouteGateway", "ReserveIds").await
}

fn dial_request(src: &PublicKey, dst: &PublicKey) -> pb::DialRouteGroupRequest {
    pb::DialRouteGroupRequest {
        src: pk_to_proto(src),
        dst: pk_to_proto(dst),
        src_port: 7,
        dst_port: 80,
        min_hops: 0,
        max_hops: 0,
    }
}

/// (d) The destination breaker on real processes. A frozen intermediate hop (B) fails
/// setups without opening D's breaker. With D frozen, 3 failed setups open D's breaker; the
/// 4th is refused `breaker_open` before any gateway call (A's ReserveIds count does not
/// move); after the (shortened) open time, 100 dials at once let exactly one probe reach the
/// gateways, and with D back that probe closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_destination_opens_its_breaker_and_one_probe_closes_it() {
    let _serial = SERIAL.lock().await;
    let (mut fleet, visors, _) = fleet_with_a_line_of_transports(
        Vec::new(),
        // A frozen hop fails its call within 2 s (a third of the setup deadline).
        &["--breaker-open-secs", "3", "--request-timeout-secs", "6"],
    )
    .await;
    let routes = RouteSetupClient::new(channel(&fleet, Role::RouteSetup).await);
    let (a, d) = (visors[0], visors[3]);
    let breakers = || {
        let mut routes = routes.clone();
        async move {
            routes
                .breakers(pb::BreakersRequest {})
                .await
                .unwrap()
                .into_inner()
                .breakers
        }
    };
    let dial = |src: PublicKey, dst: PublicKey| {
        let mut routes = routes.clone();
        async move { routes.dial_route_group(dial_request(&src, &dst)).await }
    };

    // B frozen: setups fail at B, an intermediate hop; D's breaker stays closed.
    fleet
        .member(Role::Visor(1))
        .unwrap()
        .signal("STOP")
        .unwrap();
    let failures = futures::future::join_all((0..4).map(|_| dial(a, d))).await;
    fleet
        .member(Role::Visor(1))
        .unwrap()
        .signal("CONT")
        .unwrap();
    for failure in failures {
        let status = failure.expect_err("B is frozen");
        assert_eq!(
            skywire_proto::status::reason_in(&status, setup_svc::service::ERROR_DOMAIN).as_deref(),
            Some("hop_failed"),
            "{status:?}"
        );
    }
    assert!(
        breakers().await.is_empty(),
        "an intermediate hop opened D's breaker"
    );
    dial(a, d).await.expect("B is back");

    // D frozen: 3 failures open its breaker.
    fleet
        .member(Role::Visor(3))
        .unwrap()
        .signal("STOP")
        .unwrap();
    let failures = futures::future::join_all((0..3).map(|_| dial(a, d))).await;
    assert!(failures.iter().all(Result::is_err), "{failures:?}");
    let open_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while breakers().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < open_until,
            "D's breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = reserves(&fleet, Role::Visor(0)).await;
    let refused = dial(a, d).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        skywire_proto::status::reason_in(&refused, "skywire").as_deref(),
        Some("breaker_open"),
        "{refused:?}"
    );
    assert_eq!(
        reserves(&fleet, Role::Visor(0)).await,
        before,
        "a refused dial reached a gateway"
    );

    // D back; after the open time, 100 dials at once: one probe, which closes the breaker.
    fleet
        .member(Role::Visor(3))
        .unwrap()
        .signal("CONT")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let before = reserves(&fleet, Role::Visor(0)).await;
    let dials = futures::future::join_all((0..100).map(|_| dial(a, d))).await;
    let passed = dials.iter().filter(|dial| dial.is_ok()).count();
    assert_eq!(
        passed,
        1,
        "exactly one probe: {:?}",
        dials.iter().find(|d| d.is_err())
    );
    assert_eq!(
        reserves(&fleet, Role::Visor(0)).await,
        before + 1.0,
        "one probe reached A's gateway"
    );
    let closed_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while !breakers().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < closed_until,
            "the probe did not close it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dial(a, d).await.expect("closed again");

    // Route-setup counted every request by its outcome: 4 at B, 3 at D, 1 + 99 refused by
    // the breaker, and the successes (B back, the probe, closed again).
    let text =
        testkit::metrics::scrape(loopback(fleet.member(Role::RouteSetup).unwrap().admin_port))
            .await;
    for (outcome, count) in [
        ("hop_failed", 4.0),
        ("destination_failed", 3.0),
        ("breaker_open", 100.0),
        ("ok", 3.0),
    ] {
        let series = format!("route_setup_setups_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            testkit::metrics::value(&text, &series),
            Some(count),
            "{series}"
        );
    }
    assert_eq!(
        testkit::metrics::value(&text, "route_setup_setup_seconds_count"),
        Some(10.0)
    );
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");
}
