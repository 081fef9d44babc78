//! Registration with discovery: one background task publishes the server entry (address and
//! free sessions) with full-jitter backoff until it lands, refreshes it every
//! `refresh`, and republishes soon after the session count changes (debounced). It never gates
//! the relay: the listener was accepting before it started.
//!
//! Shutdown is ordered (ARCHITECTURE §5 rule 5): [`Registration::stop`] stops the task and
//! *joins* it — a publish in flight completes rather than being abandoned on the wire — and
//! only then deletes the entry, so no publish can land after the delete.

use std::sync::Arc;
use std::time::Duration;

use dmsg::backoff::Backoff;
use dmsg::discovery::{Discovery, DiscoveryError, Published, publish};
use dmsg::entry::{Entry, ServerPart, unix_nanos_now};
use dmsg::identity::Keypair;
use dmsg::server::Server;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The server type registered in entries.
pub const SERVER_TYPE: &str = "dmsg";
/// Session-count changes within this window make one publish.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Longest the delete on shutdown may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// Registration timing.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// The address registered (what clients dial).
    pub public_address: String,
    /// First retry ceiling.
    pub backoff_base: Duration,
    /// Largest retry ceiling.
    pub backoff_cap: Duration,
    /// Republish this often without changes.
    pub refresh: Duration,
    /// Session-count changes within this window make one publish.
    pub debounce: Duration,
    /// Whether the relay offers the post-quantum hybrid (advertised in the entry).
    pub pq_capable: bool,
}

impl RegistrationConfig {
    /// Retries 1 s → 30 s, refresh every 60 s, 1 s debounce.
    pub fn new(public_address: String, pq_capable: bool) -> Self {
        Self {
            public_address,
            pq_capable,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            refresh: Duration::from_secs(60),
            debounce: DEBOUNCE,
        }
    }
}

/// Where registration stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// No discovery is configured.
    #[default]
    Disabled,
    /// Not registered yet (retrying).
    Pending,
    /// The entry is stored.
    Registered,
    /// Shut down: the entry was deleted (or the delete was attempted).
    Deregistered,
}

/// The observable state of registration (for Stats and /metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationState {
    /// Where it stands.
    pub phase: Phase,
    /// How discovery is reached: "tcp", "dmsg", "tcp+dmsg" or "".
    pub via: String,
    /// The stored entry's sequence.
    pub sequence: u64,
    /// Failed attempts since the last success.
    pub failed_attempts: u32,
    /// The last error, if the last attempt failed.
    pub last_error: String,
    /// Unix nanoseconds of the last successful publish (0 if none).
    pub last_registered_nanos: i64,
}

/// The running registration: its task and its state.
pub struct Registration {
    state: watch::Sender<RegistrationState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    discovery: Option<Arc<dyn Discovery>>,
    keypair: Keypair,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// No discovery: nothing to publish ([`Phase::Disabled`]).
    pub fn disabled(keypair: Keypair) -> Self {
        Self {
            state: watch::Sender::new(RegistrationState::default()),
            stop: CancellationToken::new(),
            task: None,
            discovery: None,
            keypair,
        }
    }

