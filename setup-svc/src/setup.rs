//! Route-group setup (skywire-go-notes §4.7): find a forward and a reverse path, reserve
//! route IDs on every visor of both concurrently, then install the intermediary rules and
//! the destination's edge rules concurrently (Go installs the destination's after the
//! intermediaries; here the destination acts on its rules only when the initiator's
//! handshake arrives, after the answer, so nothing is gained by waiting), and hand the
//! initiator its two rules. The first failure cancels the calls still running and releases
//! everything reserved.
//! Every failure names the visor and its role, so a breaker can hold only the destination's
//! own failures against it.

use std::collections::HashMap;
use std::time::Duration;

use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use futures::future::{join_all, try_join_all};
use visor::packet::RouteId;
use visor::router::Rule;

use crate::gateway::{GatewayError, Gateways};
use crate::paths::{Graph, Path};
use crate::rules::{RulesError, ids_needed, route_group_rules};

/// Default hop bounds of a route.
pub const DEFAULT_MIN_HOPS: usize = 1;
/// See [`DEFAULT_MIN_HOPS`].
pub const DEFAULT_MAX_HOPS: usize = 3;

/// What is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupRequest {
    /// The initiator and its port.
    pub src: (PublicKey, Port),
    /// The destination and its port.
    pub dst: (PublicKey, Port),
    /// Fewest hops of each route.
    pub min_hops: usize,
    /// Most hops of each route.
    pub max_hops: usize,
}

/// What the initiator gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Its FORWARD rule.
    pub forward_rule: Rule,
    /// Its CONSUME rule.
    pub consume_rule: Rule,
    /// The chosen forward path.
    pub forward: Path,
    /// The chosen reverse path.
    pub reverse: Path,
    /// The route IDs reserved on every visor (to release the whole group again).
    pub reserved: HashMap<PublicKey, Vec<RouteId>>,
}

/// The role of the visor a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The initiator.
    Source,
    /// A visor in the middle of a path.
    Intermediate,
    /// The destination.
    Destination,
}

/// The step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reserving route IDs.
    Reserve,
    /// Installing intermediary rules.
    Intermediary,
    /// Installing the destination's edge rules.
    Edge,
}

/// Why a setup failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// No path within the hop bounds, one way or the other.
    #[error("no {0} path within the hop bounds in the transport registry")]
    NoRoute(&'static str),
    /// The rules could not be made (an inconsistent answer from a visor).
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A visor's gateway failed.
    #[error("{step:?} on {visor} ({role:?}) failed: {error}")]
    Hop {
        /// Which visor.
        visor: PublicKey,
        /// Its role in the route group.
        role: Role,
        /// The step.
        step: Step,
        /// What it said.
        error: GatewayError,
    },
}

impl SetupError {
    /// Whether the failure is the destination's own (what its breaker counts).
    pub fn is_destination(&self) -> bool {
        matches!(
            self,
            Self::Hop {
                role: Role::Destination,
                ..
            }
        )
    }
}

/// Sets a route group up (see the module docs).
pub async fn setup_route_group(
    gateways: &dyn Gateways,
    graph: &Graph,
    request: SetupRequest,
    keep_alive: Duration,
) -> Result<Setup, SetupError> {
    let (src, dst) = (request.src.0, request.dst.0);
    let forward = graph
        .paths(&src, &dst, request.min_hops, request.max_hops)
        .into_iter()
        .next()
        .ok_or(SetupError::NoRoute("forward"))?;
    let reverse = graph
        .paths(&dst, &src, request.min_hops, request.max_hops)
        .into_iter()
        .next()
        .ok_or(SetupError::NoRoute("reverse"))?;
    let role = |visor: PublicKey| {
        if visor == src {
            Role::Source
        } else if visor == dst {
            Role::Destination
        } else {
            Role::Intermediate
        }
    };

    // 1. Reserve on every visor at once; if any fails, what the others reserved is released.
    let needed = ids_needed(&forward, &reverse);
    let answers = join_all(
        needed
            .iter()
            .map(|(visor, n)| async move { (*visor, gateways.reserve_ids(*visor, *n).await) }),
    )
    .await;
    let mut reserved: HashMap<PublicKey, Vec<RouteId>> = HashMap::new();
    let mut failure = None;
    for (visor, answer) in answers {
        match answer {
            Ok(ids) => {
                reserved.insert(visor, ids);
            }
            Err(error) => {
                failure.get_or_insert(SetupError::Hop {
                    visor,
                    role: role(visor),
                    step: Step::Reserve,
                    error,
                });
            }
        }
    }
    if let Some(error) = failure {
        release(gateways, &reserved).await;
        return Err(error);
    }

    let installed = async {
        let rules = route_group_rules(
            request.src,
            request.dst,
            &forward,
            &reverse,
            &reserved,
            keep_alive,
        )?;
        // 2. Every rule at once: the intermediaries' and the destination's edge rules. Each
        //    needs only the IDs of round 1, and the destination does nothing with its rules
        //    until the initiator's handshake arrives, which is after the answer — so the
        //    destination need not wait for the intermediaries (one round trip less).
        let intermediaries =
            try_join_all(rules.intermediaries.iter().map(|(visor, list)| async move {
                gateways
                    .add_intermediary_rules(*visor, list.clone())
                    .await
                    .map_err(|error| SetupError::Hop {
                        visor: *visor,
                        role: role(*visor),
                        step: Step::Intermediary,
                        error,
                    })
            }));
        let destination = async {
            gateways
                .add_edge_rules(dst, rules.destination)
                .await
                .map_err(|error| SetupError::Hop {
                    visor: dst,
                    role: Role::Destination,
                    step: Step::Edge,
                    error,
                })
        };
        futures::future::try_join(intermediaries, destination).await?;
        Ok::<_, SetupError>(rules)
    };
    match installed.await {
        Ok(rules) => Ok(Setup {
            forward_rule: rules.initiator_forward,
            consume_rule: rules.initiator_consume,
            forward,
            reverse,
            reserved,
        }),
        Err(error) => {
            release(gateways, &reserved).await;
            Err(error)
        }
    }
}

