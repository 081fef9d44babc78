//! The `skywire-visor` process (ARCHITECTURE §5, Done-when f): a first boot with only a key
//! file and an unreachable discovery stays up, serves health and metrics on --admin, and
//! connects as soon as a seeded dmsg server starts; `skywire-cli` reads its control API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dmsg::identity::Keypair;
use testkit::process::ChildProcess;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_boot_stays_up_and_connects_once_a_seeded_server_starts() {
    let dir = std::env::temp_dir().join(format!("visor-first-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("visor.key");
    let _ = std::fs::remove_file(&key_file);
    Keypair::generate().save(&key_file).unwrap();

    // A persistent stcp transport to a peer that is not there.
    let peer = Keypair::generate().public();
    let pk_table = dir.join("pk_table");
    std::fs::write(
        &pk_table,
        format!("# peers\n{peer} 127.0.0.1:{}\n", testkit::free_port()),
    )
    .unwrap();
    let server_key = Keypair::generate();
    let relay_port = testkit::free_port();
    let admin_port = testkit::free_port();
    let stcp_port = testkit::free_port();
    let nothing_there = testkit::free_port();
    let mut visor = ChildProcess::spawn(
        "skywire-visor",
        std::process::Command::new(env!("CARGO_BIN_EXE_skywire-visor"))
            .arg("--key-file")
            .arg(&key_file)
            .arg("--discovery")
            .arg(format!("http://127.0.0.1:{nothing_there}"))
            .arg("--servers")
            .arg(format!("{}@127.0.0.1:{relay_port}", server_key.public()))
            .arg("--stcp-listen")
            .arg(format!("127.0.0.1:{stcp_port}"))
            .arg("--pk-table")
            .arg(&pk_table)
            .arg("--transport")
            .arg(format!("stcp:{peer}"))
            .arg("--uptime-every-secs")
            .arg("1")
            .arg("--admin")
            .arg(format!("127.0.0.1:{admin_port}")),
    );
    let admin = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let channel = testkit::grpc::connect(admin).await;
    testkit::grpc::wait_health(
        channel.clone(),
        "",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;
    // With nothing to talk to, it stays up and healthy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        visor.try_status().is_none(),
        "the visor exited on a first boot"
    );
    assert_eq!(
        testkit::grpc::health(channel.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    let text = testkit::metrics::scrape(admin).await;
    assert_eq!(
        testkit::metrics::value(&text, "visor_dmsg_sessions"),
        Some(0.0),
        "{text}"
    );
    testkit::metrics::families(&text);
    assert_eq!(
        testkit::metrics::value(&text, r#"visor_gateway_refused_total{gateway="route"}"#),
        Some(0.0),
        "{text}"
    );
    // The persistent transport keeps failing to dial, and says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = testkit::metrics::scrape(admin).await;
        let failing = r#"visor_transports{state="failing",type="stcp"}"#;
        if testkit::metrics::value(&text, failing) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The control API says so too: through reflection (as grpcurl lists it) and skywire-cli.
    testkit::grpc::assert_serves_exactly(channel.clone(), &["skywire.visor.v1.VisorControl"]).await;
    let (status, out) = cli(admin, &["visor", "status"]);
    assert!(status.success(), "{out}");
    assert!(out.contains("0 (not connected)"), "{out}");

    // The seeded server starts: the visor's dmsg client connects.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", relay_port))
        .await
        .unwrap();
    let server = dmsg::server::Server::new(server_key, dmsg::server::ServerConfig::default());
    let serving = server.clone();
    let serve = tokio::spawn(async move { serving.serve(listener).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.session_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the visor did not connect within 15 s of the server starting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = testkit::metrics::scrape(admin).await;
        if testkit::metrics::value(&text, "visor_dmsg_sessions") == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // skywire-cli sees the server it is connected to now, as a table and as JSON (the
    // uptime probe's next sample, within a second, says the dmsg tier is up).
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let (status, out) = loop {
        let (status, out) = cli(admin, &["visor", "status"]);
        if out.contains("dmsg tier") && out.contains("up now")
            || tokio::time::Instant::now() > until
        {
            break (status, out);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "{out}");
    let server_pk = server.public_key().to_string();
    assert!(out.contains(&format!("1: {}", &server_pk[..8])), "{out}");
    assert!(out.lines().any(|line| line.starts_with("pk ")), "{out}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("dmsg tier") && line.contains("up now")),
        "{out}"
    );
    let text = testkit::metrics::scrape(admin).await;
    assert_eq!(
        testkit::metrics::value(&text, r#"visor_uptime_up{tier="dmsg"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        testkit::metrics::value(&text, r#"visor_uptime_ratio{tier="dmsg",window="1h"}"#)
            .is_some_and(|ratio| ratio > 0.0 && ratio < 1.0),
        "down at first, up now: {text}"
    );
    let (status, out) = cli(admin, &["visor", "status", "--json"]);
    assert!(status.success(), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["dmsg_servers"][0], server_pk.as_str(), "{out}");
    assert_eq!(json["stcp_addr"], format!("127.0.0.1:{stcp_port}"));
    assert_eq!(
        json["uptime_probe"]["routes_sampled"], false,
        "no route group: no evidence"
    );
    let (status, out) = cli(admin, &["visor", "transports", "--json"]);
    assert!(status.success(), "{out}");
    assert_eq!(out.trim(), "[]");
    let (status, out) = cli(admin, &["visor", "routes"]);
    assert!(status.success(), "{out}");
    assert!(out.contains("no route groups"), "{out}");
    visor.stop_cleanly().await;

    // With the visor gone, the CLI says what is wrong.
    let (status, out) = cli(admin, &["visor", "status"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("no visor at {admin}: is skywire-visor running?")),
        "{out}"
    );
    server.shutdown().await;
    serve.await.unwrap().unwrap();
}

/// Runs `skywire-cli --rpc ADMIN ARGS…`; returns its status and stdout + stderr.
fn cli(admin: std::net::SocketAddr, args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skywire-cli"))
        .arg("--rpc")
        .arg(admin.to_string())
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}
