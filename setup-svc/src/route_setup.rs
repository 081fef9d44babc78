//! Route-setup's core (ARCHITECTURE §6, skywire-go-notes §4.8): every `DialRouteGroup` goes
//! through a bounded number of slots and the destination's breaker before any dial work,
//! runs [`crate::setup::setup_route_group`] under a deadline over the transport graph, and
//! tells the breaker only about the destination's own failures.

use std::sync::Arc;
use std::time::Duration;

use dmsg::identity::PublicKey;
use middleware::{BreakerConfig, BreakerOpen, FailurePolicy, KeyedBreakers};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateways;
use crate::metrics::{self, Outcome};
use crate::paths::Graph;
use crate::setup::{Setup, SetupError, SetupRequest, release, setup_route_group};

/// Route-setup's settings.
#[derive(Clone, Copy, Debug)]
pub struct RouteSetupConfig {
    /// Keep-alive of every rule it installs.
    pub keep_alive: Duration,
    /// Deadline of one setup (the caller's `grpc-timeout` may shorten it).
    pub request_timeout: Duration,
    /// Setups in progress at once; more are refused at once.
    pub max_in_flight: usize,
    /// The per-destination breaker: 3 failures within 5 min open it for 5 min, one probe
    /// then, force-closed 30 min after the first trip.
    pub breaker: BreakerConfig,
    /// Destinations with a breaker at once (least recently used evicted first).
    pub breakers: usize,
}

impl Default for RouteSetupConfig {
    /// The numbers of skywire-go-notes §4.8: 30 s per setup, 512 at once, 3 / 5 min / 5 min
    /// / 30 min breakers for 512 destinations.
    fn default() -> Self {
        Self {
            keep_alive: visor::router::rule::DEFAULT_KEEP_ALIVE,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 512,
            breaker: BreakerConfig {
                failure_threshold: 3,
                window: Duration::from_secs(300),
                open_for: Duration::from_secs(300),
                max_open: Some(Duration::from_secs(1800)),
            },
            breakers: 512,
        }
    }
}

/// Where route-setup gets the transport graph from.
#[tonic::async_trait]
pub trait GraphSource: Send + Sync + 'static {
    /// The transports within `max_hops` of `src`.
    async fn graph(&self, src: PublicKey, max_hops: usize) -> Result<Graph, String>;
}

/// A fixed graph (tests, and a registry snapshot).
#[derive(Clone, Debug, Default)]
pub struct StaticGraph(pub Graph);

#[tonic::async_trait]
impl GraphSource for StaticGraph {
    async fn graph(&self, _: PublicKey, _: usize) -> Result<Graph, String> {
        Ok(self.0.clone())
    }
}

/// The graph read from discovery's TransportRegistry: breadth-first from the source, one
/// `TransportsByEdge` per visor within the hop bound.
#[derive(Clone)]
pub struct RegistryGraph(pub Arc<dyn discovery_client::registry::Registry>);

impl std::fmt::Debug for RegistryGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryGraph")
    }
}

/// Visors a registry walk visits at most.
pub const MAX_GRAPH_VISORS: usize = 1024;

#[tonic::async_trait]
impl GraphSource for RegistryGraph {
    async fn graph(&self, src: PublicKey, max_hops: usize) -> Result<Graph, String> {
        let mut seen = std::collections::HashSet::from([src]);
        let mut frontier = vec![src];
        let mut edges = Vec::new();
        for _ in 0..max_hops {
            let mut next = Vec::new();
            for visor in frontier {
                let entries = self
                    .0
                    .transports_by_edge(&visor)
                    .await
                    .map_err(|error| format!("the transport registry: {error}"))?;
                for entry in entries {
                    edges.push((entry.edge_a, entry.edge_b, entry.id));
                    for other in [entry.edge_a, entry.edge_b] {
                        if seen.len() < MAX_GRAPH_VISORS && seen.insert(other) {
                            next.push(other);
                        }
                    }
                }
            }
            frontier = next;
        }
        Ok(Graph::new(edges))
    }
}

