//! The `dmsg-discovery` binary as a child process: reflection (v1 and v1alpha) lists its
//! services, health is SERVING, SIGTERM stops it cleanly (even with a health Watch open).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::ChildProcess;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_reflection_and_health_and_stops_on_sigterm() {
    let port = common::free_port();
    let mut child = ChildProcess::spawn(
        "dmsg-discovery",
        Command::new(env!("CARGO_BIN_EXE_dmsg-discovery"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                "memory",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let channel = testkit::grpc::connect(([127, 0, 0, 1], port).into()).await;

    testkit::grpc::assert_reflection_lists(
        channel.clone(),
        &[
            "skywire.discovery.v1.Discovery",
            "skywire.discovery.v1.TransportRegistry",
            "grpc.health.v1.Health",
        ],
    )
    .await;
    testkit::grpc::wait_health(
        channel.clone(),
        "skywire.discovery.v1.Discovery",
        ServingStatus::Serving,
        Duration::from_secs(10),
    )
    .await;

    // An open Watch stream never ends by itself; it must not hold the process up.
    let _watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    child.stop_cleanly().await;
}

#[test]
fn help_explains_every_flag() {
    testkit::process::assert_help_mentions(
        env!("CARGO_BIN_EXE_dmsg-discovery"),
        &[
            "--config",
            "--listen",
            "--store",
            "--key-file",
            "--servers",
            "redis://",
        ],
    );
}
