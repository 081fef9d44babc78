//! `grpc.health.v1` status driven by the live state of the components a process depends on.
//!
//! Each component (a relay accept loop, a store, …) holds a [`ComponentHealth`] and reports
//! itself serving or down. [`drive_health`] watches them all and keeps the health service in
//! step: SERVING only while every registered component serves. A component whose handle is
//! dropped — its task ended or panicked — counts as down, so the death of a data plane can
//! never hide behind a healthy health endpoint.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The state of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentState {
    /// Registered but not yet serving.
    Starting,
    /// Doing its job.
    Serving,
    /// Not doing its job, with the reason.
    Down(String),
}

/// The state of every registered component, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentStates(BTreeMap<String, ComponentState>);

impl ComponentStates {
    /// True when at least one component is registered and every one serves.
    pub fn all_serving(&self) -> bool {
        !self.0.is_empty() && self.0.values().all(|s| *s == ComponentState::Serving)
    }

    /// The state of one component.
    pub fn get(&self, name: &str) -> Option<&ComponentState> {
        self.0.get(name)
    }

    /// Every component and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ComponentState)> {
        self.0.iter().map(|(name, state)| (name.as_str(), state))
    }
}

/// The set of components whose states make up a process's health. Clones share the set.
#[derive(Clone, Debug)]
pub struct HealthStates {
    tx: Arc<watch::Sender<ComponentStates>>,
}

impl Default for HealthStates {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthStates {
    /// An empty set (which is not serving until a component registers and serves).
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(ComponentStates::default())),
        }
    }

    /// Registers a component in the [`ComponentState::Starting`] state.
    pub fn component(&self, name: impl Into<String>) -> ComponentHealth {
        let name = name.into();
        self.tx.send_modify(|states| {
            states.0.insert(name.clone(), ComponentState::Starting);
        });
        ComponentHealth {
            name,
            tx: self.tx.clone(),
        }
    }

    /// A watch of the current states.
    pub fn subscribe(&self) -> watch::Receiver<ComponentStates> {
        self.tx.subscribe()
    }

    /// The current states.
    pub fn snapshot(&self) -> ComponentStates {
        self.tx.borrow().clone()
    }
}

/// One component's handle for reporting its state. Dropping it marks the component down.
#[derive(Debug)]
pub struct ComponentHealth {
    name: String,
    tx: Arc<watch::Sender<ComponentStates>>,
}

impl ComponentHealth {
    /// Reports the component serving.
    pub fn set_serving(&self) {
        self.set(ComponentState::Serving);
    }

    /// Reports the component down, with a reason a person can act on.
    pub fn set_down(&self, reason: impl Into<String>) {
        self.set(ComponentState::Down(reason.into()));
    }

    fn set(&self, state: ComponentState) {
        self.tx.send_if_modified(|states| {
            let slot = states
                .0
                .entry(self.name.clone())
                .or_insert(ComponentState::Starting);
            let changed = *slot != state;
            *slot = state.clone();
            changed
        });
    }
}

impl Drop for ComponentHealth {
    fn drop(&mut self) {
        if !matches!(
            self.tx.borrow().get(&self.name),
            Some(ComponentState::Down(_))
        ) {
            self.set_down("component stopped");
        }
    }
}

/// Keeps `reporter` in step with `states` for the overall status (`""`) and each of `services`.
///
/// Returns when `shutdown` completes (after marking everything NOT_SERVING, so load balancers
/// drain) or when every [`HealthStates`] handle is gone. Spawn it in the process's task set.
pub async fn drive_health(
    reporter: HealthReporter,
    services: Vec<String>,
    mut states: watch::Receiver<ComponentStates>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last = None;
    loop {
        let serving = states.borrow_and_update().all_serving();
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, &services, status).await;
            tracing::info!(serving, "health status changed");
            last = Some(serving);
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() { break },
            () = &mut shutdown => break,
        }
    }
    set_all(&reporter, &services, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, services: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests;
