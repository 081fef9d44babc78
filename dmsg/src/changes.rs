//! A change counter others can watch (the session set of a client or a server).

use tokio::sync::watch;

/// Bumped on every change; watchers wake on the next one.
#[derive(Debug)]
pub(crate) struct Changes(watch::Sender<u64>);

impl Changes {
    pub(crate) fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    /// A watch that sees every later bump.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// Records a change.
    pub(crate) fn bump(&self) {
        self.0.send_modify(|generation| *generation += 1);
    }
}
