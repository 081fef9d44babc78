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
use dmsg::client::Client;
use dmsg::client::keeper::{KeeperConfig, SessionKeepers};
use dmsg::identity::PublicKey;
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

/// Runs until `shutdown`: keeps a session to every configured and registered server through
/// the one session keeper ([`dmsg::client::keeper`]).
pub async fn run(
    client: Client,
    configured: Vec<ServerAddr>,
    store: Arc<dyn Store>,
    config: ConnectorConfig,
    shutdown: CancellationToken,
) {
    let mut keepers = SessionKeepers::new(
        &client,
        KeeperConfig {
            backoff_base: config.backoff_base,
            backoff_cap: config.backoff_cap,
            seed: None,
        },
    );
    // The configured servers first, before the store is even asked.
    keepers.keep_exactly(&configured);
    loop {
        let mut targets: HashMap<PublicKey, ServerAddr> = configured
            .iter()
            .map(|server| (server.pk, server.clone()))
            .collect();
        match store.servers().await {
            Ok(registered) => {
                for entry in registered {
                    if let Some(server) = entry.server {
                        // A registered address wins; PQ is known from the seed's marking or
                        // the signed entry.
                        let marked = targets.get(&entry.owner).is_some_and(|seed| seed.pq);
                        targets.insert(
                            entry.owner,
                            ServerAddr {
                                pk: entry.owner,
                                address: server.address,
                                pq: marked || entry.pq_capable,
                            },
                        );
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read registered servers; keeping the current set")
            }
        }
        let targets: Vec<ServerAddr> = targets.into_values().collect();
        keepers.keep_exactly(&targets);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.reconcile_every) => {}
        }
    }
    keepers.stop().await;
}
