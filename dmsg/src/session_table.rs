//! The one table of live sessions by peer key, newest wins (PROTOCOL.md §10): what a server
//! keeps of its clients and a client of its servers.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::changes::Changes;
use crate::identity::PublicKey;
use crate::session::Session;
use crate::wire::Code;

/// Live sessions by peer key. A newer session for a key replaces (and closes) the older one;
/// an ending session removes itself only if it is still the one in the table.
#[derive(Debug)]
pub(crate) struct SessionTable {
    sessions: Mutex<HashMap<PublicKey, Session>>,
    /// Bumped whenever a key joins or leaves the table.
    changes: Changes,
}

impl SessionTable {
    pub(crate) fn new() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            changes: Changes::new(),
        }
    }

    /// Puts `session` in the table under its peer's key; the session it replaces (if any) is
    /// closed with [`Code::Replaced`] and `reason`. Returns true if the key was not in the
    /// table before.
    pub(crate) fn insert(&self, session: Session, reason: &str) -> bool {
        let replaced = crate::sync::lock(&self.sessions).insert(session.remote(), session);
        match replaced {
            Some(old) => {
                old.close(Code::Replaced, reason);
                false
            }
            None => {
                self.changes.bump();
                true
            }
        }
    }

    /// Removes `session` if it is still the table's session for its key (a newer one is never
    /// evicted by an older one ending). Returns true if it was removed.
    pub(crate) fn remove(&self, session: &Session) -> bool {
        let mut sessions = crate::sync::lock(&self.sessions);
        let current = sessions
            .get(&session.remote())
            .is_some_and(|s| s.id() == session.id());
        if current {
            sessions.remove(&session.remote());
            drop(sessions);
            self.changes.bump();
        }
        current
    }

    /// The session with `pk`, if any (it may have just closed).
    pub(crate) fn get(&self, pk: &PublicKey) -> Option<Session> {
        crate::sync::lock(&self.sessions).get(pk).cloned()
    }

    /// Every session in the table.
    pub(crate) fn all(&self) -> Vec<Session> {
        crate::sync::lock(&self.sessions)
            .values()
            .cloned()
            .collect()
    }

    /// The keys with a session that has not closed.
    pub(crate) fn live_keys(&self) -> Vec<PublicKey> {
        crate::sync::lock(&self.sessions)
            .iter()
            .filter(|(_, session)| !session.is_closed())
            .map(|(pk, _)| *pk)
            .collect()
    }

    /// Sessions in the table.
    pub(crate) fn len(&self) -> usize {
        crate::sync::lock(&self.sessions).len()
    }

    /// Empties the table, returning what it held.
    pub(crate) fn drain(&self) -> Vec<Session> {
        let drained: Vec<Session> = crate::sync::lock(&self.sessions)
            .drain()
            .map(|(_, s)| s)
            .collect();
        if !drained.is_empty() {
            self.changes.bump();
        }
        drained
    }

    /// A watch bumped whenever a key joins or leaves the table.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
