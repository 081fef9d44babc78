//! The one entry publisher (ARCHITECTURE §5, PROTOCOL.md §15.2): keeps a signed record in
//! discovery — an owner's entry (a server's registration, a client's delegated servers) or a
//! transport's registration, signed by both its edges (PROTOCOL.md §14.4).
//!
//! One background task per record:
//! - publishes at once, then retries a failure with full-jitter backoff — within half the
//!   base delay until the first success, so a bootstrap is never held back — or at once when a new
//!   path to discovery opens (`paths`);
//! - republishes when the content changes (`changes`, debounced after the first publish; an
//!   unchanged entry is not sent again), every `refresh`, and as soon as a periodic check finds that discovery lost
//!   the entry (it restarted empty, or the entry expired);
//! - resyncs on a stale sequence (PROTOCOL.md §14.3);
//! - re-checks shutdown right before every write.
//!
//! [`EntryPublisher::stop`] cancels the task and *joins* it (a publish in flight completes),
//! and only then deletes the entry, within a deadline: no publish can land after the delete.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discovery::{Discovery, DiscoveryError, Published, publish};
use crate::entry::{Entry, TransportEntry, unix_nanos_now};
use crate::registry::Registry;
use dmsg_core::backoff::Backoff;
use dmsg_core::identity::Keypair;

/// Builds the entry to publish for a sequence; `None` when there is nothing to publish yet
/// (a client with no session has no server to name).
pub trait EntrySource: Send + Sync + 'static {
    /// The entry for `sequence` (unsigned; the publisher signs it).
    fn entry(&self, sequence: u64) -> Option<Entry>;
}

impl<F: Fn(u64) -> Option<Entry> + Send + Sync + 'static> EntrySource for F {
    fn entry(&self, sequence: u64) -> Option<Entry> {
        self(sequence)
    }
}

/// Gets a transport entry signed by both edges, timestamped now (the other edge signs over
/// the transport); `None` when it cannot now (the publisher retries).
#[tonic::async_trait]
pub trait TransportSource: Send + Sync + 'static {
    /// A freshly signed entry.
    async fn signed(&self) -> Option<TransportEntry>;
}

/// Publisher timing.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// First retry ceiling.
    pub backoff_base: Duration,
    /// Largest retry ceiling.
    pub backoff_cap: Duration,
    /// Republish this often without changes.
    pub refresh: Duration,
    /// Content changes within this window make one publish.
    pub debounce: Duration,
    /// How often to check that discovery still holds the entry; it is republished at once
    /// when it does not.
    pub check_every: Duration,
    /// Longest the delete on [`EntryPublisher::stop`] may take.
    pub delete_timeout: Duration,
    /// Seeds the retry jitter (reproducible runs); `None`: OS randomness.
    pub seed: Option<u64>,
}

impl Default for PublisherConfig {
    /// Retries 1 s → 30 s, refresh every 60 s, 1 s debounce, a check every 5 s, 5 s delete.
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            refresh: Duration::from_secs(60),
            debounce: Duration::from_secs(1),
            check_every: Duration::from_secs(5),
            delete_timeout: Duration::from_secs(5),
            seed: None,
        }
    }
}

/// What can make the publisher act before its timers.
#[derive(Debug, Default)]
pub struct Triggers {
    /// Bumped when the entry's content may have changed (sessions came or went).
    pub changes: Option<watch::Receiver<u64>>,
    /// Bumped when a new way to discovery may have opened: a failed attempt is retried at
    /// once instead of after its backoff.
    pub paths: Option<watch::Receiver<u64>>,
}

/// Where publishing stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// No discovery is configured.
    #[default]
    Disabled,
    /// Not stored yet (retrying).
    Pending,
    /// The entry is stored.
    Registered,
    /// Stopped: the entry was deleted (or the delete was attempted).
    Deregistered,
}

