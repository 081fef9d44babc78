//! Path finding over the transport graph (skywire-go-notes §4.6): breadth-first over simple
//! paths, hop counts within [min, max], shortest first, at most [`MAX_PATHS`]. Pure: the
//! graph is built from registry entries by the caller.

use std::collections::{HashMap, VecDeque};

use dmsg::identity::PublicKey;
use visor::router::TransportId;

/// Paths returned at most per request.
pub const MAX_PATHS: usize = 3;
/// Partial paths a search may hold or expand, so a dense graph costs bounded work.
pub const MAX_EXPANSIONS: usize = 100_000;

/// One hop: a transport, crossed from one edge to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The transport.
    pub transport: TransportId,
    /// Where the hop starts.
    pub from: PublicKey,
    /// Where it ends.
    pub to: PublicKey,
}

/// A path: hops, each starting where the previous ended.
pub type Path = Vec<Hop>;

/// Transports as an undirected graph: each can be crossed both ways.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    neighbours: HashMap<PublicKey, Vec<(PublicKey, TransportId)>>,
}

impl Graph {
    /// A graph of `transports` (edge, edge, id); neighbours are kept in key order, so
    /// searches are deterministic.
    pub fn new(transports: impl IntoIterator<Item = (PublicKey, PublicKey, TransportId)>) -> Self {
        let mut neighbours: HashMap<PublicKey, Vec<(PublicKey, TransportId)>> = HashMap::new();
        for (a, b, id) in transports {
            if a == b {
                continue;
            }
            neighbours.entry(a).or_default().push((b, id));
            neighbours.entry(b).or_default().push((a, id));
        }
        for list in neighbours.values_mut() {
            list.sort();
            list.dedup();
        }
        Self { neighbours }
    }

    /// Up to [`MAX_PATHS`] simple paths from `src` to `dst` of `min..=max` hops, shortest
    /// first (ties in key order).
    pub fn paths(&self, src: &PublicKey, dst: &PublicKey, min: usize, max: usize) -> Vec<Path> {
        let mut found = Vec::new();
        if src == dst || max == 0 || min > max {
            return found;
        }
        // Each entry: the visors visited (in order) and the hops taken.
        let mut queue: VecDeque<(Vec<PublicKey>, Path)> = VecDeque::new();
        queue.push_back((vec![*src], Vec::new()));
        let mut expansions = 0usize;
        while let Some((visited, hops)) = queue.pop_front() {
            let Some(here) = visited.last().copied() else {
                continue;
            };
            for (next, transport) in self.neighbours.get(&here).into_iter().flatten() {
                if visited.contains(next) {
                    continue;
                }
                expansions += 1;
                if expansions > MAX_EXPANSIONS {
                    return found;
                }
                let mut path = hops.clone();
                path.push(Hop {
                    transport: *transport,
                    from: here,
                    to: *next,
                });
                if next == dst {
                    if path.len() >= min {
                        found.push(path);
                        if found.len() == MAX_PATHS {
                            return found;
                        }
                    }
                    continue;
                }
                if path.len() < max {
                    let mut visited = visited.clone();
                    visited.push(*next);
                    queue.push_back((visited, path));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg::identity::Keypair;

    /// Keys sorted, so names and order agree: `k[0] < k[1] < …`.
    fn keys(n: usize) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = (0..n).map(|_| Keypair::generate().public()).collect();
        keys.sort();
        keys
    }

    fn id(n: u8) -> TransportId {
        [n; 16]
    }

    /// The visors a path goes through.
    fn through(path: &Path) -> Vec<PublicKey> {
        let mut out = vec![path[0].from];
        out.extend(path.iter().map(|hop| hop.to));
        out
    }

    #[test]
    fn paths_are_simple_shortest_first_and_within_the_hop_bounds() {
        let k = keys(5);
        // 0-1-2-3 in a line, plus a shortcut 0-3 and a branch 1-4-3.
        let graph = Graph::new([
            (k[0], k[1], id(1)),
            (k[1], k[2], id(2)),
            (k[2], k[3], id(3)),
            (k[0], k[3], id(4)),
            (k[1], k[4], id(5)),
            (k[4], k[3], id(6)),
        ]);
        let table: [(usize, usize, Vec<Vec<usize>>); 4] = [
            (1, 3, vec![vec![0, 3], vec![0, 1, 2, 3], vec![0, 1, 4, 3]]),
            (2, 3, vec![vec![0, 1, 2, 3], vec![0, 1, 4, 3]]),
            (1, 1, vec![vec![0, 3]]),
            (4, 5, vec![]),
        ];
        for (min, max, expected) in table {
            let got: Vec<Vec<PublicKey>> = graph
                .paths(&k[0], &k[3], min, max)
                .iter()
                .map(through)
                .collect();
            let want: Vec<Vec<PublicKey>> = expected
                .iter()
                .map(|visors| visors.iter().map(|i| k[*i]).collect())
                .collect();
            assert_eq!(got, want, "min {min} max {max}");
        }
    }

    #[test]
    fn hops_chain_and_name_their_transport() {
        let k = keys(3);
        let graph = Graph::new([(k[0], k[1], id(1)), (k[1], k[2], id(2))]);
        let paths = graph.paths(&k[2], &k[0], 1, 3);
        assert_eq!(
            paths,
            vec![vec![
                Hop {
                    transport: id(2),
                    from: k[2],
                    to: k[1]
                },
                Hop {
                    transport: id(1),
                    from: k[1],
                    to: k[0]
                },
            ]],
            "transports are crossed either way"
        );
    }

    #[test]
    fn no_path_without_a_connection_and_at_most_three() {
        let k = keys(8);
        let graph = Graph::new([(k[0], k[1], id(1))]);
        assert!(graph.paths(&k[0], &k[2], 1, 5).is_empty());
        assert!(graph.paths(&k[0], &k[0], 1, 5).is_empty(), "not to itself");
        // A complete graph has many paths: only three come back, shortest first.
        let mut all = Vec::new();
        let mut n = 0u8;
        for a in 0..8 {
            for b in a + 1..8 {
                n += 1;
                all.push((k[a], k[b], id(n)));
            }
        }
        let paths = Graph::new(all).paths(&k[0], &k[7], 1, 7);
        assert_eq!(paths.len(), MAX_PATHS);
        assert_eq!(paths[0].len(), 1);
        assert!(paths.windows(2).all(|w| w[0].len() <= w[1].len()));
    }
}
