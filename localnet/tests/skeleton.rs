//! What every binary gets from the service skeleton, checked on real processes the way an
//! operator meets them: reflection and health list exactly what each port serves, `/metrics`
//! parses with a Prometheus parser and has the families every process promises, JSON log
//! mode writes nothing but JSON (a fatal config error included), and `member <binary>
//! --help` is that binary's help.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use localnet::{Fleet, FleetSpec, Role, StartOrder};
use tonic::transport::Channel;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_skywire-localnet");

/// One fleet at a time (they share two cores).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn channel(port: u16) -> Channel {
    testkit::grpc::connect(loopback(port)).await
}

/// A fleet of discovery, one server and two clients, converged.
async fn small_fleet(spec: FleetSpec) -> Fleet {
    let mut fleet = Fleet::create(&spec).unwrap();
    fleet.start(StartOrder::Dependencies).unwrap();
    fleet.wait_converged(Duration::from_secs(30)).await.unwrap();
    fleet
}

fn spec() -> FleetSpec {
    let mut spec = FleetSpec::new(LAUNCHER, 1, 2);
    spec.registration_backoff_cap = Duration::from_secs(2);
    spec
}

fn assert_has(families: &BTreeMap<String, String>, who: &str, names: &[&str]) {
    for name in names {
        assert!(
            families.contains_key(*name),
            "{who}: no family {name} among {:?}",
            families.keys().collect::<Vec<_>>()
        );
    }
}

/// Every process: process metrics, server-side RPC counts and latencies, breakers.
const EVERY_PROCESS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
    "circuit_breaker_state",
    "circuit_breaker_transitions_total",
];