/// Why a dial failed before or during setup.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Too many setups in progress.
    #[error("route-setup has {0} setups in progress; retry shortly")]
    Overloaded(usize),
    /// The destination's breaker is open.
    #[error(transparent)]
    BreakerOpen(BreakerOpen),
    /// The transport graph could not be read.
    #[error("cannot read the transport graph: {0}")]
    Graph(String),
    /// The setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The setup did not finish in time.
    #[error("the setup did not finish within {0:?}")]
    Timeout(Duration),
}

/// Route-setup's core. Clones share everything.
#[derive(Clone)]
pub struct RouteSetup {
    gateways: Arc<dyn Gateways>,
    graphs: Arc<dyn GraphSource>,
    breakers: KeyedBreakers<PublicKey>,
    slots: Arc<Semaphore>,
    config: RouteSetupConfig,
    /// Setups whose caller stopped waiting: each finishes, then releases what it built.
    tasks: TaskTracker,
}

impl std::fmt::Debug for RouteSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSetup")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RouteSetup {
    /// Route-setup over `gateways` and the graph from `graphs`.
    pub fn new(
        gateways: Arc<dyn Gateways>,
        graphs: Arc<dyn GraphSource>,
        config: RouteSetupConfig,
    ) -> Self {
        Self {
            gateways,
            graphs,
            // Outcomes are recorded by hand (only the destination's failures count).
            breakers: KeyedBreakers::new(
                "route-setup-destination",
                config.breaker,
                FailurePolicy::counting(&[]),
                config.breakers,
            ),
            slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            tasks: TaskTracker::new(),
        }
    }

    /// The destination breakers.
    pub fn breakers(&self) -> &KeyedBreakers<PublicKey> {
        &self.breakers
    }

    /// Sets up a route group for `request` within `deadline` (at most the configured
    /// request timeout).
    pub async fn dial(
        &self,
        request: SetupRequest,
        deadline: Option<Duration>,
    ) -> Result<Setup, DialError> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            metrics::record_refused(Outcome::Overloaded);
            return Err(DialError::Overloaded(self.config.max_in_flight));
        };
        let dst = request.dst.0;
        // Before any dial work: an open breaker refuses at once.
        let permit = self.breakers.try_acquire(&dst).map_err(|open| {
            metrics::record_refused(Outcome::BreakerOpen);
            DialError::BreakerOpen(open)
        })?;
        let timeout = deadline.map_or(self.config.request_timeout, |d| {
            d.min(self.config.request_timeout)
        });
        // The setup runs in a task of its own: when the deadline passes the caller is
        // answered at once, and the setup still ends cleanly — what it reserved or installed
        // is released (no reservation waits 30 s to expire), and its outcome is recorded
        // when it is known. It keeps its slot until then.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let core = self.clone();
        // The setup's gateway calls are children of the caller's span (one trace per dial).
        let span = tracing::Span::current();
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let started = tokio::time::Instant::now();
                let result = core.set_up(request).await;
                metrics::record_setup(Outcome::of(&result), started.elapsed());
                match &result {
                    Ok(_) => permit.success(),
                    Err(DialError::Setup(error)) if error.is_destination() => permit.failure(),
                    // The source, a hop in the middle, the graph: not the destination's doing.
                    // Dropping the permit records nothing (a probe slot is freed).
                    Err(_) => drop(permit),
                }
                if let Err(unanswered) = answer.send(result) {
                    metrics::record_late();
                    if let Ok(late) = unanswered {
                        tracing::debug!(%dst, "setup finished after its caller left; releasing it");
                        release(core.gateways.as_ref(), &late.reserved).await;
                    }
                }
                drop(slot);
            },
            span,
        ));
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DialError::Timeout(timeout)),
            Err(_) => Err(DialError::Timeout(timeout)),
        }
    }

    async fn set_up(&self, request: SetupRequest) -> Result<Setup, DialError> {
        let graph = self
            .graphs
            .graph(request.src.0, request.max_hops)
            .await
            .map_err(DialError::Graph)?;
        setup_route_group(
            self.gateways.as_ref(),
            &graph,
            request,
            self.config.keep_alive,
        )
        .await
        .map_err(DialError::from)
    }

    /// Waits for the setups still finishing (those whose callers left), at shutdown.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{GatewayError, MemoryGateways};
    use dmsg::addr::Port;
    use dmsg::identity::Keypair;

    fn line() -> ([PublicKey; 4], Graph) {
        let keys = [(); 4].map(|()| Keypair::generate().public());
        let graph = Graph::new((0..3).map(|i| (keys[i], keys[i + 1], [i as u8 + 1; 16])));
        (keys, graph)
    }

    fn request(keys: &[PublicKey; 4]) -> SetupRequest {
        SetupRequest {
            src: (keys[0], Port::new(1).unwrap_or_else(|| unreachable!())),
            dst: (keys[3], Port::new(80).unwrap_or_else(|| unreachable!())),
            min_hops: 1,
            max_hops: 3,
        }
    }

    fn route_setup(gateways: &MemoryGateways, graph: Graph) -> RouteSetup {
        RouteSetup::new(
            Arc::new(gateways.clone()),
            Arc::new(StaticGraph(graph)),
            RouteSetupConfig::default(),
        )
    }

    fn calls(gateways: &MemoryGateways, keys: &[PublicKey]) -> usize {
        keys.iter().map(|k| gateways.with(*k, |v| v.calls)).sum()
    }

    /// skywire-go-notes §4.8 (Done-when d, on the core): with D down, three failed dials open
    /// D's breaker and the fourth is refused before any gateway call; after the open period
    /// 100 concurrent dials let exactly one probe through; a success closes it.
    #[tokio::test(start_paused = true)]
    async fn the_destination_breaker_opens_after_three_failures_and_admits_one_probe() {
        let (keys, graph) = line();
        let gateways = MemoryGateways::default();
        let setup = route_setup(&gateways, graph);
        gateways.with(keys[3], |v| {
            v.fail_rules = Some(GatewayError::Unreachable("down".into()))
        });
        for _ in 0..3 {
            let error = setup.dial(request(&keys), None).await.unwrap_err();
            assert!(
                matches!(error, DialError::Setup(ref e) if e.is_destination()),
                "{error}"
            );
        }
        let before = calls(&gateways, &keys);
        let refused = setup.dial(request(&keys), None).await.unwrap_err();
        let DialError::BreakerOpen(open) = refused else {
            panic!("not refused by the breaker: {refused}");
        };
        assert_eq!(
            middleware::breaker::REASON_BREAKER_OPEN,
            skywire_proto::status::reason_in(&open.to_status(), "skywire").unwrap_or_default()
        );
        assert_eq!(
            calls(&gateways, &keys),
            before,
            "no gateway call while open"
        );

        // The open period passes; D is back. 100 callers at once: one probe reaches the
        // gateways, every other one is refused.
        tokio::time::advance(Duration::from_secs(301)).await;
        gateways.with(keys[3], |v| {
            v.fail_rules = None;
            // A slow answer keeps the probe in flight while the others arrive.
            v.delay = Duration::from_millis(100);
        });
        let before = gateways.with(keys[3], |v| v.calls);
        let dials = (0..100).map(|_| setup.dial(request(&keys), None));
        let results = futures::future::join_all(dials).await;
        let passed = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(DialError::BreakerOpen(_))))
            .count();
        assert_eq!((passed, refused), (1, 99));
        // The probe's reservation and edge rules: two calls on D.
        assert_eq!(gateways.with(keys[3], |v| v.calls) - before, 2);
        gateways.with(keys[3], |v| v.delay = Duration::ZERO);
        assert!(
            setup.dial(request(&keys), None).await.is_ok(),
            "closed again"
        );
    }

    /// Failures of the source or a hop in the middle never count against the destination.
    #[tokio::test(start_paused = true)]
    async fn a_failing_intermediate_never_opens_the_destinations_breaker() {
        let (keys, graph) = line();
        let gateways = MemoryGateways::default();
        let setup = route_setup(&gateways, graph);
        gateways.with(keys[1], |v| {
            v.fail = Some(GatewayError::Unreachable("down".into()))
        });
        for _ in 0..10 {
            let error = setup.dial(request(&keys), None).await.unwrap_err();
            assert!(
                matches!(error, DialError::Setup(ref e) if !e.is_destination()),
                "{error}"
            );
        }
        gateways.with(keys[1], |v| v.fail = None);
        assert!(setup.dial(request(&keys), None).await.is_ok());
    }
}