/// The observable state of a publisher (for stats and `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishState {
    /// Where it stands.
    pub phase: Phase,
    /// How discovery is reached: "tcp", "dmsg", "tcp+dmsg" or "".
    pub via: String,
    /// The stored entry's sequence (0 before the first).
    pub sequence: u64,
    /// Failed attempts since the last success.
    pub failed_attempts: u32,
    /// The last error, if the last attempt failed.
    pub last_error: String,
    /// Unix nanoseconds of the last successful publish (0 if none).
    pub last_registered_nanos: i64,
}

/// A running publisher: its task and its state. Dropped without [`EntryPublisher::stop`]
/// (an error path), it still ends its task.
pub struct EntryPublisher {
    state: watch::Sender<PublishState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    withdraw: Option<Box<dyn Withdraw>>,
    delete_timeout: Duration,
}

impl std::fmt::Debug for EntryPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryPublisher")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl EntryPublisher {
    /// No discovery: nothing is published ([`Phase::Disabled`]).
    pub fn disabled() -> Self {
        Self {
            state: watch::Sender::new(PublishState::default()),
            stop: CancellationToken::new(),
            task: None,
            withdraw: None,
            delete_timeout: Duration::ZERO,
        }
    }

    /// Starts publishing `source`'s entries, signed with `keypair`, through `discovery`
    /// (reached `via`), in a background task. Call inside a tokio runtime.
    pub fn start(
        keypair: Keypair,
        discovery: Arc<dyn Discovery>,
        via: &str,
        source: impl EntrySource,
        config: PublisherConfig,
        triggers: Triggers,
    ) -> Self {
        let record = EntryRecord {
            keypair: keypair.clone(),
            discovery: discovery.clone(),
            source: Box::new(source),
            stored: None,
        };
        let withdraw = EntryWithdraw { keypair, discovery };
        Self::spawn(record, Box::new(withdraw), via, config, triggers)
    }

    /// Starts keeping transport `id` registered in `registry` (reached `via`): each publish
    /// gets a fresh entry signed by both edges from `source`; [`EntryPublisher::stop`]
    /// deregisters it, signed with `keypair` (an edge's). Call inside a tokio runtime.
    pub fn start_transport(
        keypair: Keypair,
        id: [u8; 16],
        registry: Arc<dyn Registry>,
        via: &str,
        source: impl TransportSource,
        config: PublisherConfig,
    ) -> Self {
        let record = TransportRecord {
            id,
            registry: registry.clone(),
            source: Box::new(source),
            stored: None,
        };
        let withdraw = TransportWithdraw {
            keypair,
            id,
            registry,
        };
        Self::spawn(record, Box::new(withdraw), via, config, Triggers::default())
    }

    fn spawn(
        record: impl Record,
        withdraw: Box<dyn Withdraw>,
        via: &str,
        config: PublisherConfig,
        triggers: Triggers,
    ) -> Self {
        let state = watch::Sender::new(PublishState {
            phase: Phase::Pending,
            via: via.to_owned(),
            ..PublishState::default()
        });
        let stop = CancellationToken::new();
        let delete_timeout = config.delete_timeout;
        let task = Task {
            record,
            config,
            triggers,
            state: state.clone(),
            stop: stop.clone(),
        };
        Self {
            state,
            stop,
            task: Some(tokio::spawn(task.run())),
            withdraw: Some(withdraw),
            delete_timeout,
        }
    }

    /// The current state.
    pub fn state(&self) -> PublishState {
        self.state.borrow().clone()
    }

    /// A watch of the state.
    pub fn subscribe(&self) -> watch::Receiver<PublishState> {
        self.state.subscribe()
    }

    /// Stops the task and joins it (a publish in flight completes first), then deletes the
    /// entry if one was stored, within the delete deadline.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            tracing::error!("the entry publisher panicked");
        }
        let Some(withdraw) = self.withdraw.take() else {
            return;
        };
        let was_stored = self.state.borrow().sequence > 0;
        self.state
            .send_modify(|state| state.phase = Phase::Deregistered);
        if !was_stored {
            return;
        }
        let what = withdraw.what();
        match tokio::time::timeout(self.delete_timeout, withdraw.withdraw()).await {
            Ok(Ok(())) => tracing::debug!(%what, "removed from discovery"),
            Ok(Err(error)) => {
                tracing::warn!(%what, %error, "could not remove it from discovery; it expires on its own");
            }
            Err(_) => {
                tracing::warn!(%what, "removing it from discovery timed out; it expires on its own");
            }
        }
    }
}