/// Discovery, a server and an agent each list exactly what each of their ports serves, health
/// is SERVING for every listed name, one method of each answers, and each `/metrics` parses
/// with its families and no two families of one name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_lists_exactly_what_it_serves_and_metrics_parse() {
    let _serial = SERIAL.lock().await;
    let mut fleet = small_fleet(spec()).await;
    fleet
        .probe(Role::Client(0), Role::Client(1), 1024)
        .await
        .unwrap();

    // dmsg-discovery: the public port and the admin port.
    let discovery = fleet.member(Role::Discovery).unwrap().admin_port;
    testkit::grpc::assert_serves_exactly(
        channel(discovery).await,
        &[
            "skywire.discovery.v1.Discovery",
            "skywire.discovery.v1.TransportRegistry",
        ],
    )
    .await;
    let discovery_admin = fleet.discovery_admin_port();
    testkit::grpc::assert_serves_exactly(channel(discovery_admin).await, &[]).await;
    // dmsg-server.
    let server = fleet.member(Role::Server(0)).unwrap().admin_port;
    testkit::grpc::assert_serves_exactly(channel(server).await, &["skywire.server.v1.Admin"]).await;
    // dmsg-cli agent.
    let agent = fleet.member(Role::Client(0)).unwrap().admin_port;
    testkit::grpc::assert_serves_exactly(channel(agent).await, &["skywire.client.v1.Agent"]).await;

    let families =
        testkit::metrics::families(&testkit::metrics::scrape(loopback(discovery_admin)).await);
    assert_has(&families, "dmsg-discovery", EVERY_PROCESS);
    assert_has(
        &families,
        "dmsg-discovery",
        &[
            "discovery_entries",
            "discovery_store_operation_duration_seconds",
        ],
    );
    // The counts are read every 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let text = loop {
        let text = testkit::metrics::scrape(loopback(discovery_admin)).await;
        if text.contains("discovery_entries{kind=\"server\"} 1")
            && text.contains("discovery_entries{kind=\"client\"} 2")
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry counts never right:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        text.contains(
            "discovery_store_operation_duration_seconds_count{operation=\"put\",store=\"memory\"}"
        ),
        "{text}"
    );

    let families = testkit::metrics::families(&testkit::metrics::scrape(loopback(server)).await);
    assert_has(&families, "dmsg-server", EVERY_PROCESS);
    assert_has(
        &families,
        "dmsg-server",
        &[
            "grpc_client_handled_total",
            "grpc_client_handling_seconds",
            "dmsg_server_sessions_open",
            "dmsg_server_sessions_established_total",
            "dmsg_server_streams_open",
            "dmsg_server_streams_established_total",
            "dmsg_server_relayed_bytes_total",
            "dmsg_server_handshakes_total",
        ],
    );

    let text = testkit::metrics::scrape(loopback(agent)).await;
    let families = testkit::metrics::families(&text);
    assert_has(&families, "dmsg-cli agent", EVERY_PROCESS);
    assert_has(
        &families,
        "dmsg-cli agent",
        &[
            "grpc_client_handled_total",
            "grpc_client_handling_seconds",
            "dmsg_client_server_sessions",
            "dmsg_client_entry_published",
            "dmsg_client_handshakes_total",
        ],
    );
    // The agent's sessions and its probe's stream were hybrid; nothing was refused.
    let hybrid = testkit::metrics::value(&text, "dmsg_client_handshakes_total{outcome=\"hybrid\"}");
    assert!(hybrid.is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(
        testkit::metrics::value(
            &text,
            "dmsg_client_handshakes_total{outcome=\"pq_refused\"}"
        ),
        Some(0.0),
        "{text}"
    );
    let status = fleet.client_status(Role::Client(0)).await.unwrap();
    assert!(status.handshakes_pq >= 2, "{status:?}");
    assert_eq!(
        (
            status.handshakes_classical,
            status.handshakes_downgraded,
            status.handshakes_pq_refused
        ),
        (0, 0, 0),
        "{status:?}"
    );
    assert!(
        text.contains("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Probe\",grpc_service=\"skywire.client.v1.Agent\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("circuit_breaker_state{breaker=\"dmsg-discovery\",state=\"closed\"} 1"),
        "{text}"
    );
    assert!(fleet.shutdown(Duration::from_secs(15)).await.is_empty());
}

/// Under `SKYWIRE_LOG_FORMAT=json` every line every member writes is a JSON object, and the
/// lines written inside a span carry its trace and span ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_mode_writes_only_json_with_trace_ids() {
    let _serial = SERIAL.lock().await;
    let mut spec = spec();
    spec.log_filter = Some("debug,h2=info,tower=info,hyper=info".into());
    spec.env = vec![("SKYWIRE_LOG_FORMAT".into(), "json".into())];
    let mut fleet = small_fleet(spec).await;
    fleet
        .probe(Role::Client(0), Role::Client(1), 1024)
        .await
        .unwrap();
    assert!(fleet.shutdown(Duration::from_secs(15)).await.is_empty());

    let mut in_spans = 0;
    for role in fleet.roles() {
        let log = std::fs::read_to_string(fleet.dir().join(format!("{role}.log"))).unwrap();
        assert!(
            log.lines().count() > 2,
            "{role} wrote almost nothing:\n{log}"
        );
        for line in log.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{role}: not JSON ({error}): {line}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(value.get(key).is_some(), "{role}: no {key} in {line}");
            }
            if value
                .get("span")
                .is_some_and(|span| span["name"] == "grpc.server")
            {
                in_spans += 1;
                for key in ["trace_id", "span_id"] {
                    let id = value[key]
                        .as_str()
                        .unwrap_or_else(|| panic!("{role}: no {key}: {line}"));
                    assert!(
                        id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
                        "{line}"
                    );
                }
            }
        }
    }
    assert!(in_spans > 0, "no line was written inside an RPC");
}

