//! The one keeper: a link kept up to each of a set of targets — one task per target, all
//! dialing concurrently; each dials, waits for its link to end, backs off (full jitter,
//! reset after every link) and dials again until its target is released.
//!
//! What a link is comes from a [`Link`]: a dmsg session to a server ([`SessionKeepers`]), or
//! a visor's transport to another visor. The client lifecycle chooses its servers and hands
//! them to a [`SessionKeepers`]; discovery's connector does the same with its configured and
//! registered servers; a visor keeps its persistent transports the same way. None has a dial
//! loop of its own.

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
use crate::session::Session;
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

/// Why a dial failed.
#[derive(Debug)]
pub enum DialFailure {
    /// The owner of the links is gone (closed): the keeper ends.
    OwnerGone,
    /// This attempt failed; the keeper backs off and retries.
    Failed(String),
}

/// What a keeper keeps up: how to dial a target and how to watch the link it got.
#[tonic::async_trait]
pub trait Link: Send + Sync + 'static {
    /// A target: whom to dial, and how.
    type Target: Clone + PartialEq + std::fmt::Display + Send + Sync + 'static;
    /// What tells targets apart (a target with the same key and other details replaces it).
    type Key: Clone + Eq + std::hash::Hash + Send + Sync + 'static;
    /// A live link.
    type Up: Send + 'static;

    /// The key of `target`.
    fn key(target: &Self::Target) -> Self::Key;
    /// Dials `target`.
    async fn dial(&self, target: &Self::Target) -> Result<Self::Up, DialFailure>;
    /// Resolves when `up` ends; says why, for the log.
    async fn ended(up: &Self::Up) -> String;
    /// Closes `up` (its target was released).
    fn close(up: Self::Up);
    /// Whether no link ever came up yet (a cold start): retries then stay within the base.
    fn bootstrapping(&self) -> bool;
}

/// dmsg sessions to servers, dialed through a client (held weakly: the keepers end when the
/// client does).
#[derive(Clone, Debug)]
pub struct SessionLink(WeakClient);

#[tonic::async_trait]
impl Link for SessionLink {
    type Target = ServerAddr;
    type Key = PublicKey;
    type Up = Session;

    fn key(target: &ServerAddr) -> PublicKey {
        target.pk
    }

    async fn dial(&self, server: &ServerAddr) -> Result<Session, DialFailure> {
        let Some(client) = self.0.upgrade() else {
            return Err(DialFailure::OwnerGone);
        };
        match client
            .connect_with(server.pk, server.address.as_str(), server.pq)
            .await
        {
            Ok(session) => Ok(session),
            Err(ConnectError::Closed) => Err(DialFailure::OwnerGone),
            Err(error) => Err(DialFailure::Failed(error.to_string())),
        }
    }

    async fn ended(session: &Session) -> String {
        session.closed().await.label().to_owned()
    }

    fn close(session: Session) {
        session.close(Code::Normal, "no longer a target");
    }

    fn bootstrapping(&self) -> bool {
        self.0
            .upgrade()
            .is_none_or(|client| !client.ever_connected())
    }
}

struct Target<L: Link> {
    target: L::Target,
    released: CancellationToken,
    state: watch::Receiver<TargetState>,
}

/// Links kept up to a set of targets. Dropping it stops every keeper (their tasks are
/// aborted); [`Keepers::stop`] stops them and waits. Releasing a target closes its link;
/// stopping the whole set does not.
pub struct Keepers<L: Link> {
    link: Arc<L>,
    rng: StdRng,
    config: KeeperConfig,
    targets: HashMap<L::Key, Target<L>>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    changes: Arc<watch::Sender<u64>>,
}

/// dmsg sessions kept up to servers.
pub type SessionKeepers = Keepers<SessionLink>;

impl<L: Link> std::fmt::Debug for Keepers<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keepers")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl Keepers<SessionLink> {
    /// Keepers of sessions dialed through `client` (held weakly: they end when the client
    /// does).
    pub fn new(client: &Client, config: KeeperConfig) -> Self {
        Self::with_link(SessionLink(client.downgrade()), config)
    }
}

