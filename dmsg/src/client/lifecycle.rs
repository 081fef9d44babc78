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
use crate::discovery::{DISCOVERY_PORT, Discovery, DiscoveryClient, DiscoveryError};
use crate::entry::Entry;
use crate::identity::{Keypair, PublicKey};
use crate::publisher::{EntryPublisher, PublisherConfig, Triggers};

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

/// Discovery over dmsg. A call made while the client has no live session fails at once as
/// unavailable, before the RPC stack: finding no path at all is not a failure of discovery,
/// so it never counts towards (or waits on) the discovery breaker.
struct OverDmsg {
    client: WeakClient,
    grpc: DiscoveryClient,
}

impl OverDmsg {
    fn path(&self) -> Result<&DiscoveryClient, DiscoveryError> {
        let live = self
            .client
            .upgrade()
            .is_some_and(|client| client.sessions().iter().any(|s| !s.is_closed()));
        if live {
            Ok(&self.grpc)
        } else {
            Err(DiscoveryError::Unavailable(
                "no live session to any dmsg server yet".into(),
            ))
        }
    }
}

#[tonic::async_trait]
impl Discovery for OverDmsg {
    async fn entry(&self, pk: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
        self.path()?.entry(pk).await
    }

    async fn put_entry(&self, entry: &Entry) -> Result<bool, DiscoveryError> {
        self.path()?.put_entry(entry).await
    }

    async fn delete_entry(&self, keypair: &Keypair) -> Result<(), DiscoveryError> {
        self.path()?.delete_entry(keypair).await
    }

    async fn available_servers(&self, limit: u32) -> Result<Vec<Entry>, DiscoveryError> {
        self.path()?.available_servers(limit).await
    }

    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        self.path()?.all_servers().await
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
        DiscoveryTarget::Dmsg(pk) => Arc::new(OverDmsg {
            grpc: DiscoveryClient::new(crate::grpc::channel_any(
                client.clone(),
                DmsgAddr::new(*pk, DISCOVERY_PORT),
            )),
            client,
        }),
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
        *crate::sync::lock(&client.inner.publisher) = start_publisher(client);
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
    let mut ever_connected = false;
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
                    ever_connected = true;
                    backoff.reset();
                    tracing::info!(server = %server, "connected to dmsg server");
                }
                Err(error) => tracing::debug!(server = %server, %error, "dial failed"),
            }
        }
        drop(client);
        if have < wanted {
            // Until the first session, retry within `reconnect_base` (jittered) rather than
            // a growing backoff: at a cold start the servers may come up a moment after this
            // client, and nothing would tell it. Refused connects cost next to nothing.
            let delay = if ever_connected {
                backoff.next_delay()
            } else {
                backoff.jitter(config.reconnect_base)
            };
            if stopped_during(&stop, delay).await {
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

/// Starts the one entry publisher for the client entry: its delegated servers (the live
/// sessions), republished after session changes (debounced, only if the set changed), every
/// `entry_refresh`, and within `entry_check` of discovery losing it.
fn start_publisher(client: &Client) -> EntryPublisher {
    let config = &client.inner.config.lifecycle;
    let pq_capable = client.inner.config.pq.enabled;
    let owner = client.public_key();
    let weak = client.downgrade();
    let source = move |sequence| {
        let client = weak.upgrade()?;
        let mut servers = client.connected_servers();
        if servers.is_empty() {
            return None;
        }
        servers.sort();
        Some(Entry {
            pq_capable,
            ..Entry::client(owner, sequence, servers)
        })
    };
    let via = match config.discovery {
        DiscoveryTarget::Tcp(_) => "tcp",
        DiscoveryTarget::Dmsg(_) => "dmsg",
        DiscoveryTarget::None | DiscoveryTarget::Custom(_) => "",
    };
    EntryPublisher::start(
        client.inner.keypair.clone(),
        client.inner.discovery.clone(),
        via,
        source,
        PublisherConfig {
            refresh: config.entry_refresh,
            debounce: config.publish_debounce,
            check_every: config.entry_check,
            delete_timeout: DELETE_TIMEOUT,
            ..PublisherConfig::default()
        },
        Triggers {
            changes: Some(client.session_changes()),
            // A new session may be the first way to discovery over dmsg.
            paths: Some(client.session_changes()),
        },
    )
}
