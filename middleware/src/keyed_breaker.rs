//! One circuit breaker per key (per destination), in a bounded map.
//!
//! [`KeyedBreakers`] creates a breaker the first time a key is seen. The map holds at most
//! `capacity` breakers; when a new key arrives at a full map, the least recently used closed
//! breaker is evicted (or, if every breaker is tripped, the least recently used one). Evicting
//! a breaker forgets its failures but never disturbs calls in flight under its permits.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use observability::rpc::OutcomeBody;
use tokio::sync::broadcast;
use tower::{Layer, Service};

use crate::breaker::{
    Breaker, BreakerConfig, BreakerEvent, BreakerFuture, BreakerOpen, BreakerState, FailurePolicy,
    Permit, service::call_admitted,
};

/// Capacity of the shared event channel of a keyed set.
const EVENT_CAPACITY: usize = 256;

struct Slot {
    breaker: Breaker,
    last_used: u64,
}

struct Map<K> {
    slots: HashMap<K, Slot>,
    /// Logical clock for least-recently-used eviction.
    tick: u64,
}

struct Shared<K> {
    name: Arc<str>,
    config: BreakerConfig,
    policy: FailurePolicy,
    capacity: usize,
    events: broadcast::Sender<BreakerEvent>,
    map: Mutex<Map<K>>,
}

/// A bounded set of breakers, one per key. Clones share the set.
pub struct KeyedBreakers<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for KeyedBreakers<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("name", &self.shared.name)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl<K> KeyedBreakers<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// An empty set; each breaker is named `<name>/<key>` and holds at most `capacity` keys.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        policy: FailurePolicy,
        capacity: usize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                policy,
                capacity: capacity.max(1),
                events: broadcast::channel(EVENT_CAPACITY).0,
                map: Mutex::new(Map {
                    slots: HashMap::new(),
                    tick: 0,
                }),
            }),
        }
    }

    /// The breaker for `key`, created closed if it is new.
    pub fn get(&self, key: &K) -> Breaker {
        let mut map = self
            .shared
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.tick += 1;
        let tick = map.tick;
        if let Some(slot) = map.slots.get_mut(key) {
            slot.last_used = tick;
            return slot.breaker.clone();
        }
        if map.slots.len() >= self.shared.capacity {
            evict_one(&mut map.slots);
        }
        let breaker = Breaker::with_events(
            format!("{}/{key}", self.shared.name),
            self.shared.name.clone(),
            self.shared.config,
            self.shared.policy.clone(),
            self.shared.events.clone(),
        );
        map.slots.insert(
            key.clone(),
            Slot {
                breaker: breaker.clone(),
                last_used: tick,
            },
        );
        breaker
    }

    /// Asks `key`'s breaker to admit one call.
    pub fn try_acquire(&self, key: &K) -> Result<Permit, BreakerOpen> {
        self.get(key).try_acquire()
    }

    /// State changes of every breaker in the set.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.shared.events.subscribe()
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.shared
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }

    /// True when no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes the least recently used closed breaker, or the least recently used of all.
fn evict_one<K: Hash + Eq + Clone>(slots: &mut HashMap<K, Slot>) {
    let victim = slots
        .iter()
        .min_by_key(|(_, slot)| (slot.breaker.state() != BreakerState::Closed, slot.last_used))
        .map(|(key, _)| key.clone());
    if let Some(key) = victim {
        slots.remove(&key);
    }
}

/// Layer guarding a service with one breaker per request key.
#[derive(Clone, Debug)]
pub struct KeyedCircuitBreakerLayer<K, F> {
    breakers: KeyedBreakers<K>,
    key_of: F,
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// Picks each request's breaker by `key_of(request parts)`.
    pub fn new(breakers: KeyedBreakers<K>, key_of: F) -> Self {
        Self { breakers, key_of }
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F> {
    type Service = KeyedCircuitBreaker<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

/// The key of a request by its URI authority (`host:port`): one breaker per endpoint.
pub fn authority_key(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default()
}

/// A service guarded by one breaker per key (see [`KeyedBreakers`]).
///
/// Unlike [`crate::CircuitBreaker`], the breaker is known only from the request, so it is
/// asked in `call`, after the inner service is ready.
#[derive(Clone, Debug)]
pub struct KeyedCircuitBreaker<S, K, F> {
    inner: S,
    breakers: KeyedBreakers<K>,
    key_of: F,
}

impl<S, K, F, ReqBody, ResBody> Service<http::Request<ReqBody>> for KeyedCircuitBreaker<S, K, F>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&http::request::Parts) -> K,
{
    type Response = http::Response<OutcomeBody<ResBody, Permit>>;
    type Error = S::Error;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let admitted = self.breakers.try_acquire(&(self.key_of)(&parts));
        call_admitted(
            &mut self.inner,
            admitted,
            http::Request::from_parts(parts, body),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 1,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(60),
            max_open: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_trip_independently() {
        let breakers = KeyedBreakers::new("dst", config(), FailurePolicy::default(), 8);
        breakers.try_acquire(&"a".to_owned()).unwrap().failure();
        assert!(breakers.try_acquire(&"a".to_owned()).is_err());
        let b = breakers.try_acquire(&"b".to_owned());
        assert!(b.is_ok(), "b is unaffected by a's failures");
        assert_eq!(breakers.get(&"a".to_owned()).name(), "dst/a");
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded_and_keeps_tripped_breakers_longest() {
        let breakers = KeyedBreakers::new("dst", config(), FailurePolicy::default(), 3);
        breakers.try_acquire(&0u32).unwrap().failure(); // key 0 tripped, oldest
        for key in 1..100u32 {
            drop(breakers.get(&key));
            assert!(breakers.len() <= 3);
        }
        assert!(
            breakers.try_acquire(&0).is_err(),
            "the tripped breaker outlived closed ones that were used later"
        );
    }
}