/// Releases `reserved` everywhere, concurrently; a visor that cannot be reached lets its
/// reservations expire (30 s) and its rules idle out.
pub async fn release(gateways: &dyn Gateways, reserved: &HashMap<PublicKey, Vec<RouteId>>) {
    let calls = reserved.iter().map(|(visor, ids)| async move {
        if let Err(error) = gateways.release_ids(*visor, ids.clone()).await {
            tracing::debug!(%visor, %error, "release failed; the ids expire on their own");
        }
    });
    join_all(calls).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::MemoryGateways;
    use dmsg::identity::Keypair;

    fn port(n: u16) -> Port {
        Port::new(n).unwrap_or_else(|| unreachable!())
    }

    /// A–B–C–D in a line.
    fn line() -> ([PublicKey; 4], Graph) {
        let keys = [(); 4].map(|()| Keypair::generate().public());
        let graph = Graph::new((0..3).map(|i| (keys[i], keys[i + 1], [i as u8 + 1; 16])));
        (keys, graph)
    }

    fn request(keys: &[PublicKey; 4]) -> SetupRequest {
        SetupRequest {
            src: (keys[0], port(1)),
            dst: (keys[3], port(80)),
            min_hops: DEFAULT_MIN_HOPS,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }

    #[tokio::test]
    async fn a_setup_installs_every_rule_and_returns_the_initiators() {
        let (keys, graph) = line();
        let gateways = MemoryGateways::default();
        let setup = setup_route_group(&gateways, &graph, request(&keys), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((setup.forward.len(), setup.reverse.len()), (3, 3));
        for (visor, rules) in [(keys[1], 2), (keys[2], 2), (keys[3], 2), (keys[0], 0)] {
            assert_eq!(gateways.with(visor, |v| v.rules.len()), rules);
            assert_eq!(gateways.with(visor, |v| v.reserved.len()), 2);
        }
        assert!(gateways.with(keys[0], |v| v.reserved.contains(&setup.forward_rule.key)));
    }

    /// A failing hop is named with its role and step; everything reserved on the other
    /// visors is released; only the destination's own failure counts as the destination's.
    #[tokio::test]
    async fn a_failure_is_attributed_and_releases_every_reservation() {
        let gone = || GatewayError::Unreachable("gone".into());
        for (failing, rules_only, role, step) in [
            (0, false, Role::Source, Step::Reserve),
            (1, false, Role::Intermediate, Step::Reserve),
            (2, true, Role::Intermediate, Step::Intermediary),
            (3, true, Role::Destination, Step::Edge),
        ] {
            let (keys, graph) = line();
            let gateways = MemoryGateways::default();
            gateways.with(keys[failing], |v| {
                if rules_only {
                    v.fail_rules = Some(gone());
                } else {
                    v.fail = Some(gone());
                }
            });
            let error =
                setup_route_group(&gateways, &graph, request(&keys), Duration::from_secs(30))
                    .await
                    .unwrap_err();
            assert_eq!(
                error,
                SetupError::Hop {
                    visor: keys[failing],
                    role,
                    step,
                    error: gone()
                }
            );
            assert_eq!(error.is_destination(), role == Role::Destination);
            for key in &keys {
                let held = gateways.with(*key, |v| (v.reserved.len(), v.rules.len()));
                if *key != keys[failing] || rules_only {
                    assert_eq!(
                        held,
                        (0, 0),
                        "visor {failing} failing: {key} still holds {held:?}"
                    );
                }
            }
        }
    }

    /// Two rounds of hop calls, not three: with every call taking 100 ms, a setup takes
    /// 200 ms (reservations, then every rule at once), not 300 ms.
    #[tokio::test(start_paused = true)]
    async fn the_destination_is_installed_in_the_same_round_as_the_intermediaries() {
        let (keys, graph) = line();
        let gateways = MemoryGateways::default();
        for key in &keys {
            gateways.with(*key, |v| v.delay = Duration::from_millis(100));
        }
        let started = tokio::time::Instant::now();
        setup_route_group(&gateways, &graph, request(&keys), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn no_path_is_said_before_any_call() {
        let (keys, _) = line();
        let gateways = MemoryGateways::default();
        let error = setup_route_group(
            &gateways,
            &Graph::default(),
            request(&keys),
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
        assert_eq!(error, SetupError::NoRoute("forward"));
        assert!(keys.iter().all(|k| gateways.with(*k, |v| v.calls) == 0));
    }
}
