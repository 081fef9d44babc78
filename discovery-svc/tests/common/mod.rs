//! Test harnesses: a real `redis-server` on a free port, and dmsg-discovery in-process on
//! 127.0.0.1.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use discovery_svc::run::{Config, StoreConfig, run};
use discovery_svc::service::Ttls;
use dmsg::addr::ServerAddr;
use dmsg::discovery::DiscoveryClient;
use dmsg::identity::Keypair;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port; `None` (after a loud SKIPPED line) only if `redis-server`
    /// is not installed. CI installs it, so it never skips there.
    pub async fn start() -> Option<Self> {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (to restart a killed one where clients expect it).
    pub async fn start_on(port: u16) -> Option<Self> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "\n==== SKIPPED: redis-server is not installed (apt-get install redis-server) ====\n"
                );
                return None;
            }
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        let redis = Self {
            port,
            child: Some(child),
        };
        for _ in 0..200 {
            if redis.ping().await {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {port} did not come up");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if tcp.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        tcp.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// dmsg-discovery running in this process.
pub struct Discovery {
    pub addr: SocketAddr,
    pub keypair: Keypair,
    pub client: DiscoveryClient,
    stop: CancellationToken,
    task: JoinHandle<Result<(), discovery_svc::run::RunError>>,
}

impl Discovery {
    pub async fn start(store: StoreConfig) -> Self {
        Self::start_with(store, Vec::new(), Ttls::default()).await
    }

    pub async fn start_with(store: StoreConfig, servers: Vec<ServerAddr>, ttls: Ttls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keypair = Keypair::generate();
        let config = Config {
            keypair: keypair.clone(),
            store,
            servers,
            ttls,
            connector: Default::default(),
            pq: Default::default(),
            server_stack: Default::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, stop.clone()));
        let client = DiscoveryClient::over_tcp(&format!("http://{addr}")).unwrap();
        Self {
            addr,
            keypair,
            client,
            stop,
            task,
        }
    }

    /// A raw generated client (to send what the typed client would refuse to build).
    pub async fn raw(
        &self,
    ) -> skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient<
        tonic::transport::Channel,
    > {
        skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient::connect(format!(
            "http://{}",
            self.addr
        ))
        .await
        .unwrap()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Redis as a store config.
pub fn redis_store(redis: &Redis, prefix: &str) -> StoreConfig {
    StoreConfig::Redis {
        url: redis.url(),
        prefix: prefix.to_owned(),
    }
}
