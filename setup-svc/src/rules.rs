//! The rules of a route group (skywire-go-notes §4.7, visor/ROUTING.md §4): for a forward
//! path (initiator → destination) and a reverse path (destination → initiator), each visor
//! on a path gets one route ID per direction it is on; the first visor of a direction a
//! FORWARD rule, the ones in the middle INTERMEDIARY rules, the last a CONSUME rule. Pure.

use std::collections::HashMap;
use std::time::Duration;

use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use visor::packet::RouteId;
use visor::router::{NextHop, RouteDescriptor, Rule, RuleKind};

use crate::paths::Path;

/// Why rules cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A path is empty, does not chain, or does not join the two ends.
    #[error("the {0} path does not lead from its source to its destination")]
    BadPath(&'static str),
    /// A visor was given fewer route IDs than the paths need of it.
    #[error("{visor} reserved {got} route ids, {needed} are needed")]
    MissingIds {
        /// Which visor.
        visor: PublicKey,
        /// How many it reserved.
        got: usize,
        /// How many the paths need.
        needed: usize,
    },
}

/// How many route IDs each visor must reserve: one per direction it is on.
pub fn ids_needed(forward: &Path, reverse: &Path) -> HashMap<PublicKey, usize> {
    let mut needed = HashMap::new();
    for path in [forward, reverse] {
        if let Some(first) = path.first() {
            *needed.entry(first.from).or_default() += 1;
        }
        for hop in path {
            *needed.entry(hop.to).or_default() += 1;
        }
    }
    needed
}

/// Every rule of a route group, by where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRules {
    /// The initiator's FORWARD rule (its first hop) — it installs it itself, in `dial`.
    pub initiator_forward: Rule,
    /// The initiator's CONSUME rule (the reverse route ends there).
    pub initiator_consume: Rule,
    /// The destination's CONSUME rule of the forward route and FORWARD rule of the reverse
    /// route (`AddEdgeRules`).
    pub destination: [Rule; 2],
    /// INTERMEDIARY rules, by visor (`AddIntermediaryRules`).
    pub intermediaries: HashMap<PublicKey, Vec<Rule>>,
}

fn check(
    path: &Path,
    from: PublicKey,
    to: PublicKey,
    which: &'static str,
) -> Result<(), RulesError> {
    let chained = path.windows(2).all(|pair| pair[0].to == pair[1].from);
    match (path.first(), path.last()) {
        (Some(first), Some(last)) if chained && first.from == from && last.to == to => Ok(()),
        _ => Err(RulesError::BadPath(which)),
    }
}

