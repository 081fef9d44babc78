//! The one session keeper: a session kept up to each of a set of target servers — one task
//! per target, all dialing concurrently; each dials, waits for its session to end, backs off
//! (full jitter, reset after every session) and dials again until its target is released.
//!
//! The client lifecycle chooses its targets and hands them to a [`SessionKeepers`];
//! discovery's connector does the same with its configured and registered servers. Neither
//! has a dial loop of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Client, ConnectError, WeakClient};
use crate::addr::ServerAddr;
use crate::backoff::Backoff;
use crate::identity::PublicKey;
use crate::wire::Code;

/// Keeper timing.
#[derive(Clone, Copy, Debug)]
pub struct KeeperConfig {
    /// First backoff ceiling — also the ceiling of every retry until the client's first
    /// session ever (a cold start: the servers may come up a moment later, and nothing
    /// would tell it).
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// Seeds the keepers' backoff jitter (each keeper draws its own seed from it); `None`:
    /// OS randomness.
    pub seed: Option<u64>,
}

/// Where a target stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// The first dial, or a redial after a session ended, is under way.
    Dialing,
    /// A session is up.
    Up,
    /// The last `failures` dials in a row failed; the next one waits for its backoff.
    Failing {
        /// Failed dials since the last session.
        failures: u32,
    },
}

struct Target {
    address: String,
    released: CancellationToken,
    state: watch::Receiver<TargetState>,
}

/// Sessions kept up to a set of targets. Dropping it stops every keeper (their tasks are
/// aborted); [`SessionKeepers::stop`] stops them and waits. Releasing a target closes its
/// session; stopping the whole set does not.
pub struct SessionKeepers {
    client: WeakClient,
    rng: StdRng,
    config: KeeperConfig,
    targets: HashMap<PublicKey, Target>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    changes: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for SessionKeepers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeepers")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl SessionKeepers {
    /// Keepers dialing through `client` (held weakly: they end when the client does).
    pub fn new(client: &Client, config: KeeperConfig) -> Self {
        let (changes, _) = watch::channel(0);
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self {
            client: client.downgrade(),
            rng,
            config,
            targets: HashMap::new(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            changes: Arc::new(changes),
        }
    }

    /// Keeps a session to `server`: starts a keeper, or re-points the one for its key if the
    /// address changed. Returns whether a keeper was started.
    pub fn keep(&mut self, server: &ServerAddr) -> bool {
        self.keep_after(server, 0)
    }

    /// [`SessionKeepers::keep`] for a target that replaces one which failed `failures` times
    /// in a row: its first dial goes at once, but a failure then waits as the next of that
    /// streak (so a client whose servers are all down backs off instead of starting over
    /// with each replacement). Its state counts its own failures only.
    pub fn keep_after(&mut self, server: &ServerAddr, failures: u32) -> bool {
        if let Some(target) = self.targets.get(&server.pk) {
            if target.address == server.address {
                return false;
            }
            self.release(&server.pk);
        }
        let released = CancellationToken::new();
        let (state, watched) = watch::channel(TargetState::Dialing);
        self.targets.insert(
            server.pk,
            Target {
                address: server.address.clone(),
                released: released.clone(),
                state: watched,
            },
        );
        let keeper = Keeper {
            client: self.client.clone(),
            server: server.clone(),
            config: self.config,
            seed: self.rng.random(),
            prior_failures: failures,
            released,
            stop: self.stop.clone(),
            state,
            changes: self.changes.clone(),
        };
        self.tasks.spawn(keeper.run());
        self.bump();
        true
    }

    /// Stops keeping `pk`; its session, if up, is closed.
    pub fn release(&mut self, pk: &PublicKey) {
        if let Some(target) = self.targets.remove(pk) {
            target.released.cancel();
            self.bump();
        }
        self.reap();
    }

    /// Keeps exactly `targets`: new ones are started, moved ones re-pointed, others released.
    pub fn keep_exactly(&mut self, targets: &[ServerAddr]) {
        let gone: Vec<PublicKey> = self
            .targets
            .keys()
            .filter(|pk| !targets.iter().any(|server| server.pk == **pk))
            .copied()
            .collect();
        for pk in gone {
            self.release(&pk);
        }
        for server in targets {
            self.keep(server);
        }
    }

    /// Whether `pk` is a target.
    pub fn contains(&self, pk: &PublicKey) -> bool {
        self.targets.contains_key(pk)
    }

    /// Every target and where it stands.
    pub fn states(&self) -> Vec<(PublicKey, TargetState)> {
        self.targets
            .iter()
            .map(|(pk, target)| (*pk, *target.state.borrow()))
            .collect()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is no target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// A watch bumped whenever a target is added or released or changes state.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Stops every keeper and waits for them. Their sessions stay: closing them is the
    /// client's own, ordered shutdown ([`Client::close`]).
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Frees finished keeper tasks.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

impl Drop for SessionKeepers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One target's keeper task.
struct Keeper {
    client: WeakClient,
    server: ServerAddr,
    config: KeeperConfig,
    seed: u64,
    /// Failures of the targets this one replaces, in a row.
    prior_failures: u32,
    /// This target was released: close its session and end.
    released: CancellationToken,
    /// The whole set stopped: end, leaving the session to the client.
    stop: CancellationToken,
    state: watch::Sender<TargetState>,
    changes: Arc<watch::Sender<u64>>,
}

impl Keeper {
    async fn run(self) {
        let mut backoff =
            Backoff::seeded(self.config.backoff_base, self.config.backoff_cap, self.seed);
        backoff.continue_after(self.prior_failures);
        let mut failures = 0u32;
        loop {
            let Some(client) = self.client.upgrade() else {
                return;
            };
            let connected = tokio::select! {
                () = self.ended() => return,
                connected = client.connect_with(
                    self.server.pk,
                    self.server.address.as_str(),
                    self.server.pq,
                ) => connected,
            };
            drop(client);
            match connected {
                Ok(session) => {
                    tracing::info!(server = %self.server, "connected to dmsg server");
                    failures = 0;
                    backoff.reset();
                    self.report(TargetState::Up);
                    tokio::select! {
                        () = self.released.cancelled() => {
                            session.close(Code::Normal, "no longer a target");
                            return;
                        }
                        () = self.stop.cancelled() => return,
                        code = session.closed() => {
                            tracing::info!(server = %self.server, code = code.label(), "dmsg session ended; redialing");
                        }
                    }
                    self.report(TargetState::Dialing);
                }
                Err(ConnectError::Closed) => return,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(server = %self.server, %error, failures, "dial failed");
                    self.report(TargetState::Failing { failures });
                }
            }
            let delay = if self.bootstrapping() {
                backoff.jitter(self.config.backoff_base)
            } else {
                backoff.next_delay()
            };
            tokio::select! {
                () = self.ended() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Resolves when this target is released or the whole set stopped.
    async fn ended(&self) {
        tokio::select! {
            () = self.released.cancelled() => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Whether the client never had a session (then retries stay within the base).
    fn bootstrapping(&self) -> bool {
        self.client
            .upgrade()
            .is_none_or(|client| !client.ever_connected())
    }

    fn report(&self, state: TargetState) {
        self.state.send_replace(state);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