impl<L: Link> Keepers<L> {
    /// Keepers dialing with `link`.
    pub fn with_link(link: L, config: KeeperConfig) -> Self {
        let (changes, _) = watch::channel(0);
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Self {
            link: Arc::new(link),
            rng,
            config,
            targets: HashMap::new(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            changes: Arc::new(changes),
        }
    }

    /// Keeps a link to `target`: starts a keeper, or re-points the one for its key if the
    /// target changed (a new address). Returns whether a keeper was started.
    pub fn keep(&mut self, target: &L::Target) -> bool {
        self.keep_after(target, 0)
    }

    /// [`SessionKeepers::keep`] for a target that replaces one which failed `failures` times
    /// in a row: its first dial goes at once, but a failure then waits as the next of that
    /// streak (so a client whose servers are all down backs off instead of starting over
    /// with each replacement). Its state counts its own failures only.
    pub fn keep_after(&mut self, target: &L::Target, failures: u32) -> bool {
        let key = L::key(target);
        if let Some(held) = self.targets.get(&key) {
            if held.target == *target {
                return false;
            }
            self.release(&key);
        }
        let released = CancellationToken::new();
        let (state, watched) = watch::channel(TargetState::Dialing);
        self.targets.insert(
            key,
            Target {
                target: target.clone(),
                released: released.clone(),
                state: watched,
            },
        );
        let keeper = Keeper {
            link: self.link.clone(),
            target: target.clone(),
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

    /// Stops keeping `key`; its link, if up, is closed.
    pub fn release(&mut self, key: &L::Key) {
        if let Some(target) = self.targets.remove(key) {
            target.released.cancel();
            self.bump();
        }
        self.reap();
    }

    /// Keeps exactly `targets`: new ones are started, moved ones re-pointed, others released.
    pub fn keep_exactly(&mut self, targets: &[L::Target]) {
        let gone: Vec<L::Key> = self
            .targets
            .keys()
            .filter(|key| !targets.iter().any(|target| L::key(target) == **key))
            .cloned()
            .collect();
        for key in gone {
            self.release(&key);
        }
        for target in targets {
            self.keep(target);
        }
    }

    /// Whether `key` is a target.
    pub fn contains(&self, key: &L::Key) -> bool {
        self.targets.contains_key(key)
    }

    /// Every target and where it stands.
    pub fn states(&self) -> Vec<(L::Key, TargetState)> {
        self.targets
            .iter()
            .map(|(key, target)| (key.clone(), *target.state.borrow()))
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

    /// Stops every keeper and waits for them. Their links stay: closing them is the owner's
    /// own, ordered shutdown (for sessions, [`Client::close`]).
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

impl<L: Link> Drop for Keepers<L> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One target's keeper task.
struct Keeper<L: Link> {
    link: Arc<L>,
    target: L::Target,
    config: KeeperConfig,
    seed: u64,
    /// Failures of the targets this one replaces, in a row.
    prior_failures: u32,
    /// This target was released: close its link and end.
    released: CancellationToken,
    /// The whole set stopped: end, leaving the link to its owner.
    stop: CancellationToken,
    state: watch::Sender<TargetState>,
    changes: Arc<watch::Sender<u64>>,
}

impl<L: Link> Keeper<L> {
    async fn run(self) {
        let mut backoff =
            Backoff::seeded(self.config.backoff_base, self.config.backoff_cap, self.seed);
        backoff.continue_after(self.prior_failures);
        let mut failures = 0u32;
        loop {
            let dialed = tokio::select! {
                () = self.ended() => return,
                dialed = self.link.dial(&self.target) => dialed,
            };
            match dialed {
                Ok(up) => {
                    tracing::info!(target = %self.target, "link up");
                    failures = 0;
                    backoff.reset();
                    self.report(TargetState::Up);
                    tokio::select! {
                        () = self.released.cancelled() => {
                            L::close(up);
                            return;
                        }
                        () = self.stop.cancelled() => return,
                        why = L::ended(&up) => {
                            tracing::info!(target = %self.target, %why, "link ended; redialing");
                        }
                    }
                    self.report(TargetState::Dialing);
                }
                Err(DialFailure::OwnerGone) => return,
                Err(DialFailure::Failed(error)) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(target = %self.target, %error, failures, "dial failed");
                    self.report(TargetState::Failing { failures });
                }
            }
            let delay = if self.link.bootstrapping() {
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

    fn report(&self, state: TargetState) {
        self.state.send_replace(state);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
