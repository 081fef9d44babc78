//! Dialing by address: [`Client::dial`] finds the destination's entry (a TTL cache, then
//! discovery) and reaches it through one of its delegated servers — existing sessions first,
//! lowest measured RTT first, then at most [`NEW_SESSIONS`] new sessions — one attempt at a
//! time, all within one overall deadline.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Client, ConnectError, DialError};
use crate::addr::{DmsgAddr, ServerAddr};
use crate::discovery::DiscoveryError;
use crate::entry::Entry;
use crate::identity::PublicKey;
use crate::session::Session;
use crate::wire::Code;

/// New sessions one dial may open (to delegated servers it had no session with).
pub const NEW_SESSIONS: usize = 2;
/// Entries the cache holds at most; beyond it expired ones go first, then arbitrary ones.
const CACHE_CAPACITY: usize = 4096;

/// Destination entries looked up by [`Client::dial`], each reused for the lifecycle's
/// `entry_cache_ttl`. Entries are shared immutably; a newer lookup replaces, never edits.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    entries: HashMap<PublicKey, (Arc<Entry>, Instant)>,
}

impl EntryCache {
    /// The cached entry of `pk`, if fresh at `now`.
    fn get(&self, pk: &PublicKey, now: Instant) -> Option<Arc<Entry>> {
        self.entries
            .get(pk)
            .filter(|(_, expires)| *expires > now)
            .map(|(entry, _)| entry.clone())
    }

    /// Caches `entry` from `now` for `ttl`.
    fn insert(&mut self, entry: Arc<Entry>, ttl: Duration, now: Instant) {
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= CACHE_CAPACITY {
                let victim = self.entries.keys().next().copied();
                if let Some(victim) = victim {
                    self.entries.remove(&victim);
                }
            }
        }
        self.entries.insert(entry.owner, (entry, now + ttl));
    }

    /// Forgets `pk` (its entry led nowhere: the next dial asks discovery again).
    fn forget(&mut self, pk: &PublicKey) {
        self.entries.remove(pk);
    }
}

/// One failed attempt of [`Client::dial`].
#[derive(Debug)]
pub struct DialAttempt {
    /// The delegated server tried.
    pub server: PublicKey,
    /// True if the attempt opened (or tried to open) a new session.
    pub new_session: bool,
    /// What failed.
    pub failure: AttemptFailure,
}

impl fmt::Display for DialAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.new_session {
            "new session"
        } else {
            "existing session"
        };
        write!(f, "via {how} to server {}: {}", self.server, self.failure)
    }
}

/// The step of a [`DialAttempt`] that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// Neither the seeds, nor discovery's server list, nor discovery's entry of the server gave
    /// its address.
    #[error("no address known for the server")]
    NoAddress,
    /// The session to the server could not be opened.
    #[error("opening a session failed: {0}")]
    Connect(ConnectError),
    /// The stream through the server could not be opened.
    #[error("opening the stream failed: {0}")]
    Stream(Box<DialError>),
}

