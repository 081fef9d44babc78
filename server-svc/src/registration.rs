//! Registration with discovery: the one entry publisher ([`dmsg::publisher`]) keeps the
//! server entry (address and free sessions) stored — published with full-jitter backoff until
//! it lands, at once when a new path to discovery opens, again soon after the session count
//! changes (debounced), every `refresh`, and as soon as discovery is found to have lost it.
//! It never gates the relay: the listener was accepting before it started.
//!
//! Shutdown is ordered (ARCHITECTURE §5 rule 5): [`Registration::stop`] stops the publisher
//! and *joins* it — a publish in flight completes rather than being abandoned on the wire —
//! and only then deletes the entry, so no publish can land after the delete.

use std::sync::Arc;
use std::time::Duration;

use dmsg::discovery::Discovery;
use dmsg::entry::{Entry, ServerPart};
use dmsg::identity::Keypair;
use dmsg::publisher::{EntryPublisher, PublisherConfig, Triggers};
use dmsg::server::Server;
use tokio::sync::watch;

pub use dmsg::publisher::{Phase, PublishState as RegistrationState};

/// The server type registered in entries.
pub const SERVER_TYPE: &str = "dmsg";
/// Session-count changes within this window make one publish.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Longest the delete on shutdown may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often registration checks that discovery still holds the entry.
const CHECK_EVERY: Duration = Duration::from_secs(5);

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

/// The running registration.
#[derive(Debug)]
pub struct Registration {
    publisher: EntryPublisher,
}

impl Registration {
    /// No discovery: nothing to publish ([`Phase::Disabled`]).
    pub fn disabled() -> Self {
        Self {
            publisher: EntryPublisher::disabled(),
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
        let owner = keypair.public();
        let changes = server.session_changes();
        let source = move |sequence| {
            Some(Entry {
                pq_capable: config.pq_capable,
                ..Entry::server(
                    owner,
                    sequence,
                    ServerPart {
                        address: config.public_address.clone(),
                        available_sessions: server.available_sessions(),
                        server_type: SERVER_TYPE.into(),
                        max_sessions: i64::try_from(server.max_sessions()).unwrap_or(i64::MAX),
                    },
                )
            })
        };
        let timing = PublisherConfig {
            backoff_base: config.backoff_base,
            backoff_cap: config.backoff_cap,
            refresh: config.refresh,
            debounce: config.debounce,
            check_every: CHECK_EVERY,
            delete_timeout: DELETE_TIMEOUT,
            seed: None,
        };
        Self {
            publisher: EntryPublisher::start(
                keypair,
                discovery,
                via,
                source,
                timing,
                Triggers {
                    changes: Some(changes),
                    paths,
                },
            ),
        }
    }

    /// The current state.
    pub fn state(&self) -> RegistrationState {
        self.publisher.state()
    }

    /// A watch of the state.
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.publisher.subscribe()
    }

    /// Stops the publisher and joins it (a publish in flight completes first), then deletes
    /// the entry if one was stored.
    pub async fn stop(self) {
        self.publisher.stop().await;
    }
}