impl Drop for EntryPublisher {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Why the task woke up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// Publish even if the content is unchanged (first, retry, refresh, entry lost).
    Publish,
    /// The content may have changed: publish only if it did.
    Changed,
}

/// What a publisher keeps in discovery: an owner's entry, or a transport's registration.
#[tonic::async_trait]
trait Record: Send + 'static {
    /// Publishes a fresh version. `Ok(false)` when there was nothing to publish or nothing
    /// changed.
    async fn publish_once(
        &mut self,
        wake: Wake,
        state: &watch::Sender<PublishState>,
    ) -> Result<bool, DiscoveryError>;
    /// Whether a version was stored once (before that, a bootstrap retries quickly).
    fn has_stored(&self) -> bool;
    /// True if discovery answered and no longer holds what was stored (or holds an older
    /// version). An unreachable discovery is not a loss: the next check asks again.
    async fn lost(&self, state: &PublishState) -> bool;
    /// What is published, for logs.
    fn what(&self) -> String;
}

/// Removes what a publisher stored (on [`EntryPublisher::stop`]).
#[tonic::async_trait]
trait Withdraw: Send + Sync + 'static {
    async fn withdraw(&self) -> Result<(), DiscoveryError>;
    fn what(&self) -> String;
}

/// The publishing task.
struct Task<R> {
    record: R,
    config: PublisherConfig,
    triggers: Triggers,
    state: watch::Sender<PublishState>,
    stop: CancellationToken,
}

/// Completes when `watch` changes; never if there is none (or its sender is gone).
async fn changed(watch: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = watch
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// An entry's content: what a republish would change.
fn content(entry: &Entry) -> Entry {
    Entry {
        sequence: 0,
        timestamp: 0,
        signature: [0; dmsg_core::identity::SIGNATURE_LEN],
        ..entry.clone()
    }
}

impl<R: Record> Task<R> {
    async fn run(mut self) {
        let (base, cap) = (self.config.backoff_base, self.config.backoff_cap);
        let mut backoff = match self.config.seed {
            Some(seed) => Backoff::seeded(base, cap, seed),
            None => Backoff::new(base, cap),
        };
        let mut wake = Wake::Publish;
        let mut next_refresh = Instant::now() + self.config.refresh;
        loop {
            // Checked right before publishing: nothing starts after shutdown began.
            if self.stop.is_cancelled() {
                return;
            }
            // Not raced with `stop`: a publish in flight completes, and `stop` joins it.
            match self.record.publish_once(wake, &self.state).await {
                Ok(published) => {
                    backoff.reset();
                    if published {
                        next_refresh = Instant::now() + self.config.refresh;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "entry not published yet; retrying");
                    // Before the first success (a bootstrap), retry within half the base
                    // delay: discovery may come up any moment and nothing would say so.
                    let delay = if self.record.has_stored() {
                        backoff.next_delay()
                    } else {
                        backoff.jitter(self.config.backoff_base / 2)
                    };
                    let stopped = tokio::select! {
                        () = self.stop.cancelled() => true,
                        () = tokio::time::sleep(delay) => false,
                        () = changed(&mut self.triggers.paths) => false,
                        () = changed(&mut self.triggers.changes) => false,
                    };
                    if stopped {
                        return;
                    }
                    wake = Wake::Publish;
                    continue;
                }
            }
            wake = match self.wait(next_refresh).await {
                Some(wake) => wake,
                None => return,
            };
        }
    }

    /// Waits for the next reason to publish; `None` once stopped.
    async fn wait(&mut self, next_refresh: Instant) -> Option<Wake> {
        loop {
            let check = tokio::time::sleep(self.config.check_every);
            let woke = tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep_until(next_refresh) => return Some(Wake::Publish),
                () = changed(&mut self.triggers.changes) => Wake::Changed,
                () = check => {
                    let state = self.state.borrow().clone();
                    if self.record.has_stored() && self.record.lost(&state).await {
                        tracing::info!(
                            what = %self.record.what(),
                            "discovery lost what was published; republishing"
                        );
                        return Some(Wake::Publish);
                    }
                    continue;
                }
            };
            // Debounce: changes within the window make one publish. Not before the first
            // publish: a cold start waits for nothing it does not have to.
            let stopped = self.record.has_stored()
                && tokio::select! {
                    () = self.stop.cancelled() => true,
                    () = tokio::time::sleep(self.config.debounce) => false,
                };
            if let Some(changes) = &mut self.triggers.changes {
                changes.mark_unchanged();
            }
            return (!stopped).then_some(woke);
        }
    }
}

