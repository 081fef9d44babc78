//! The client lifecycle: keeping sessions up, publishing the client entry, and deleting it on
//! close. Every loop is owned by the client's lifecycle tracker, holds the client only
//! weakly between steps, and stops on [`super::Client::close`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::balance::{self, Load};
use super::keeper::{KeeperConfig, SessionKeepers, TargetState};
use super::{Client, DiscoveryTarget, WeakClient};
use crate::addr::{DmsgAddr, ServerAddr};
use crate::backoff::jitter;
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
    discovered: HashMap<PublicKey, (ServerAddr, Instant)>,
}

impl KnownServers {
    pub(crate) fn new(seeds: Vec<ServerAddr>) -> Self {
        Self {
            seeds,
            discovered: HashMap::new(),
        }
    }

    /// The address of `pk` (and whether it is known to offer PQ), if known at `now`.
    pub(crate) fn address(&self, pk: &PublicKey, now: Instant) -> Option<ServerAddr> {
        if let Some(seed) = self.seeds.iter().find(|s| s.pk == *pk) {
            return Some(seed.clone());
        }
        self.discovered
            .get(pk)
            .filter(|(_, expires)| *expires > now)
            .map(|(address, _)| address.clone())
    }

    /// Remembers `servers` (listed by discovery at `now`).
    fn remember(&mut self, servers: &[ServerAddr], now: Instant) {
        let expires = now + SERVER_MEMORY;
        self.discovered.retain(|_, (_, at)| *at > now);
        for server in servers {
            self.discovered.insert(server.pk, (server.clone(), expires));
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

    /// Servers to connect to, best first: discovery's list (available servers in the order
    /// discovery places clients; or all servers when `all`), then the seeds — the seeds
    /// alone if discovery fails or knows none; the seeds first with `prefer_seeds`.
    pub(crate) async fn candidate_servers(&self, all: bool, rng: &mut StdRng) -> Candidates {
        let discovery = self.inner.discovery.clone();
        let listed = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
            if all {
                discovery.all_servers().await
            } else {
                discovery.available_servers(CANDIDATES).await
            }
        })
        .await;
        let mut from_discovery = false;
        let mut candidates: Vec<ServerAddr> = match listed {
            Ok(Ok(entries)) => {
                from_discovery = true;
                for entry in &entries {
                    self.inner.pq_peers.learn_entry(entry);
                }
                entries
                    .into_iter()
                    .filter_map(|entry| {
                        entry.server.map(|server| ServerAddr {
                            pk: entry.owner,
                            address: server.address,
                            pq: entry.pq_capable,
                        })
                    })
                    .collect()
            }
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
            known.remember(&candidates, Instant::now());
            known.seeds.clone()
        };
        seeds.shuffle(rng);
        if self.inner.config.lifecycle.prefer_seeds {
            std::mem::swap(&mut candidates, &mut seeds);
        }
        let first: HashSet<PublicKey> = candidates.iter().map(|s| s.pk).collect();
        candidates.extend(seeds.into_iter().filter(|s| !first.contains(&s.pk)));
        candidates.retain(|server| server.pk != self.public_key());
        Candidates {
            servers: candidates,
            from_discovery,
        }
    }
}

/// Servers to connect to, best first.
pub(crate) struct Candidates {
    /// Discovery's list and the seeds.
    pub(crate) servers: Vec<ServerAddr>,
    /// Whether discovery answered (so a server missing from the list is really gone).
    pub(crate) from_discovery: bool,
}

