//! Issue 15's Done-when: `skywire-cli config gen --deployment <the file localnet wrote>`
//! writes a config and a key that boot a visor which joins the running local network with
//! nothing else given — its dmsg client reaches the network's server, and the network's
//! transport-setup (whose key came from the deployment) builds a transport on it —;
//! `skywire-cli visor status` prints its table; its control API lists through reflection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use discovery_client::hexfield::pk_to_proto;
use localnet::{Fleet, FleetSpec, Role, StartOrder};
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::setup::v1::transport_setup_client::TransportSetupClient;
use testkit::ChildProcess;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_skywire-localnet");

/// Runs `skywire-cli ARGS…` (as `skywire-localnet member skywire-cli`); success and output.
fn cli(args: &[&str]) -> (bool, String) {
    localnet::launcher::run_skywire_cli(std::path::Path::new(LAUNCHER), args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_config_joins_the_local_network_with_nothing_else() {
    let mut spec = FleetSpec::new(LAUNCHER, 1, 0);
    spec.visors = 1;
    spec.setup_services = true;
    let mut fleet = Fleet::create(&spec).unwrap();
    fleet.start(StartOrder::Dependencies).unwrap();
    let deployment = fleet.deployment_file();
    assert!(deployment.exists());

    let dir = fleet.dir().join("joining");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("skywire-visor.toml");
    let admin = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let stcp = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let (ok, out) = cli(&[
        "config",
        "gen",
        "--deployment",
        deployment.to_str().unwrap(),
        "--out",
        config.to_str().unwrap(),
        "--stcp-listen",
        &stcp.to_string(),
        "--admin",
        &admin.to_string(),
    ]);
    assert!(ok, "{out}");
    let key = dir.join("visor.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is private");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("route_setup_pks") && text.contains("servers"),
        "{text}"
    );
    // A second run does not replace it.
    let (ok, out) = cli(&["config", "gen", "--out", config.to_str().unwrap()]);
    assert!(!ok && out.contains("--force"), "{out}");

    // Nothing but the generated config.
    let mut joined = ChildProcess::spawn(
        "joining visor",
        Command::new(LAUNCHER)
            .args(["member", "skywire-visor", "--config"])
            .arg(&config),
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (ok, out) = cli(&["--rpc", &admin.to_string(), "visor", "status"]);
        if ok && out.contains("dmsg servers  1:") {
            break out;
        }
        assert!(tokio::time::Instant::now() < until, "never joined: {out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        status.lines().next().unwrap().starts_with("FIELD"),
        "{status}"
    );
    testkit::grpc::assert_serves_exactly(
        testkit::grpc::connect(admin).await,
        &["skywire.visor.v1.VisorControl"],
    )
    .await;

    // The network's transport-setup may build a transport on it: the deployment's key.
    let joined_pk: dmsg::identity::PublicKey = status
        .lines()
        .find_map(|line| line.strip_prefix("pk"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let existing = fleet.member(Role::Visor(0)).unwrap().pk;
    let transport_setup = fleet.member(Role::TransportSetup).unwrap().admin_port;
    let mut operator = TransportSetupClient::new(
        testkit::grpc::connect(SocketAddr::from(([127, 0, 0, 1], transport_setup))).await,
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let built = operator
            .add_transport(pb::AddTransportRequest {
                from: pk_to_proto(&joined_pk),
                to: pk_to_proto(&existing),
                r#type: "dmsg".into(),
            })
            .await;
        match built {
            Ok(_) => break,
            Err(status) => {
                assert!(tokio::time::Instant::now() < until, "{status:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    joined.terminate();
    joined.wait_exit(Duration::from_secs(15)).await;
    let problems = fleet.shutdown(Duration::from_secs(15)).await;
    assert!(problems.is_empty(), "{problems:?}");
}