    /// Starts publishing `server`'s entry through `discovery` (reached `via`), in the
    /// background. A failed attempt is retried after its backoff, or at once when `paths`
    /// changes (the transit client's sessions: a new way to discovery may have opened).
    pub fn start(
        server: Server,
        keypair: Keypair,
        discovery: Arc<dyn Discovery>,
        via: &str,
        config: RegistrationConfig,
        paths: Option<watch::Receiver<u64>>,
    ) -> Self {
        let state = watch::Sender::new(RegistrationState {
            phase: Phase::Pending,
            via: via.to_owned(),
            ..RegistrationState::default()
        });
        let stop = CancellationToken::new();
        let publisher = Publisher {
            server,
            keypair: keypair.clone(),
            discovery: discovery.clone(),
            config,
            state: state.clone(),
            stop: stop.clone(),
            paths,
        };
        Self {
            state,
            stop,
            task: Some(tokio::spawn(publisher.run())),
            discovery: Some(discovery),
            keypair,
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A watch of the state.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.subscribe()
    }

    /// Stops the publisher and joins it (a publish in flight completes first), then deletes
    /// the entry if one was stored.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            tracing::error!("the registration task panicked");
        }
        let Some(discovery) = self.discovery.take() else {
            return;
        };
        let was_registered = self.state.borrow().sequence > 0;
        self.state
            .send_modify(|state| state.phase = Phase::Deregistered);
        if !was_registered {
            return;
        }
        match tokio::time::timeout(DELETE_TIMEOUT, discovery.delete_entry(&self.keypair)).await {
            Ok(Ok(())) => tracing::info!("server entry deleted from discovery"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not delete the server entry; it expires on its own");
            }
            Err(_) => tracing::warn!("deleting the server entry timed out; it expires on its own"),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Dropped without `stop` (an error path): at least end the task.
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The publishing task.
struct Publisher {
    server: Server,
    keypair: Keypair,
    discovery: Arc<dyn Discovery>,
    config: RegistrationConfig,
    state: watch::Sender<RegistrationState>,
    stop: CancellationToken,
    paths: Option<watch::Receiver<u64>>,
}

/// Completes when `paths` changes; never if there is none (or its sender is gone).
async fn paths_changed(paths: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = paths
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl Publisher {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_cap);
        let mut changes = self.server.session_changes();
        loop {
            // Checked right before publishing: nothing starts after shutdown began.
            if self.stop.is_cancelled() {
                return;
            }
            // Not raced with `stop`: a publish in flight completes, and `stop` joins it.
            let wait = match self.publish_once().await {
                Ok(()) => {
                    backoff.reset();
                    None
                }
                Err(error) => {
                    tracing::info!(%error, "not registered with discovery yet; retrying");
                    Some(backoff.next_delay())
                }
            };
            let stopped = match wait {
                Some(delay) => tokio::select! {
                    () = self.stop.cancelled() => true,
                    () = tokio::time::sleep(delay) => false,
                    () = paths_changed(&mut self.paths) => false,
                },
                None => tokio::select! {
                    () = self.stop.cancelled() => true,
                    () = tokio::time::sleep(self.config.refresh) => false,
                    changed = changes.changed() => {
                        changed.is_err() || tokio::select! {
                            () = self.stop.cancelled() => true,
                            () = tokio::time::sleep(self.config.debounce) => false,
                        }
                    }
                },
            };
            if stopped {
                return;
            }
            changes.mark_unchanged();
        }
    }

    /// Publishes a fresh entry (built anew each time; nothing cached is edited).
    async fn publish_once(&self) -> Result<(), DiscoveryError> {
        let sequence = self.state.borrow().sequence + 1;
        let entry = Entry {
            pq_capable: self.config.pq_capable,
            ..Entry::server(
                self.keypair.public(),
                sequence,
                ServerPart {
                    address: self.config.public_address.clone(),
                    available_sessions: self.server.available_sessions(),
                    server_type: SERVER_TYPE.into(),
                },
            )
        };
        match publish(self.discovery.as_ref(), &self.keypair, entry).await {
            Ok(Published::Stored { entry, created }) => {
                if created || self.state.borrow().phase != Phase::Registered {
                    tracing::info!(sequence = entry.sequence, "registered with discovery");
                }
                self.state.send_modify(|state| {
                    state.phase = Phase::Registered;
                    state.sequence = entry.sequence;
                    state.failed_attempts = 0;
                    state.last_error.clear();
                    state.last_registered_nanos = unix_nanos_now();
                });
                Ok(())
            }
            Ok(Published::Superseded { stored_sequence }) => {
                // Discovery holds a newer entry of ours: continue after it, at once.
                self.state
                    .send_modify(|state| state.sequence = stored_sequence);
                Err(DiscoveryError::Unavailable(
                    "discovery holds a newer entry; resyncing".into(),
                ))
            }
            Err(error) => {
                self.state.send_modify(|state| {
                    state.failed_attempts = state.failed_attempts.saturating_add(1);
                    state.last_error = error.to_string();
                });
                Err(error)
            }
        }
    }
}
