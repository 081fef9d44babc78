//! Shutdown is bounded: with a hung peer connected — a gRPC call whose request never
//! arrives, and a TCP connection that never says anything — every binary exits 0 within its
//! grace period after SIGTERM, and a second signal makes it exit at once (130).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_skywire-localnet");

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A binary under test: `member <args…>`, the port its hung peers use, and its other ports.
struct Binary {
    child: Child,
    grpc: SocketAddr,
    raw: Vec<SocketAddr>,
}

impl Binary {
    fn start(name: &str, grace_secs: u64) -> Self {
        let ports = [testkit::free_port(), testkit::free_port()];
        let [first, second] = ports.map(|p| format!("127.0.0.1:{p}"));
        let grace = grace_secs.to_string();
        let pk = dmsg::identity::Keypair::generate().public();
        let unreachable = format!("{pk}@127.0.0.1:{}", testkit::free_port());
        let (args, grpc, raw): (Vec<&str>, u16, Vec<u16>) = match name {
            "dmsg-discovery" => (
                vec![name, "--listen", &first, "--admin", &second],
                ports[0],
                vec![ports[0], ports[1]],
            ),
            "dmsg-server" => (
                vec![name, "--listen", &first, "--admin", &second],
                ports[1],
                vec![ports[0], ports[1]],
            ),
            _ => (
                vec![
                    name,
                    "--no-default-seeds",
                    "--servers",
                    &unreachable,
                    "agent",
                    "--admin",
                    &second,
                ],
                ports[1],
                vec![ports[1]],
            ),
        };
        let child = Command::new(LAUNCHER)
            .arg("member")
            .args(&args)
            .args(["--shutdown-grace-secs", &grace])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            grpc: loopback(grpc),
            raw: raw.into_iter().map(loopback).collect(),
        }
    }

    fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            signal,
        )
        .unwrap();
    }

    /// Waits for the exit, at most `limit`; its code and how long it took.
    async fn exit_within(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("still running {limit:?} after the signal");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hung peers: a unary call whose request message never comes (the handler waits for it) and
/// silent TCP connections. Returns what must stay alive while the binary stops.
async fn hang_peers(binary: &Binary) -> (tokio::task::JoinHandle<()>, Vec<tokio::net::TcpStream>) {
    let channel = testkit::grpc::connect(binary.grpc).await;
    let call = tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let never = futures::stream::pending::<bytes::Bytes>();
        let _ = grpc
            .client_streaming(
                tonic::Request::new(never),
                http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                testkit::grpc::RawCodec,
            )
            .await;
    });
    let mut silent = Vec::new();
    for addr in &binary.raw {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the hung call was answered");
    (call, silent)
}

async fn bounded_by_grace(name: &str) {
    let grace = Duration::from_secs(2);
    let mut binary = Binary::start(name, grace.as_secs());
    let _peers = hang_peers(&binary).await;
    binary.signal(Signal::SIGTERM);
    let (code, took) = binary.exit_within(grace + Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{name} exits 0 after its grace period");
    assert!(
        took <= grace + Duration::from_millis(1500),
        "{name} took {took:?} with a {grace:?} grace period"
    );
    assert!(
        took >= grace - Duration::from_millis(200),
        "{name} waited for the hung call: {took:?}"
    );

    let mut binary = Binary::start(name, 60);
    let _peers = hang_peers(&binary).await;
    binary.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    binary.signal(Signal::SIGINT);
    let (code, took) = binary.exit_within(Duration::from_secs(5)).await;
    assert_eq!(code, Some(130), "{name}: a second signal exits at once");
    assert!(
        took < Duration::from_secs(1),
        "{name} took {took:?} after the second signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_stops_within_its_grace_period_with_a_hung_peer() {
    bounded_by_grace("dmsg-discovery").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_within_its_grace_period_with_a_hung_peer() {
    bounded_by_grace("dmsg-server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stops_within_its_grace_period_with_a_hung_peer() {
    bounded_by_grace("dmsg-cli").await;
}
