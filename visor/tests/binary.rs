//! The `skywire-visor` process (ARCHITECTURE §5, Done-when f): a first boot with only a key
//! file and an unreachable discovery stays up, serves health and metrics on --admin, and
//! connects as soon as a seeded dmsg server starts.

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
    visor.stop_cleanly().await;
    server.shutdown().await;
    serve.await.unwrap().unwrap();
}