/// The attempts of a failed dial, one per line after a summary.
fn list_attempts(attempts: &[DialAttempt]) -> String {
    if attempts.is_empty() {
        return "no attempt was made".into();
    }
    attempts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why [`Client::dial`] failed, naming the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialByAddrError {
    /// Discovery could not be asked for the destination's entry.
    #[error("cannot look up {dst} in discovery: {error}")]
    Lookup {
        /// The destination.
        dst: PublicKey,
        /// Why.
        error: DiscoveryError,
    },
    /// Discovery has no (valid) entry for the destination: it is not online.
    #[error("{0} has no entry in discovery: it is not connected to any dmsg server")]
    NoEntry(PublicKey),
    /// The destination's entry names no delegated server.
    #[error("the entry of {0} names no delegated dmsg server")]
    NoDelegatedServers(PublicKey),
    /// The destination refused the stream for a reason another server would not change (no
    /// listener on the port, handshake failed, PQ required, queue full).
    #[error(transparent)]
    Refused(DialError),
    /// Every delegated server was tried and failed.
    #[error("every way to {dst} failed: {}", list_attempts(.attempts))]
    AllAttemptsFailed {
        /// The destination.
        dst: DmsgAddr,
        /// Each attempt, in order.
        attempts: Vec<DialAttempt>,
    },
    /// The overall deadline passed.
    #[error("dialing {dst} took longer than {after:?} ({})", list_attempts(.attempts))]
    Timeout {
        /// The destination.
        dst: DmsgAddr,
        /// The deadline.
        after: Duration,
        /// The attempts that had failed by then.
        attempts: Vec<DialAttempt>,
    },
    /// The client has no live session to try.
    #[error("no live session to any dmsg server")]
    NoSessions,
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
}

/// True if `error` is the destination's answer, which another server would not change.
fn refused_by_destination(error: &DialError) -> bool {
    matches!(
        error,
        DialError::Rejected {
            code: Code::NoListener
                | Code::AcceptQueueFull
                | Code::HandshakeFailed
                | Code::PqRequired
                | Code::WrongDestination
                | Code::NotAllowed,
            ..
        } | DialError::Handshake(_)
    )
}

/// The servers a client entry names (none for a server's entry).
fn delegated_servers(entry: &Entry) -> Vec<PublicKey> {
    entry
        .client
        .as_ref()
        .map(|client| client.delegated_servers.clone())
        .unwrap_or_default()
}

impl Client {
    /// Opens an end-to-end encrypted stream to `dst` wherever it is connected: its entry comes
    /// from the cache or discovery; its delegated servers are tried through existing sessions
    /// (lowest RTT first), then through at most [`NEW_SESSIONS`] new sessions, one at a time,
    /// within the lifecycle's `dial_timeout`.
    pub async fn dial(&self, dst: DmsgAddr) -> Result<crate::stream::DmsgStream, DialByAddrError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(DialByAddrError::Closed);
        }
        let after = self.inner.config.lifecycle.dial_timeout;
        let mut attempts = Vec::new();
        match tokio::time::timeout(after, self.dial_steps(dst, &mut attempts)).await {
            Ok(result) => result,
            Err(_) => Err(DialByAddrError::Timeout {
                dst,
                after,
                attempts,
            }),
        }
    }

    async fn dial_steps(
        &self,
        dst: DmsgAddr,
        attempts: &mut Vec<DialAttempt>,
    ) -> Result<crate::stream::DmsgStream, DialByAddrError> {
        let Some(cached) = self.lock_entries().get(&dst.pk, Instant::now()) else {
            let entry = self.fetch_entry(&dst.pk).await?;
            return self.dial_entry_or_forget(&entry, dst, attempts).await;
        };
        // A cached entry may be stale (the destination re-homed since): when it leads
        // nowhere, ask discovery once and try again if its servers are others.
        match self.dial_entry_or_forget(&cached, dst, attempts).await {
            // Kept: the error after the fresh entry lists every attempt made, both rounds.
            Err(DialByAddrError::AllAttemptsFailed { attempts: made, .. }) => *attempts = made,
            Err(DialByAddrError::NoDelegatedServers(_)) => {}
            done => return done,
        }
        let fresh = self.fetch_entry(&dst.pk).await?;
        if delegated_servers(&fresh) == delegated_servers(&cached) {
            return Err(DialByAddrError::AllAttemptsFailed {
                dst,
                attempts: std::mem::take(attempts),
            });
        }
        self.dial_entry_or_forget(&fresh, dst, attempts).await
    }

    /// [`Client::dial_entry`]; when `entry` leads nowhere it is dropped from the cache (the
    /// next dial asks discovery again) and every attempt is returned in the error.
    async fn dial_entry_or_forget(
        &self,
        entry: &Entry,
        dst: DmsgAddr,
        attempts: &mut Vec<DialAttempt>,
    ) -> Result<crate::stream::DmsgStream, DialByAddrError> {
        let result = self.dial_entry(entry, dst, attempts).await;
        if !matches!(result, Ok(Some(_))) {
            self.lock_entries().forget(&dst.pk);
        }
        match result? {
            Some(stream) => Ok(stream),
            None => Err(DialByAddrError::AllAttemptsFailed {
                dst,
                attempts: std::mem::take(attempts),
            }),
        }
    }

    /// Tries the delegated servers of `entry`: existing sessions, then new ones. `None` when
    /// every way failed (each recorded in `attempts`).
    async fn dial_entry(
        &self,
        entry: &Entry,
        dst: DmsgAddr,
        attempts: &mut Vec<DialAttempt>,
    ) -> Result<Option<crate::stream::DmsgStream>, DialByAddrError> {
        let delegated = delegated_servers(entry);
        if delegated.is_empty() {
            return Err(DialByAddrError::NoDelegatedServers(dst.pk));
        }
        let pq = entry.pq_capable;

        let existing: Vec<Session> = delegated
            .iter()
            .filter_map(|server| self.session(server))
            .filter(|session| !session.is_closed())
            .collect();
        let before = attempts.len();
        if let Some(stream) = self.try_sessions(existing, dst, pq, attempts).await? {
            return Ok(Some(stream));
        }
        // Only the sessions actually tried: one that closed before its turn (its server just
        // died, say) gets a fresh connect below, so the attempt is made and recorded.
        let tried: Vec<PublicKey> = attempts[before..].iter().map(|a| a.server).collect();

        // The servers not tried through a live session just now. Each goes through
        // `connect`, which returns a session that came up meanwhile (the lifecycle's, say)
        // or joins a connect under way — so a session appearing between the two steps is
        // used, not skipped.
        let untried = delegated
            .iter()
            .filter(|server| !tried.contains(server) && **server != self.public_key());
        for server in untried.take(NEW_SESSIONS) {
            let failure = match self.server_address(server).await {
                None => AttemptFailure::NoAddress,
                // A server whose seed marking or signed entry says PQ never completes
                // classical (PROTOCOL.md §4.5).
                Some(address) => match self
                    .connect_with(*server, address.address.as_str(), address.pq)
                    .await
                {
                    Err(ConnectError::Closed) => return Err(DialByAddrError::Closed),
                    Err(error) => AttemptFailure::Connect(error),
                    Ok(session) => {
                        // One connect per server (`Client::connect_with`): the lifecycle
                        // cannot have replaced this session with one of its own.
                        match self.dial_via_with(&session, dst, pq).await {
                            Ok(stream) => return Ok(Some(stream)),
                            Err(error) if refused_by_destination(&error) => {
                                return Err(DialByAddrError::Refused(error));
                            }
                            Err(error) => AttemptFailure::Stream(Box::new(error)),
                        }
                    }
                },
            };
            attempts.push(DialAttempt {
                server: *server,
                new_session: true,
                failure,
            });
        }
        Ok(None)
    }

    /// Opens a stream to `dst` through whichever live session reaches it, lowest RTT first,
    /// without looking anything up (how a client reaches discovery itself over dmsg).
    pub async fn dial_any_session(
        &self,
        dst: DmsgAddr,
    ) -> Result<crate::stream::DmsgStream, DialByAddrError> {
        let sessions = self.sessions();
        if sessions.iter().all(Session::is_closed) {
            return Err(DialByAddrError::NoSessions);
        }
        let mut attempts = Vec::new();
        match self
            .try_sessions(sessions, dst, false, &mut attempts)
            .await?
        {
            Some(stream) => Ok(stream),
            None => Err(DialByAddrError::AllAttemptsFailed { dst, attempts }),
        }
    }

    /// Tries `sessions` (the live ones, lowest RTT first) one at a time; a refusal by the
    /// destination itself ends the search at once. `None` when every one failed.
    async fn try_sessions(
        &self,
        mut sessions: Vec<Session>,
        dst: DmsgAddr,
        advertises_pq: bool,
        attempts: &mut Vec<DialAttempt>,
    ) -> Result<Option<crate::stream::DmsgStream>, DialByAddrError> {
        sessions.retain(|session| !session.is_closed());
        sessions.sort_by_key(|session| session.rtt().unwrap_or(Duration::MAX));
        for session in sessions {
            match self.dial_via_with(&session, dst, advertises_pq).await {
                Ok(stream) => return Ok(Some(stream)),
                Err(error) if refused_by_destination(&error) => {
                    return Err(DialByAddrError::Refused(error));
                }
                Err(error) => attempts.push(DialAttempt {
                    server: session.remote(),
                    new_session: false,
                    failure: AttemptFailure::Stream(Box::new(error)),
                }),
            }
        }
        Ok(None)
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        crate::sync::lock(&self.inner.entries)
    }

    /// The entry of `pk`: cached if fresh, else from discovery (then cached). Entries whose
    /// signature does not verify are treated as absent.
    pub async fn destination_entry(&self, pk: &PublicKey) -> Result<Arc<Entry>, DialByAddrError> {
        let cached = self.lock_entries().get(pk, Instant::now());
        match cached {
            Some(entry) => Ok(entry),
            None => self.fetch_entry(pk).await,
        }
    }

    /// The entry of `pk` from discovery, cached for the lifecycle's `entry_cache_ttl`.
    async fn fetch_entry(&self, pk: &PublicKey) -> Result<Arc<Entry>, DialByAddrError> {
        let fetched = self
            .inner
            .discovery
            .entry(pk)
            .await
            .map_err(|error| DialByAddrError::Lookup { dst: *pk, error })?;
        let entry = fetched
            .filter(|entry| entry.owner == *pk && entry.signature_valid())
            .map(Arc::new)
            .ok_or(DialByAddrError::NoEntry(*pk))?;
        self.inner
            .pq_peers
            .learn(entry.owner, entry.pq_capable, Instant::now());
        let ttl = self.inner.config.lifecycle.entry_cache_ttl;
        self.lock_entries()
            .insert(entry.clone(), ttl, Instant::now());
        Ok(entry)
    }

    /// The address of the server `pk`: from the seeds or discovery's server lists, else from
    /// the server's own entry in discovery.
    async fn server_address(&self, pk: &PublicKey) -> Option<ServerAddr> {
        if let Some(address) = self.lock_known().address(pk, Instant::now()) {
            return Some(address);
        }
        match self.inner.discovery.entry(pk).await {
            Ok(Some(entry)) if entry.owner == *pk && entry.signature_valid() => {
                self.inner
                    .pq_peers
                    .learn(entry.owner, entry.pq_capable, Instant::now());
                entry.server.map(|server| ServerAddr {
                    pk: *pk,
                    address: server.address,
                    pq: entry.pq_capable,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn entry() -> Arc<Entry> {
        Arc::new(Entry::client(Keypair::generate().public(), 1, Vec::new()))
    }

    /// The cache takes `now`: no clock, no sleeping.
    #[test]
    fn cached_entries_expire_and_the_cache_stays_bounded() {
        let mut cache = EntryCache::default();
        let start = Instant::now();
        let first = entry();
        cache.insert(first.clone(), Duration::from_secs(10), start);
        assert_eq!(cache.get(&first.owner, start), Some(first.clone()));
        let later = start + Duration::from_secs(11);
        assert_eq!(cache.get(&first.owner, later), None, "expired");

        for _ in 0..CACHE_CAPACITY + 10 {
            cache.insert(entry(), Duration::from_secs(60), later);
        }
        assert!(cache.entries.len() <= CACHE_CAPACITY);
        let kept = entry();
        cache.insert(kept.clone(), Duration::from_secs(60), later);
        cache.forget(&kept.owner);
        assert_eq!(cache.get(&kept.owner, later), None, "forgotten");
    }

    #[test]
    fn only_the_destinations_own_answers_end_a_dial_early() {
        let dst = DmsgAddr::new(
            Keypair::generate().public(),
            crate::addr::Port::new(1).unwrap(),
        );
        let rejected = |code| DialError::Rejected {
            dst,
            code,
            reason: String::new(),
        };
        for code in [
            Code::NoListener,
            Code::AcceptQueueFull,
            Code::PqRequired,
            Code::NotAllowed,
        ] {
            assert!(refused_by_destination(&rejected(code)), "{code:?}");
        }
        for code in [
            Code::NoSession,
            Code::DestinationTimeout,
            Code::TooManyStreams,
        ] {
            assert!(
                !refused_by_destination(&rejected(code)),
                "{code:?}: try another server"
            );
        }
        assert!(!refused_by_destination(&DialError::Timeout(
            Duration::from_secs(1)
        )));
    }
}