/// An owner's entry (PROTOCOL.md §14.1, §15.2).
struct EntryRecord {
    keypair: Keypair,
    discovery: Arc<dyn Discovery>,
    source: Box<dyn EntrySource>,
    /// The content of the last stored entry (sequence, time and signature cleared).
    stored: Option<Entry>,
}

#[tonic::async_trait]
impl Record for EntryRecord {
    fn has_stored(&self) -> bool {
        self.stored.is_some()
    }

    fn what(&self) -> String {
        format!("the entry of {}", self.keypair.public().short())
    }

    async fn lost(&self, state: &PublishState) -> bool {
        let sequence = state.sequence;
        match self.discovery.entry(&self.keypair.public()).await {
            Ok(Some(entry)) => entry.sequence < sequence,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Publishes a fresh entry (built anew each time; nothing cached is edited).
    async fn publish_once(
        &mut self,
        wake: Wake,
        state: &watch::Sender<PublishState>,
    ) -> Result<bool, DiscoveryError> {
        // A second round only after discovery reported a newer entry of ours.
        for _ in 0..2 {
            let sequence = state.borrow().sequence + 1;
            let Some(entry) = self.source.entry(sequence) else {
                return Ok(false);
            };
            if wake == Wake::Changed && self.stored.as_ref() == Some(&content(&entry)) {
                return Ok(false);
            }
            match publish(self.discovery.as_ref(), &self.keypair, entry).await {
                Ok(Published::Stored { entry, created }) => {
                    if created || state.borrow().phase != Phase::Registered {
                        tracing::info!(
                            owner = %self.keypair.public().short(),
                            sequence = entry.sequence,
                            "entry published to discovery"
                        );
                    }
                    self.stored = Some(content(&entry));
                    state.send_modify(|state| {
                        state.phase = Phase::Registered;
                        state.sequence = entry.sequence;
                        state.failed_attempts = 0;
                        state.last_error.clear();
                        state.last_registered_nanos = unix_nanos_now();
                    });
                    return Ok(true);
                }
                // Discovery holds a newer entry of ours: continue after it, at once.
                Ok(Published::Superseded { stored_sequence }) => {
                    state.send_modify(|state| state.sequence = stored_sequence);
                }
                Err(error) => {
                    state.send_modify(|state| {
                        state.failed_attempts = state.failed_attempts.saturating_add(1);
                        state.last_error = error.to_string();
                    });
                    return Err(error);
                }
            }
        }
        Err(DiscoveryError::Unavailable(
            "discovery keeps holding a newer entry of ours".into(),
        ))
    }
}

struct EntryWithdraw {
    keypair: Keypair,
    discovery: Arc<dyn Discovery>,
}

#[tonic::async_trait]
impl Withdraw for EntryWithdraw {
    async fn withdraw(&self) -> Result<(), DiscoveryError> {
        self.discovery.delete_entry(&self.keypair).await
    }

    fn what(&self) -> String {
        format!("the entry of {}", self.keypair.public().short())
    }
}

/// A transport's registration, signed by both edges (PROTOCOL.md §14.4).
struct TransportRecord {
    id: [u8; 16],
    registry: Arc<dyn Registry>,
    source: Box<dyn TransportSource>,
    /// The last entry stored.
    stored: Option<TransportEntry>,
}

#[tonic::async_trait]
impl Record for TransportRecord {
    async fn publish_once(
        &mut self,
        wake: Wake,
        state: &watch::Sender<PublishState>,
    ) -> Result<bool, DiscoveryError> {
        // A transport's content never changes; only refreshes and retries publish.
        if wake == Wake::Changed {
            return Ok(false);
        }
        let registered = match self.source.signed().await {
            Some(entry) => self.registry.register(&entry).await.map(|()| entry),
            None => Err(DiscoveryError::Unavailable(
                "the other edge did not sign the transport entry in time".into(),
            )),
        };
        match registered {
            Ok(entry) => {
                if self.stored.is_none() {
                    tracing::info!(what = %self.what(), "transport registered in discovery");
                }
                self.stored = Some(entry);
                state.send_modify(|state| {
                    state.phase = Phase::Registered;
                    state.sequence += 1;
                    state.failed_attempts = 0;
                    state.last_error.clear();
                    state.last_registered_nanos = unix_nanos_now();
                });
                Ok(true)
            }
            Err(error) => {
                state.send_modify(|state| {
                    state.failed_attempts = state.failed_attempts.saturating_add(1);
                    state.last_error = error.to_string();
                });
                Err(error)
            }
        }
    }

    fn has_stored(&self) -> bool {
        self.stored.is_some()
    }

    async fn lost(&self, _: &PublishState) -> bool {
        let Some(stored) = &self.stored else {
            return false;
        };
        match self.registry.transport(&self.id).await {
            Ok(Some(entry)) => entry.timestamp < stored.timestamp,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    fn what(&self) -> String {
        format!("transport {}", hex::encode(self.id))
    }
}

struct TransportWithdraw {
    keypair: Keypair,
    id: [u8; 16],
    registry: Arc<dyn Registry>,
}

#[tonic::async_trait]
impl Withdraw for TransportWithdraw {
    async fn withdraw(&self) -> Result<(), DiscoveryError> {
        self.registry.deregister(&self.keypair, &self.id).await
    }

    fn what(&self) -> String {
        format!("transport {}", hex::encode(self.id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use dmsg_core::identity::PublicKey;

    use super::*;
    use crate::memory::MemoryDiscovery;

    /// A client entry naming `servers`, republished from `changes`.
    struct Fixture {
        store: Arc<MemoryDiscovery>,
        keypair: Keypair,
        servers: Arc<Mutex<Vec<PublicKey>>>,
        changes: watch::Sender<u64>,
        paths: watch::Sender<u64>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                store: Arc::new(MemoryDiscovery::default()),
                keypair: Keypair::generate(),
                servers: Arc::new(Mutex::new(vec![Keypair::generate().public()])),
                changes: watch::Sender::new(0),
                paths: watch::Sender::new(0),
            }
        }

        fn start(&self) -> EntryPublisher {
            let owner = self.keypair.public();
            let servers = self.servers.clone();
            EntryPublisher::start(
                self.keypair.clone(),
                self.store.clone(),
                "test",
                move |sequence| {
                    Some(Entry::client(
                        owner,
                        sequence,
                        servers.lock().unwrap().clone(),
                    ))
                },
                PublisherConfig {
                    seed: Some(5),
                    ..PublisherConfig::default()
                },
                Triggers {
                    changes: Some(self.changes.subscribe()),
                    paths: Some(self.paths.subscribe()),
                },
            )
        }

        fn stored(&self) -> Option<Entry> {
            self.store.get(&self.keypair.public())
        }

        fn puts(&self) -> usize {
            self.store.puts()
        }

        fn bump(&self) {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Waits (virtual time) for `condition`; returns how long it took.
    async fn until(limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() <= limit, "not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }

    /// The first publish goes at once (no debounce); a change is published once per
    /// debounce window, and a bump without a change publishes nothing.
    #[tokio::test(start_paused = true)]
    async fn publishes_at_once_then_once_per_debounced_change() {
        let fixture = Fixture::new();
        let publisher = fixture.start();
        let first = until(Duration::from_millis(10), || fixture.stored().is_some()).await;
        assert!(first <= Duration::from_millis(1), "{first:?}");
        assert_eq!(publisher.state().phase, Phase::Registered);

        fixture.bump();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(fixture.puts(), 1, "unchanged content is not sent again");

        fixture
            .servers
            .lock()
            .unwrap()
            .push(Keypair::generate().public());
        for _ in 0..5 {
            fixture.bump();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let published = until(Duration::from_secs(2), || fixture.puts() == 2).await;
        assert!(
            published >= Duration::from_millis(500),
            "debounced: {published:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(fixture.puts(), 2, "five bumps in one window, one publish");
        assert_eq!(fixture.stored().unwrap().sequence, 2);
        publisher.stop().await;
    }

    /// Until the first success, retries come within half the base delay (1 s): a bootstrap
    /// is never held back; a new path retries at once.
    #[tokio::test(start_paused = true)]
    async fn a_bootstrap_retries_within_half_the_base_and_at_once_on_a_new_path() {
        let fixture = Fixture::new();
        fixture.store.set_down(true);
        let publisher = fixture.start();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let attempts = fixture.puts();
        assert!(
            attempts >= 20,
            "at least one try per 0.5 s: {attempts} in 10 s"
        );
        assert_eq!(publisher.state().phase, Phase::Pending);
        assert_eq!(publisher.state().failed_attempts as usize, attempts);

        fixture.store.set_down(false);
        fixture.paths.send_modify(|n| *n += 1);
        let took = until(Duration::from_millis(10), || fixture.stored().is_some()).await;
        assert!(
            took <= Duration::from_millis(1),
            "a new path retries at once: {took:?}"
        );
        publisher.stop().await;
    }

    /// A lost entry (discovery restarted empty) is back within `check_every`; a stored entry
    /// newer than ours is continued after; `stop` joins, then deletes.
    #[tokio::test(start_paused = true)]
    async fn a_lost_entry_is_back_within_the_check_and_stop_deletes_it() {
        let fixture = Fixture::new();
        let publisher = fixture.start();
        until(Duration::from_millis(10), || fixture.stored().is_some()).await;
        fixture.store.wipe();
        let back = until(Duration::from_secs(6), || fixture.stored().is_some()).await;
        assert!(back <= Duration::from_secs(5), "{back:?}");

        // Another instance of the same owner stored sequence 10: the next publish follows it.
        let mut newer = fixture.stored().unwrap();
        newer.sequence = 10;
        let newer = newer.signed(&fixture.keypair);
        fixture.store.set(newer);
        fixture.servers.lock().unwrap().clear();
        fixture
            .servers
            .lock()
            .unwrap()
            .push(Keypair::generate().public());
        fixture.bump();
        until(Duration::from_secs(3), || {
            fixture.stored().is_some_and(|entry| entry.sequence == 11)
        })
        .await;

        publisher.stop().await;
        assert!(fixture.stored().is_none(), "deleted on stop");
        assert_eq!(fixture.store.deletes(), 1);
    }
}
