//! A real tonic server running the scriptable probe service behind the standard server stack,
//! on 127.0.0.1 with an OS-chosen port.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use middleware::{
    Breaker, BreakerConfig, ClientStackConfig, GrpcChannel, ServerStackConfig, client_stack,
    server_stack,
};
use skywire_proto::skywire::testing::v1::{Behavior, ProbeRequest};
use skywire_proto::testing::{ProbeClient, ProbeService};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint, Server};

/// A running probe server.
pub struct ProbeServer {
    pub addr: SocketAddr,
    pub service: ProbeService,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ProbeServer {
    /// Binds 127.0.0.1:0 and serves with `config`'s server stack.
    pub async fn start(config: ServerStackConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = ProbeService::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder()
            .layer(server_stack(&config))
            .add_service(service.clone().into_server());
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            service,
            stop: Some(stop),
            task,
        }
    }

    /// A plain tonic channel (one HTTP/2 connection) to the server.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client behind the standard client stack with `breaker`.
    pub async fn guarded_client(
        &self,
        breaker: Breaker,
        config: ClientStackConfig,
    ) -> ProbeClient<GrpcChannel> {
        ProbeClient::new(client_stack(self.channel().await, &config, breaker))
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// How long [`hair_trigger`] breakers stay open in these tests.
pub const OPEN_FOR: Duration = Duration::from_millis(300);

/// Trips `client`'s breaker with one UNAVAILABLE, then waits out the open period.
pub async fn trip_and_wait(client: &mut ProbeClient<GrpcChannel>, breaker: &Breaker) {
    let status = client
        .unary(fail(tonic::Code::Unavailable))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(breaker.state(), middleware::BreakerState::Open);
    tokio::time::sleep(OPEN_FOR + Duration::from_millis(50)).await;
    assert_eq!(breaker.state(), middleware::BreakerState::HalfOpen);
}

/// A breaker that opens on the first failure and stays open for `open_for`.
pub fn hair_trigger(name: &str, open_for: Duration) -> Breaker {
    Breaker::new(
        name,
        BreakerConfig {
            failure_threshold: 1,
            window: Duration::from_secs(60),
            open_for,
            max_open: None,
        },
    )
}

/// A probe server, a hair-trigger breaker named "probe-server" and a client guarded by it.
pub async fn fixture() -> (ProbeServer, Breaker, ProbeClient<GrpcChannel>) {
    let server = ProbeServer::start(ServerStackConfig::default()).await;
    let breaker = hair_trigger("probe-server", OPEN_FOR);
    let client = server
        .guarded_client(breaker.clone(), ClientStackConfig::default())
        .await;
    (server, breaker, client)
}

/// A request that succeeds after `delay_ms`.
pub fn ok(delay_ms: u32) -> ProbeRequest {
    ProbeRequest {
        delay_ms,
        ..ProbeRequest::default()
    }
}

/// A request that fails with `code`.
pub fn fail(code: tonic::Code) -> ProbeRequest {
    ProbeRequest {
        behavior: Behavior::Fail.into(),
        code: code as i32,
        ..ProbeRequest::default()
    }
}

/// Waits (real time, bounded) until `condition` holds.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