/// Runs `skywire-localnet member <args…>` with `env`; its exit code and stderr.
fn member(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(LAUNCHER)
        .arg("member")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fatal start-up error (an unknown config key, a bad flag) is one JSON line in JSON mode,
/// names the key and the file, and exits 2; in human mode it is one plain line.
#[test]
fn fatal_config_errors_are_json_in_json_mode_and_name_the_key() {
    let dir = std::env::temp_dir().join(format!("skeleton-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let config = config.to_str().unwrap();
    for binary in ["dmsg-discovery", "dmsg-server", "dmsg-cli"] {
        let mut args = vec![binary, "--config", config];
        if binary == "dmsg-cli" {
            args.push("servers");
        }
        let (code, _, stderr) = member(&args, &[("SKYWIRE_LOG_FORMAT", "json")]);
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{binary}: one line, not {stderr}");
        let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(value["level"], "ERROR");
        let message = value["fields"]["message"].as_str().unwrap();
        assert!(
            message.contains("`lisen`") && message.contains("bad.toml"),
            "{message}"
        );
        assert!(
            message.contains("key_file"),
            "the error lists the keys: {message}"
        );

        let (code, _, stderr) = member(
            &[binary, "--no-such-flag"],
            &[("SKYWIRE_LOG_FORMAT", "json")],
        );
        assert_eq!(code, Some(2), "{binary}: {stderr}");
        let value: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
        assert!(
            value["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("--no-such-flag")
        );

        let (code, _, stderr) = member(&args, &[]);
        assert_eq!(code, Some(2));
        assert_eq!(stderr.lines().count(), 1, "printed once: {stderr}");
        assert!(
            stderr.starts_with(&format!("{binary}: config file ")),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--help` of every binary lists its config keys and ends with the environment section;
/// `member --help` explains members and `member <binary> --help` is that binary's help.
#[test]
fn help_lists_keys_and_the_environment_and_member_help_exits_0() {
    for (binary, keys) in [
        (
            "dmsg-discovery",
            &["listen", "admin", "server_entry_ttl_secs", "require_pq"][..],
        ),
        (
            "dmsg-server",
            &[
                "listen",
                "ping_interval_ms",
                "registration_backoff_cap_secs",
            ][..],
        ),
        (
            "dmsg-cli",
            &["discovery", "timeout_secs", "[agent] admin, echo_port"][..],
        ),
        (
            "skywire-visor",
            &[
                "stcp_listen",
                "pk_table",
                "servers",
                "admin",
                "SKYWIRE_VISOR_STCP_LISTEN",
            ][..],
        ),
        (
            "transport-setup",
            &[
                "grpc",
                "servers",
                "key_file",
                "SKYWIRE_TRANSPORT_SETUP_GRPC",
            ][..],
        ),
        (
            "route-setup",
            &[
                "grpc",
                "discovery_pk",
                "breaker_open_secs",
                "request_timeout_secs",
                "SKYWIRE_ROUTE_SETUP_MAX_IN_FLIGHT",
            ][..],
        ),
    ] {
        let (code, stdout, stderr) = member(&[binary, "--help"], &[]);
        assert_eq!(code, Some(0), "{binary}: {stderr}");
        for key in keys {
            assert!(
                stdout.contains(key),
                "{binary} --help lacks {key}:\n{stdout}"
            );
        }
        for variable in service::config::ENVIRONMENT_VARIABLES {
            assert!(
                stdout.contains(variable),
                "{binary} --help lacks {variable}"
            );
        }
        assert!(!stdout.contains("[default: 20] [default: 20]"), "{stdout}");
    }
    let (_, server_help, _) = member(&["dmsg-server", "--help"], &[]);
    assert!(
        server_help.contains("SKYWIRE_SERVER_REGISTRATION_BACKOFF_CAP_SECS"),
        "{server_help}"
    );
    let (code, stdout, _) = member(&["--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("PR_SET_PDEATHSIG"), "{stdout}");
    let output = Command::new(LAUNCHER).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("member <BINARY>"), "{help}");
    for binary in localnet::launcher::BINARIES {
        assert!(help.contains(binary), "{binary} missing from:\n{help}");
    }
}

/// A collector that cannot be reached is said in the logs (WARN), not silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_otlp_collector_is_logged_at_warn() {
    let dead = testkit::free_port();
    let (listen, admin) = (testkit::free_port(), testkit::free_port());
    let mut child = testkit::ChildProcess::spawn(
        "dmsg-discovery",
        Command::new(LAUNCHER)
            .args(["member", "dmsg-discovery", "--listen"])
            .arg(format!("127.0.0.1:{listen}"))
            .arg("--admin")
            .arg(format!("127.0.0.1:{admin}"))
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{dead}"),
            )
            .env("SKYWIRE_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    // One RPC, so there is a span to export; the flush at shutdown tries to send it.
    let channel = channel(listen).await;
    let _ = testkit::grpc::call_empty(channel, "/skywire.discovery.v1.Discovery/Status").await;
    child.stop_cleanly().await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.child_mut().stderr.take().unwrap(), &mut stderr)
        .unwrap();
    let warning = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line["level"] == "WARN"
                && line["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot export spans"))
        })
        .unwrap_or_else(|| panic!("no export warning in\n{stderr}"));
    assert_eq!(
        warning["fields"]["endpoint"],
        format!("http://127.0.0.1:{dead}").as_str()
    );
}
