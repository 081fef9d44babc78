//! Discovery's own dmsg sessions: the way clients reach `dmsg://<discovery>:80`.
//!
//! At start it dials every **configured** server at once, each from its own task with
//! full-jitter backoff whose ceiling stays at 1 s — it never derives its dial set from its store,
//! so a cold fleet cannot deadlock on an empty store. Every 30 s it reconciles: configured ∪
//! registered servers (a registered address wins for the same key); keepers are started,
//! re-pointed or stopped to match. Every keeper is owned and joined on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::ServerAddr;
use dmsg::backoff::Backoff;
use dmsg::client::Client;
use dmsg::identity::PublicKey;
use dmsg::wire::Code;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Connector timing.
#[derive(Clone, Copy, Debug)]
pub struct ConnectorConfig {
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// How often configured ∪ registered is reconciled.
    pub reconcile_every: Duration,
}

impl Default for ConnectorConfig {
    /// Redials within 1 s (full jitter, no growth), reconcile every 30 s.
    ///
    /// Not 1 s → 30 s: discovery's sessions are the only way a dmsg-only server reaches it,
    /// so a server that comes up late must find discovery dialing it within a second, not at
    /// the end of a 30 s backoff grown while it was down (issue: dmsg-only servers started
    /// 29 s after discovery registered only after 15.8 s). A refused TCP connect to a
    /// server that is down costs next to nothing; the servers dialed are the operator's few.
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(1),
            reconcile_every: Duration::from_secs(30),
        }
    }
}

struct Keeper {
    address: String,
    stop: CancellationToken,
}

/// Runs until `shutdown`: keeps a session to every configured and registered server.
pub async fn run(
    client: Client,
    configured: Vec<ServerAddr>,
    store: Arc<dyn Store>,
    config: ConnectorConfig,
    shutdown: CancellationToken,
) {
    let mut keepers: HashMap<PublicKey, Keeper> = HashMap::new();
    let mut tasks = JoinSet::new();
    let configured: HashMap<PublicKey, String> =
        configured.into_iter().map(|s| (s.pk, s.address)).collect();

    // The configured servers first, before the store is even asked.
    reconcile(
        &client,
        &configured,
        &mut keepers,
        &mut tasks,
        &config,
        &shutdown,
    );
    loop {
        let mut targets = configured.clone();
        match store.servers().await {
            Ok(registered) => {
                for entry in registered {
                    if let Some(server) = entry.server {
                        targets.insert(entry.owner, server.address);
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read registered servers; keeping the current set")
            }
        }
        reconcile(
            &client,
            &targets,
            &mut keepers,
            &mut tasks,
            &config,
            &shutdown,
        );
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.reconcile_every) => {}
        }
        while tasks.try_join_next().is_some() {}
    }
    for keeper in keepers.values() {
        keeper.stop.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

/// Makes the keepers match `targets`.
fn reconcile(
    client: &Client,
    targets: &HashMap<PublicKey, String>,
    keepers: &mut HashMap<PublicKey, Keeper>,
    tasks: &mut JoinSet<()>,
    config: &ConnectorConfig,
    shutdown: &CancellationToken,
) {
    keepers.retain(|pk, keeper| {
        let keep = targets
            .get(pk)
            .is_some_and(|address| *address == keeper.address);
        if !keep {
            keeper.stop.cancel();
        }
        keep
    });
    for (pk, address) in targets {
        if keepers.contains_key(pk) {
            continue;
        }
        let stop = shutdown.child_token();
        keepers.insert(
            *pk,
            Keeper {
                address: address.clone(),
                stop: stop.clone(),
            },
        );
        let server = ServerAddr {
            pk: *pk,
            address: address.clone(),
        };
        tasks.spawn(keep_session(client.clone(), server, *config, stop));
    }
}

/// Keeps one session up: dial, wait for it to end, back off, dial again.
async fn keep_session(
    client: Client,
    server: ServerAddr,
    config: ConnectorConfig,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_cap);
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            () = stop.cancelled() => break,
            result = client.connect(server.pk, server.address.as_str()) => result,
        };
        match connected {
            Ok(session) => {
                tracing::info!(server = %server, "connected to dmsg server");
                backoff.reset();
                tokio::select! {
                    () = stop.cancelled() => {
                        session.close(Code::Normal, "no longer a target");
                        break;
                    }
                    code = session.closed() => {
                        tracing::info!(server = %server, code = code.label(), "dmsg session ended; redialing");
                    }
                }
            }
            Err(error) => tracing::debug!(server = %server, %error, "dial failed"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