/// Keeps `min_sessions` sessions up (every known server when it is 0) through the one
/// session keeper ([`super::keeper`]): this loop only chooses the targets. Its first choice
/// waits a random fraction of `start_jitter`.
///
/// With `min_sessions` = k it keeps k targets that are up or dialing; a target whose dials
/// fail is replaced by the next candidate when there is one (and kept, backing off, when
/// there is none). Every `rebalance_every` (± half) it reads the servers' loads and may move
/// one session off a server holding more than its fair share ([`super::balance`]): the new
/// session comes up first, then the old one is released.
async fn maintain(weak: WeakClient, stop: CancellationToken) {
    let Some(client) = weak.upgrade() else {
        return;
    };
    let config = client.inner.config.lifecycle.clone();
    let mut rng = match config.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_rng(&mut rand::rng()),
    };
    let mut keepers = SessionKeepers::new(
        &client,
        KeeperConfig {
            backoff_base: config.reconnect_base,
            backoff_cap: config.reconnect_cap,
            seed: Some(rng.random()),
        },
    );
    drop(client);
    let mut changes = keepers.changes();
    let mut balancing = Balancing::new(config.rebalance_every, config.min_sessions > 0);
    let mut failures = RecentFailures::default();
    let first = jitter(&mut rng, config.start_jitter);
    if !stopped_during(&stop, first).await {
        balancing.schedule(&mut rng);
        // Every server is looked up at start and each recheck; between them its keepers
        // redial on their own.
        let mut look_up = true;
        let mut recheck_at = Instant::now() + RECHECK_EVERY;
        loop {
            changes.borrow_and_update();
            let Some(client) = weak.upgrade() else { break };
            let step = async {
                if config.min_sessions == 0 {
                    if look_up {
                        keep_every_server(&client, &mut keepers, &mut rng).await;
                    }
                } else {
                    balancing.settle(&mut keepers);
                    keep_some_servers(
                        &client,
                        &mut keepers,
                        config.min_sessions,
                        &mut failures,
                        &mut rng,
                    )
                    .await;
                }
            };
            // A discovery call may take its 5 s deadline: `close` does not wait for it.
            tokio::select! {
                () = stop.cancelled() => break,
                () = step => {}
            }
            drop(client);
            look_up = false;
            tokio::select! {
                () = stop.cancelled() => break,
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(recheck_at) => {
                    look_up = true;
                    recheck_at = Instant::now() + RECHECK_EVERY;
                }
                () = balancing.due() => {
                    if let Some(client) = weak.upgrade() {
                        let check = balancing.check(&client, &mut keepers, config.min_sessions, &mut rng);
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = check => {}
                        }
                    }
                    balancing.schedule(&mut rng);
                }
            }
        }
    }
    keepers.stop().await;
}

/// The periodic balance check and the move it may start.
struct Balancing {
    every: Duration,
    enabled: bool,
    next: Instant,
    /// A move under way: `(from, to)`; `from` is released once `to` is up.
    moving: Option<(PublicKey, PublicKey)>,
}

impl Balancing {
    fn new(every: Duration, wanted: bool) -> Self {
        Self {
            every,
            enabled: wanted && !every.is_zero(),
            next: Instant::now(),
            moving: None,
        }
    }

    /// Sets the next check `every` ± half from now.
    fn schedule(&mut self, rng: &mut StdRng) {
        self.next = Instant::now() + self.every / 2 + jitter(rng, self.every);
    }

