//! Fleet pieces for process tests: `dmsg-server` binaries on loopback, dmsg-discovery in this
//! process (optionally over a store that delays writes), key files in a scratch directory.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use discovery_svc::run::{Config, Listeners, StoreConfig, run_with_store};
use discovery_svc::store::Store;
use discovery_svc::store::memory::MemoryStore;
use dmsg::addr::ServerAddr;
use dmsg::discovery::{Discovery as _, DiscoveryClient};
use dmsg::entry::Entry;
use dmsg::identity::{Keypair, PublicKey};
use skywire_proto::skywire::server::v1 as pb;
use testkit::{ChildProcess, free_port};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod delay_store;

/// A scratch directory, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "skywire-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A new key, saved as `<name>.key` (0600).
    pub fn key(&self, name: &str) -> (Keypair, PathBuf) {
        let keypair = Keypair::generate();
        let path = self.0.join(format!("{name}.key"));
        keypair.save(&path).unwrap();
        (keypair, path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `dmsg-server` child process.
pub struct ServerProcess {
    pub pk: PublicKey,
    pub relay: SocketAddr,
    pub admin: SocketAddr,
    pub process: ChildProcess,
}

impl ServerProcess {
    /// Starts `dmsg-server` with a new key from `scratch` on free ports, plus `args`.
    pub fn start(scratch: &Scratch, name: &str, args: &[&str]) -> Self {
        Self::start_with(scratch, name, args, None)
    }

    /// The same, started through `sh -c 'ulimit -n <limit>; exec dmsg-server …'`.
    pub fn start_with(scratch: &Scratch, name: &str, args: &[&str], fd_limit: Option<u32>) -> Self {
        let (keypair, key_file) = scratch.key(name);
        let relay: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let binary = env!("CARGO_BIN_EXE_dmsg-server");
        let mut all: Vec<String> = vec![
            "--key-file".into(),
            key_file.display().to_string(),
            "--listen".into(),
            relay.to_string(),
            "--admin".into(),
            admin.to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let log = std::fs::File::create(scratch.path().join(format!("{name}.log"))).unwrap();
        let mut command = match fd_limit {
            None => {
                let mut command = Command::new(binary);
                command.args(&all);
                command
            }
            Some(limit) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary)
                    .args(&all);
                command
            }
        };
        command
            .env("RUST_LOG", "info,dmsg=debug")
            .stdout(Stdio::null())
            .stderr(log);
        Self {
            pk: keypair.public(),
            relay,
            admin,
            process: ChildProcess::spawn(name, &mut command),
        }
    }

    /// `PK@HOST:PORT` of the relay.
    pub fn seed(&self) -> ServerAddr {
        ServerAddr {
            pk: self.pk,
            address: self.relay.to_string(),
            pq: false,
        }
    }

    /// A channel to the admin endpoint (waits for it).
    pub async fn admin_channel(&self) -> tonic::transport::Channel {
        testkit::grpc::connect(self.admin).await
    }

    /// The Stats RPC.
    pub async fn stats(&self) -> pb::StatsResponse {
        pb::admin_client::AdminClient::new(self.admin_channel().await)
            .stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (up to 10 s) until Stats says the server is registered; returns those stats.
    pub async fn wait_registered(&self) -> pb::StatsResponse {
        for _ in 0..200 {
            let stats = self.stats().await;
            let state = stats.registration.as_ref().map(pb::Registration::state);
            if state == Some(pb::registration::State::Registered) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not report itself registered within 10 s", self.pk);
    }

    /// Waits until the relay accepts TCP connections.
    pub async fn wait_accepting(&self) {
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(self.relay).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("dmsg-server did not accept on {} within 10 s", self.relay);
    }
}

/// dmsg-discovery running in this process.
pub struct DiscoveryHandle {
    pub addr: SocketAddr,
    pub keypair: Keypair,
    pub client: DiscoveryClient,
    stop: CancellationToken,
    task: JoinHandle<Result<(), discovery_svc::run::RunError>>,
}

impl DiscoveryHandle {
    /// Discovery with a memory store on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port(), Arc::new(MemoryStore::new()), Vec::new()).await
    }

    /// Discovery on `port`, over `store`, connecting to `servers`.
    pub async fn start_on(port: u16, store: Arc<dyn Store>, servers: Vec<ServerAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let keypair = Keypair::generate();
        let config = Config {
            keypair: keypair.clone(),
            store: StoreConfig::Memory,
            servers,
            ttls: Default::default(),
            connector: Default::default(),
            pq: Default::default(),
            server_stack: Default::default(),
            grace: std::time::Duration::from_secs(2),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_with_store(
            config,
            store,
            Listeners::grpc(listener),
            stop.clone(),
        ));
        Self {
            addr,
            keypair,
            client: DiscoveryClient::over_tcp(&format!("http://{addr}")).unwrap(),
            stop,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The entry of `pk`, if discovery answers and has one.
    pub async fn entry(&self, pk: &PublicKey) -> Option<Entry> {
        self.client.entry(pk).await.ok().flatten()
    }

    /// Waits until `pk`'s entry satisfies `check`; returns it.
    pub async fn wait_entry(
        &self,
        pk: &PublicKey,
        deadline: Duration,
        check: impl Fn(&Entry) -> bool,
    ) -> Entry {
        let waited = tokio::time::timeout(deadline, async {
            loop {
                if let Some(entry) = self.entry(pk).await
                    && check(&entry)
                {
                    return entry;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("no matching entry for {pk} within {deadline:?}"))
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits up to `deadline` for `check`, polling.
pub async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(deadline, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {deadline:?}");
}
