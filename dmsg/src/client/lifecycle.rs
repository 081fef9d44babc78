//! The client lifecycle: keeping sessions up, publishing the client entry, and deleting it on
//! close. Every loop is owned by the client's lifecycle tracker, holds the client only
//! weakly between steps, and stops on [`super::Client::close`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Client, DiscoveryTarget, WeakClient};
use crate::addr::{DmsgAddr, ServerAddr};
use crate::backoff::Backoff;
use crate::discovery::{DISCOVERY_PORT, Discovery, DiscoveryClient, DiscoveryError, Published};
use crate::entry::Entry;
use crate::identity::{Keypair, PublicKey};

/// Longest a discovery call of the lifecycle may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the maintenance loop looks again when it has all the sessions it wants.
const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Servers asked of discovery at a time.
const CANDIDATES: u32 = 64;
/// How long a server learned from discovery is remembered.
const SERVER_MEMORY: Duration = Duration::from_secs(600);
/// How long closing waits for discovery to delete the entry.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// Servers known by key: the seeds (permanent) and the ones discovery listed (remembered for
/// a while, so their addresses are at hand when dialing).
pub(crate) struct KnownServers {
    seeds: Vec<ServerAddr>,
    discovered: HashMap<PublicKey, (String, Instant)>,
}

impl KnownServers {
    pub(crate) fn new(seeds: Vec<ServerAddr>) -> Self {
        Self {
            seeds,
            discovered: HashMap::new(),
        }
    }

    /// The address of `pk`, if known.
    pub(crate) fn address(&self, pk: &PublicKey) -> Option<String> {
        if let Some(seed) = self.seeds.iter().find(|s| s.pk == *pk) {
            return Some(seed.address.clone());
        }
        self.discovered
            .get(pk)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(address, _)| address.clone())
    }

    fn remember(&mut self, servers: &[ServerAddr]) {
        let expires = Instant::now() + SERVER_MEMORY;
        self.discovered.retain(|_, (_, at)| *at > Instant::now());
        for server in servers {
            self.discovered
                .insert(server.pk, (server.address.clone(), expires));
        }
    }
}

/// Stands in when no discovery is configured, or its address is unusable: every call is
/// "unavailable", so the lifecycle falls back to the seeds.
struct NoDiscovery(String);

#[tonic::async_trait]
impl Discovery for NoDiscovery {
    async fn entry(&self, _: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
        Err(DiscoveryError::Unavailable(self.0.clone()))
    }

    async fn put_entry(&self, _: &Entry) -> Result<bool, DiscoveryError> {
        Err(DiscoveryError::Unavailable(self.0.clone()))
    }

    async fn delete_entry(&self, _: &Keypair) -> Result<(), DiscoveryError> {
        Err(DiscoveryError::Unavailable(self.0.clone()))
    }

    async fn available_servers(&self, _: u32) -> Result<Vec<Entry>, DiscoveryError> {
        Err(DiscoveryError::Unavailable(self.0.clone()))
    }

    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        Err(DiscoveryError::Unavailable(self.0.clone()))
    }
}

/// The discovery a client uses for `target`.
pub(crate) fn discovery_for(target: &DiscoveryTarget, client: WeakClient) -> Arc<dyn Discovery> {
    match target {
        DiscoveryTarget::None => Arc::new(NoDiscovery("no discovery is configured".into())),
        DiscoveryTarget::Tcp(url) => match DiscoveryClient::over_tcp(url) {
            Ok(discovery) => Arc::new(discovery),
            Err(error) => {
                tracing::warn!(%url, %error, "unusable discovery URL; relying on seeded servers");
                Arc::new(NoDiscovery(error.to_string()))
            }
        },
        DiscoveryTarget::Dmsg(pk) => Arc::new(DiscoveryClient::new(crate::grpc::channel_any(
            client,
            DmsgAddr::new(*pk, DISCOVERY_PORT),
        ))),
        DiscoveryTarget::Custom(discovery) => discovery.clone(),
    }
}

/// Starts the lifecycle's loops, if the client knows any server or a discovery.
pub(crate) fn start(client: &Client) {
    let config = &client.inner.config.lifecycle;
    let has_seeds = !client.lock_known().seeds.is_empty();
    if !has_seeds && matches!(config.discovery, DiscoveryTarget::None) {
        return;
    }
    let stop = client.inner.stop.clone();
    let tracker = &client.inner.lifecycle;
    tracker.spawn(maintain(client.downgrade(), stop.clone()));
    if config.publish_entry && !matches!(config.discovery, DiscoveryTarget::None) {
        tracker.spawn(publish(client.downgrade(), stop.clone()));
    }
    if config.serve_ping {
        super::control::start_responder(client, stop);
    }
}