    /// Resolves when a check is due (never, when disabled).
    async fn due(&self) {
        if self.enabled {
            tokio::time::sleep_until(self.next).await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// Finishes a move: releases the old server once the new one is up, or gives the move up
    /// if the new one fails.
    fn settle(&mut self, keepers: &mut SessionKeepers) {
        let Some((from, to)) = self.moving else {
            return;
        };
        let state = keepers.states().into_iter().find(|(pk, _)| *pk == to);
        match state.map(|(_, state)| state) {
            Some(TargetState::Up) => {
                tracing::info!(%from, %to, "moved to a less loaded dmsg server");
                keepers.release(&from);
                self.moving = None;
            }
            Some(TargetState::Dialing) => {}
            Some(TargetState::Failing { .. }) | None => {
                keepers.release(&to);
                self.moving = None;
            }
        }
    }

    /// Reads the servers' loads and starts a move if the rule says so (only when every
    /// target is up and no move is under way).
    async fn check(
        &mut self,
        client: &Client,
        keepers: &mut SessionKeepers,
        wanted: usize,
        rng: &mut StdRng,
    ) {
        let states = keepers.states();
        if self.moving.is_some()
            || states.len() != wanted
            || states.iter().any(|(_, state)| *state != TargetState::Up)
        {
            return;
        }
        let discovery = client.inner.discovery.clone();
        let Ok(Ok(entries)) =
            tokio::time::timeout(DISCOVERY_TIMEOUT, discovery.all_servers()).await
        else {
            return;
        };
        for entry in &entries {
            client.inner.pq_peers.learn_entry(entry);
        }
        let loads: Vec<Load> = entries.iter().filter_map(Load::of).collect();
        for (home, _) in states {
            let Some(to) = balance::move_target(&home, &loads, rng) else {
                continue;
            };
            if keepers.contains(&to) {
                continue;
            }
            let Some(target) = entries
                .iter()
                .find(|entry| entry.owner == to)
                .and_then(|entry| {
                    entry.server.as_ref().map(|server| ServerAddr {
                        pk: to,
                        address: server.address.clone(),
                        pq: entry.pq_capable,
                    })
                })
            else {
                continue;
            };
            keepers.keep(&target);
            self.moving = Some((home, to));
            return;
        }
    }
}

/// Targets every server discovery lists and every seed; a listed server that is gone from
/// discovery's list (and is no seed) is released.
async fn keep_every_server(client: &Client, keepers: &mut SessionKeepers, rng: &mut StdRng) {
    let listed = client.candidate_servers(true, rng).await;
    if listed.from_discovery {
        let gone: Vec<PublicKey> = keepers
            .states()
            .into_iter()
            .map(|(pk, _)| pk)
            .filter(|pk| !listed.servers.iter().any(|s| s.pk == *pk))
            .collect();
        for pk in gone {
            keepers.release(&pk);
        }
    }
    for server in &listed.servers {
        keepers.keep(server);
    }
}

/// Servers whose keeper was released for failing, and when: not chosen again for
/// [`RECHECK_EVERY`], so a client whose servers are all down settles on one keeper backing
/// off instead of cycling through fresh keepers (each dialing at once). Also the longest run
/// of failures of a released target since a target was last up, which a replacement
/// continues: one sweep through the candidates is one round of backoff, not one per server.
#[derive(Default)]
struct RecentFailures {
    released: HashMap<PublicKey, Instant>,
    streak: u32,
}

impl RecentFailures {
    fn record(&mut self, pk: PublicKey, failures: u32) {
        let now = Instant::now();
        self.released
            .retain(|_, at| now.duration_since(*at) < RECHECK_EVERY);
        self.released.insert(pk, now);
        self.streak = self.streak.max(failures);
    }

    fn recent(&self, pk: &PublicKey) -> bool {
        self.released
            .get(pk)
            .is_some_and(|at| at.elapsed() < RECHECK_EVERY)
    }
}

/// Keeps `wanted` targets up or dialing: adds candidates while short (skipping servers that
/// just failed, unless there is no target at all), and releases failing targets once others
/// replace them.
async fn keep_some_servers(
    client: &Client,
    keepers: &mut SessionKeepers,
    wanted: usize,
    failures: &mut RecentFailures,
    rng: &mut StdRng,
) {
    let healthy = |keepers: &SessionKeepers| {
        keepers
            .states()
            .iter()
            .filter(|(_, state)| !matches!(state, TargetState::Failing { .. }))
            .count()
    };
    if keepers
        .states()
        .iter()
        .any(|(_, state)| *state == TargetState::Up)
    {
        failures.streak = 0;
    }
    if healthy(keepers) >= wanted {
        return;
    }
    let candidates = client.candidate_servers(false, rng).await.servers;
    for server in candidates {
        if healthy(keepers) >= wanted {
            break;
        }
        if keepers.contains(&server.pk) || (failures.recent(&server.pk) && !keepers.is_empty()) {
            continue;
        }
        keepers.keep_after(&server, failures.streak);
    }
    // Failing targets beyond `wanted`, most failures first, make room.
    let mut failing: Vec<(PublicKey, u32)> = keepers
        .states()
        .into_iter()
        .filter_map(|(pk, state)| match state {
            TargetState::Failing { failures } => Some((pk, failures)),
            _ => None,
        })
        .collect();
    failing.sort_by_key(|(_, failures)| std::cmp::Reverse(*failures));
    for (pk, failed) in failing {
        if keepers.len() <= wanted {
            break;
        }
        keepers.release(&pk);
        failures.record(pk, failed);
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
            seed: config.seed.map(|seed| seed.wrapping_add(1)),
            ..PublisherConfig::default()
        },
        Triggers {
            changes: Some(client.session_changes()),
            // A new session may be the first way to discovery over dmsg.
            paths: Some(client.session_changes()),
        },
    )
}