/// The rules for a route group from `src:src_port` to `dst:dst_port` over `forward` and
/// `reverse`, with the IDs each visor reserved (at least [`ids_needed`] of them), every rule
/// with `keep_alive`.
pub fn route_group_rules(
    (src, src_port): (PublicKey, Port),
    (dst, dst_port): (PublicKey, Port),
    forward: &Path,
    reverse: &Path,
    reserved: &HashMap<PublicKey, Vec<RouteId>>,
    keep_alive: Duration,
) -> Result<GroupRules, RulesError> {
    check(forward, src, dst, "forward")?;
    check(reverse, dst, src, "reverse")?;
    let needed = ids_needed(forward, reverse);
    for (visor, needed) in &needed {
        let got = reserved.get(visor).map_or(0, Vec::len);
        if got < *needed {
            return Err(RulesError::MissingIds {
                visor: *visor,
                got,
                needed: *needed,
            });
        }
    }
    // Hand out each visor's IDs in order: forward path first, then reverse.
    let mut next_id: HashMap<PublicKey, usize> = HashMap::new();
    let mut take = |visor: PublicKey| -> RouteId {
        let index = next_id.entry(visor).or_default();
        let id = reserved[&visor][*index];
        *index += 1;
        id
    };
    let rule = |key, kind| Rule {
        key,
        keep_alive,
        kind,
    };
    let mut direction = |path: &Path, descriptor: RouteDescriptor| {
        // keys[i]: the key of visor i of the path (the source's first).
        let mut keys = vec![take(path[0].from)];
        keys.extend(path.iter().map(|hop| take(hop.to)));
        let first = rule(
            keys[0],
            RuleKind::Forward {
                descriptor,
                next: NextHop {
                    route: keys[1],
                    transport: path[0].transport,
                },
            },
        );
        let middle: Vec<(PublicKey, Rule)> = (1..path.len())
            .map(|i| {
                let next = NextHop {
                    route: keys[i + 1],
                    transport: path[i].transport,
                };
                (path[i].from, rule(keys[i], RuleKind::Intermediary(next)))
            })
            .collect();
        let last = rule(keys[path.len()], RuleKind::Consume(descriptor));
        (first, middle, last)
    };
    let descriptor = RouteDescriptor {
        src_pk: src,
        dst_pk: dst,
        src_port,
        dst_port,
    };
    let (initiator_forward, forward_middle, destination_consume) = direction(forward, descriptor);
    let (destination_forward, reverse_middle, initiator_consume) =
        direction(reverse, descriptor.reversed());
    let mut intermediaries: HashMap<PublicKey, Vec<Rule>> = HashMap::new();
    for (visor, rule) in forward_middle.into_iter().chain(reverse_middle) {
        intermediaries.entry(visor).or_default().push(rule);
    }
    Ok(GroupRules {
        initiator_forward,
        initiator_consume,
        destination: [destination_consume, destination_forward],
        intermediaries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Hop;
    use dmsg::identity::Keypair;

    fn port(n: u16) -> Port {
        Port::new(n).unwrap_or_else(|| unreachable!())
    }

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap_or_else(|| unreachable!())
    }

    fn line(visors: &[PublicKey], ids: &[u8]) -> Path {
        visors
            .windows(2)
            .zip(ids)
            .map(|(pair, n)| Hop {
                transport: [*n; 16],
                from: pair[0],
                to: pair[1],
            })
            .collect()
    }

    /// A–B–C–D forward and back: each visor's rules point at the next visor's key on the
    /// right transport; A and D get their edge rules, B and C two intermediaries each.
    #[test]
    fn a_three_hop_route_group_gets_a_rule_on_every_hop() {
        let [a, b, c, d] = [(); 4].map(|()| Keypair::generate().public());
        let forward = line(&[a, b, c, d], &[1, 2, 3]);
        let reverse = line(&[d, c, b, a], &[3, 2, 1]);
        let needed = ids_needed(&forward, &reverse);
        assert_eq!(needed.values().copied().collect::<Vec<_>>(), [2, 2, 2, 2]);
        // Visor v reserved ids 10v+1, 10v+2.
        let reserved: HashMap<PublicKey, Vec<RouteId>> = [a, b, c, d]
            .iter()
            .zip(1u32..)
            .map(|(pk, v)| (*pk, vec![id(10 * v + 1), id(10 * v + 2)]))
            .collect();
        let rules = route_group_rules(
            (a, port(1)),
            (d, port(80)),
            &forward,
            &reverse,
            &reserved,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let descriptor = RouteDescriptor {
            src_pk: a,
            dst_pk: d,
            src_port: port(1),
            dst_port: port(80),
        };
        let hop = |route, transport: u8| NextHop {
            route: id(route),
            transport: [transport; 16],
        };
        assert_eq!(
            rules.initiator_forward.kind,
            RuleKind::Forward {
                descriptor,
                next: hop(21, 1)
            }
        );
        assert_eq!(rules.initiator_forward.key, id(11));
        assert_eq!(
            rules.intermediaries[&b],
            vec![
                Rule::new(id(21), RuleKind::Intermediary(hop(31, 2))),
                Rule::new(id(22), RuleKind::Intermediary(hop(12, 1))),
            ]
        );
        assert_eq!(
            rules.intermediaries[&c],
            vec![
                Rule::new(id(31), RuleKind::Intermediary(hop(41, 3))),
                Rule::new(id(32), RuleKind::Intermediary(hop(22, 2))),
            ]
        );
        assert_eq!(
            rules.destination,
            [
                Rule::new(id(41), RuleKind::Consume(descriptor)),
                Rule::new(
                    id(42),
                    RuleKind::Forward {
                        descriptor: descriptor.reversed(),
                        next: hop(32, 3)
                    }
                ),
            ]
        );
        assert_eq!(
            rules.initiator_consume,
            Rule::new(id(12), RuleKind::Consume(descriptor.reversed()))
        );
    }

    #[test]
    fn bad_paths_and_missing_ids_are_refused() {
        let [a, b, c] = [(); 3].map(|()| Keypair::generate().public());
        let forward = line(&[a, b], &[1]);
        let reverse = line(&[b, a], &[1]);
        let reserved: HashMap<PublicKey, Vec<RouteId>> =
            [(a, vec![id(1), id(2)]), (b, vec![id(3)])].into();
        let ends = ((a, port(1)), (b, port(2)));
        let result = |forward: &Path, reverse: &Path| {
            route_group_rules(
                ends.0,
                ends.1,
                forward,
                reverse,
                &reserved,
                Duration::from_secs(30),
            )
        };
        assert_eq!(
            result(&forward, &reverse),
            Err(RulesError::MissingIds {
                visor: b,
                got: 1,
                needed: 2
            })
        );
        assert_eq!(
            result(&Vec::new(), &reverse),
            Err(RulesError::BadPath("forward"))
        );
        let astray = line(&[a, c], &[9]);
        assert_eq!(
            result(&astray, &reverse),
            Err(RulesError::BadPath("forward"))
        );
        let broken = vec![forward[0], line(&[c, b], &[2])[0]];
        assert_eq!(
            result(&broken, &reverse),
            Err(RulesError::BadPath("forward"))
        );
    }
}