/// Sleeps `delay` unless stopped first; true if stopped.
async fn stopped_during(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

impl Client {
    pub(crate) fn lock_known(&self) -> std::sync::MutexGuard<'_, KnownServers> {
        crate::sync::lock(&self.inner.servers)
    }

    /// Servers to connect to, best first: discovery's list (available servers, capacity
    /// weighted; or all servers when `all`), then the seeds — the seeds alone if discovery
    /// fails or knows none; the seeds first with `prefer_seeds`. Servers already connected
    /// are left out.
    pub(crate) async fn candidate_servers(&self, all: bool) -> Vec<ServerAddr> {
        let discovery = self.inner.discovery.clone();
        let listed = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
            if all {
                discovery.all_servers().await
            } else {
                discovery.available_servers(CANDIDATES).await
            }
        })
        .await;
        let mut candidates: Vec<ServerAddr> = match listed {
            Ok(Ok(entries)) => entries
                .into_iter()
                .filter_map(|entry| {
                    entry.server.map(|server| ServerAddr {
                        pk: entry.owner,
                        address: server.address,
                    })
                })
                .collect(),
            Ok(Err(error)) => {
                tracing::debug!(%error, "discovery cannot list servers; using the seeds");
                Vec::new()
            }
            Err(_) => {
                tracing::debug!("discovery did not answer in time; using the seeds");
                Vec::new()
            }
        };
        let mut seeds = {
            let mut known = self.lock_known();
            known.remember(&candidates);
            known.seeds.clone()
        };
        seeds.shuffle(&mut rand::rng());
        if self.inner.config.lifecycle.prefer_seeds {
            std::mem::swap(&mut candidates, &mut seeds);
        }
        let first: HashSet<PublicKey> = candidates.iter().map(|s| s.pk).collect();
        candidates.extend(seeds.into_iter().filter(|s| !first.contains(&s.pk)));
        let connected: HashSet<PublicKey> = self.connected_servers().into_iter().collect();
        candidates
            .retain(|server| !connected.contains(&server.pk) && server.pk != self.public_key());
        candidates
    }
}

/// Keeps `min_sessions` sessions up (every known server when it is 0), reconnecting with
/// full-jitter backoff. Its first attempt waits a random fraction of `start_jitter`.
async fn maintain(weak: WeakClient, stop: CancellationToken) {
    let Some(config) = weak
        .upgrade()
        .map(|client| client.inner.config.lifecycle.clone())
    else {
        return;
    };
    let mut backoff = Backoff::new(config.reconnect_base, config.reconnect_cap);
    let first = backoff.jitter(config.start_jitter);
    if stopped_during(&stop, first).await {
        return;
    }
    loop {
        let Some(client) = weak.upgrade() else { return };
        let mut changes = client.session_changes();
        let mut have = client.connected_servers().len();
        let candidates = client.candidate_servers(config.min_sessions == 0).await;
        let wanted = if config.min_sessions == 0 {
            have + candidates.len()
        } else {
            config.min_sessions
        };
        for server in candidates {
            if have >= wanted {
                break;
            }
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                connected = client.connect(server.pk, server.address.as_str()) => connected,
            };
            match connected {
                Ok(_) => {
                    have += 1;
                    backoff.reset();
                    tracing::info!(server = %server, "connected to dmsg server");
                }
                Err(error) => tracing::debug!(server = %server, %error, "dial failed"),
            }
        }
        drop(client);
        if have < wanted {
            if stopped_during(&stop, backoff.next_delay()).await {
                return;
            }
        } else {
            let lost = tokio::select! {
                () = stop.cancelled() => return,
                _ = changes.changed() => true,
                () = tokio::time::sleep(RECHECK_EVERY) => false,
            };
            // A server that dies drops all its clients at once: spread their reconnects.
            if lost && stopped_during(&stop, backoff.jitter(config.start_jitter)).await {
                return;
            }
        }
    }
}

/// Publishes the client entry (its delegated servers) after session changes (debounced) and
/// every `entry_refresh`. Builds a new entry for every publish — nothing cached is mutated —
/// and checks for shutdown immediately before each publish.
async fn publish(weak: WeakClient, stop: CancellationToken) {
    let Some(client) = weak.upgrade() else { return };
    let config = client.inner.config.lifecycle.clone();
    let pq_capable = client.inner.config.pq.enabled;
    let mut changes = client.session_changes();
    drop(client);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut published_set: Option<Vec<PublicKey>> = None;
    loop {
        let refresh = tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() || stopped_during(&stop, config.publish_debounce).await {
                    return;
                }
                false
            }
            () = tokio::time::sleep(config.entry_refresh) => true,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(client) = weak.upgrade() else { return };
            let mut servers = client.connected_servers();
            servers.sort();
            if servers.is_empty() || (!refresh && published_set.as_ref() == Some(&servers)) {
                break;
            }
            let sequence = crate::sync::lock(&client.inner.published).map_or(1, |last| last + 1);
            let entry = Entry {
                pq_capable,
                ..Entry::client(client.public_key(), sequence, servers.clone())
            };
            let discovery = client.inner.discovery.clone();
            let keypair = client.inner.keypair.clone();
            drop(client);
            // Checked right before publishing: a publish must never start after close began.
            if stop.is_cancelled() {
                return;
            }
            let outcome = crate::discovery::publish(discovery.as_ref(), &keypair, entry).await;
            let Some(client) = weak.upgrade() else { return };
            let mut published = crate::sync::lock(&client.inner.published);
            match outcome {
                Ok(Published::Stored { entry, .. }) => {
                    *published = Some(entry.sequence);
                    published_set = Some(servers);
                    backoff.reset();
                    tracing::debug!(sequence = entry.sequence, "client entry published");
                    break;
                }
                Ok(Published::Superseded { stored_sequence }) => {
                    // Discovery holds a newer entry of ours: continue from its sequence.
                    *published = Some(stored_sequence);
                    if attempts > 3 {
                        break;
                    }
                }
                Err(error) => {
                    drop(published);
                    tracing::debug!(%error, "cannot publish the client entry yet");
                    if stopped_during(&stop, backoff.next_delay()).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Deletes the client entry, if one was published (after the publisher was joined).
pub(crate) async fn delete_entry(client: &Client) {
    let published = crate::sync::lock(&client.inner.published).take();
    if published.is_none() {
        return;
    }
    let deleted = tokio::time::timeout(
        DELETE_TIMEOUT,
        client.inner.discovery.delete_entry(&client.inner.keypair),
    )
    .await;
    match deleted {
        Ok(Ok(())) => tracing::debug!("client entry deleted"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not delete the client entry; it expires on its own")
        }
        Err(_) => tracing::warn!("deleting the client entry timed out; it expires on its own"),
    }
}
