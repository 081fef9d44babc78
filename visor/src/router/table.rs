//! The rule table: route-ID reservations, rules, keep-alive and collection (ROUTING.md §5),
//! as plain data with `now` passed in.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::rule::{Rule, RuleKind, TransportId};
use crate::packet::RouteId;

/// Rules and reservations a table holds at most (ROUTING.md §5.1).
pub const MAX_RULES: usize = 65_536;
/// IDs one `reserve` call may take.
pub const MAX_RESERVE_AT_ONCE: usize = 64;
/// A reservation not turned into a rule within this is released.
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the table collects expired reservations and idle rules.
pub const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Table settings.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    /// Rules and reservations at most.
    pub max_entries: usize,
    /// Lifetime of an unused reservation.
    pub reservation_timeout: Duration,
    /// Collection period.
    pub gc_interval: Duration,
}

impl Default for TableConfig {
    /// The limits of ROUTING.md §7.
    fn default() -> Self {
        Self {
            max_entries: MAX_RULES,
            reservation_timeout: RESERVATION_TIMEOUT,
            gc_interval: GC_INTERVAL,
        }
    }
}

#[derive(Clone, Debug)]
enum Slot {
    Reserved {
        expires: Instant,
    },
    Ruled {
        rule: Rule,
        last_active: Instant,
        /// The transport the last matching packet arrived on.
        from: Option<TransportId>,
    },
}

/// Why a table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// `reserve` asked for 0 or more than [`MAX_RESERVE_AT_ONCE`] IDs.
    #[error("reserve between 1 and {MAX_RESERVE_AT_ONCE} route ids at once, not {0}")]
    BadCount(usize),
    /// The table holds its maximum of rules and reservations.
    #[error("the rule table is full ({0} rules and reservations)")]
    Full(usize),
    /// A rule's key is not reserved here (never, or the reservation expired).
    #[error("route id {0} is not reserved on this visor (or its reservation expired)")]
    NotReserved(RouteId),
}

/// What one collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Reservations released unused.
    pub released: Vec<RouteId>,
    /// Rules removed for being idle past their keep-alive.
    pub idle: Vec<Rule>,
}

/// Rules and reservations by type, now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Reserved IDs without a rule yet.
    pub reserved: usize,
    /// CONSUME rules.
    pub consume: usize,
    /// FORWARD rules.
    pub forward: usize,
    /// INTERMEDIARY rules.
    pub intermediary: usize,
}

/// The rule table of one visor.
#[derive(Debug)]
pub struct RuleTable {
    config: TableConfig,
    slots: HashMap<RouteId, Slot>,
    /// The next ID to try.
    next: u32,
    /// When the next collection is due.
    next_gc: Instant,
}

impl RuleTable {
    /// An empty table; its first collection is due one interval after `now`.
    pub fn new(config: TableConfig, now: Instant) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            next: 1,
            next_gc: now + config.gc_interval,
        }
    }

    /// Reserves `count` unused route IDs, released at `now` + the reservation timeout unless
    /// a rule is installed under them first.
    pub fn reserve(&mut self, count: usize, now: Instant) -> Result<Vec<RouteId>, TableError> {
        if count == 0 || count > MAX_RESERVE_AT_ONCE {
            return Err(TableError::BadCount(count));
        }
        if self.slots.len() + count > self.config.max_entries {
            return Err(TableError::Full(self.slots.len()));
        }
        let expires = now + self.config.reservation_timeout;
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            // Terminates: fewer than `max_entries` ≤ 2³² − 1 IDs are in use.
            let candidate = RouteId::new(self.next);
            self.next = self.next.checked_add(1).unwrap_or(1);
            let Some(id) = candidate else { continue };
            if self.slots.contains_key(&id) {
                continue;
            }
            self.slots.insert(id, Slot::Reserved { expires });
            ids.push(id);
        }
        Ok(ids)
    }

    /// Installs `rule` under its key, which must be reserved and unexpired at `now`, or hold
    /// a rule already (which `rule` replaces).
    pub fn install(&mut self, rule: Rule, now: Instant) -> Result<(), TableError> {
        match self.slots.get(&rule.key) {
            Some(Slot::Reserved { expires }) if *expires > now => {}
            Some(Slot::Ruled { .. }) => {}
            _ => return Err(TableError::NotReserved(rule.key)),
        }
        self.slots.insert(
            rule.key,
            Slot::Ruled {
                rule,
                last_active: now,
                from: None,
            },
        );
        Ok(())
    }

    /// Removes the rule or reservation under `key`; returns the rule if there was one.
    pub fn remove(&mut self, key: RouteId) -> Option<Rule> {
        match self.slots.remove(&key)? {
            Slot::Ruled { rule, .. } => Some(rule),
            Slot::Reserved { .. } => None,
        }
    }

    /// The rule under `key`, without counting as activity.
    pub fn rule(&self, key: RouteId) -> Option<&Rule> {
        match self.slots.get(&key)? {
            Slot::Ruled { rule, .. } => Some(rule),
            Slot::Reserved { .. } => None,
        }
    }

    /// The rule under `key`, marked active at `now` (a local sender used it).
    pub fn touch(&mut self, key: RouteId, now: Instant) -> Option<Rule> {
        match self.slots.get_mut(&key)? {
            Slot::Ruled {
                rule, last_active, ..
            } => {
                *last_active = now;
                Some(*rule)
            }
            Slot::Reserved { .. } => None,
        }
    }

    /// The rule under `key`, marked active at `now` by a packet that arrived on `from`.
    pub fn touch_from(&mut self, key: RouteId, from: TransportId, now: Instant) -> Option<Rule> {
        match self.slots.get_mut(&key)? {
            Slot::Ruled {
                rule,
                last_active,
                from: arrived,
            } => {
                *last_active = now;
                *arrived = Some(from);
                Some(*rule)
            }
            Slot::Reserved { .. } => None,
        }
    }

    /// The rules whose last packet arrived on `transport` (the routes a closing transport
    /// breaks, ROUTING.md §6.6).
    pub fn rules_from(&self, transport: &TransportId) -> Vec<Rule> {
        self.slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Ruled {
                    rule,
                    from: Some(from),
                    ..
                } if from == transport => Some(*rule),
                _ => None,
            })
            .collect()
    }

    /// When [`RuleTable::handle_timeout`] should next run: the next collection, if anything
    /// is there to collect.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.slots.is_empty()).then_some(self.next_gc)
    }

    /// Runs a due collection: releases expired reservations and removes rules idle longer
    /// than their keep-alive. Does nothing before the collection is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Collected {
        let mut collected = Collected::default();
        if now < self.next_gc {
            return collected;
        }
        self.next_gc = now + self.config.gc_interval;
        self.slots.retain(|id, slot| match slot {
            Slot::Reserved { expires } => {
                let keep = *expires > now;
                if !keep {
                    collected.released.push(*id);
                }
                keep
            }
            Slot::Ruled {
                rule, last_active, ..
            } => {
                let keep = now.saturating_duration_since(*last_active) <= rule.keep_alive;
                if !keep {
                    collected.idle.push(*rule);
                }
                keep
            }
        });
        collected.released.sort();
        collected.idle.sort_by_key(|rule| rule.key);
        collected
    }

    /// Rules and reservations by type.
    pub fn counts(&self) -> TableCounts {
        let mut counts = TableCounts::default();
        for slot in self.slots.values() {
            match slot {
                Slot::Reserved { .. } => counts.reserved += 1,
                Slot::Ruled { rule, .. } => match rule.kind {
                    RuleKind::Consume(_) => counts.consume += 1,
                    RuleKind::Forward { .. } => counts.forward += 1,
                    RuleKind::Intermediary(_) => counts.intermediary += 1,
                },
            }
        }
        counts
    }

    /// Rules and reservations held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every rule (for removal when a transport closes, and for the control API).
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.slots.values().filter_map(|slot| match slot {
            Slot::Ruled { rule, .. } => Some(rule),
            Slot::Reserved { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::rule::NextHop;
    use super::*;

    fn intermediary(key: RouteId) -> Rule {
        Rule::new(
            key,
            RuleKind::Intermediary(NextHop {
                route: key,
                transport: [1; 16],
            }),
        )
    }

    fn table(now: Instant) -> RuleTable {
        RuleTable::new(TableConfig::default(), now)
    }

    /// ROUTING.md §5.1: IDs are sequential from 1, never 0, never one in use.
    #[test]
    fn reservations_are_sequential_and_unique() {
        let now = Instant::now();
        let mut table = table(now);
        let first = table.reserve(3, now).unwrap_or_default();
        assert_eq!(
            first.iter().map(|id| id.get()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        table.next = u32::MAX;
        let wrapped = table.reserve(3, now).unwrap_or_default();
        assert_eq!(
            wrapped.iter().map(|id| id.get()).collect::<Vec<_>>(),
            [u32::MAX, 4, 5],
            "wraps past 0 and skips the IDs in use"
        );
        assert_eq!(table.reserve(0, now), Err(TableError::BadCount(0)));
        assert_eq!(table.reserve(65, now), Err(TableError::BadCount(65)));
    }

    /// ROUTING.md §5.1: a rule needs an unexpired reservation.
    #[test]
    fn a_rule_needs_its_reservation() {
        let now = Instant::now();
        let mut table = table(now);
        let stranger = RouteId::new(77).unwrap_or_else(|| unreachable!());
        assert_eq!(
            table.install(intermediary(stranger), now),
            Err(TableError::NotReserved(stranger))
        );
        let ids = table.reserve(2, now).unwrap_or_default();
        assert_eq!(table.install(intermediary(ids[0]), now), Ok(()));
        let late = now + RESERVATION_TIMEOUT;
        assert_eq!(
            table.install(intermediary(ids[1]), late),
            Err(TableError::NotReserved(ids[1]))
        );
        // Replacing an installed rule needs no new reservation.
        assert_eq!(table.install(intermediary(ids[0]), late), Ok(()));
    }

    /// ROUTING.md §5.1: the table is bounded.
    #[test]
    fn a_full_table_refuses_reservations() {
        let now = Instant::now();
        let mut table = RuleTable::new(
            TableConfig {
                max_entries: 100,
                ..TableConfig::default()
            },
            now,
        );
        for _ in 0..25 {
            assert!(table.reserve(4, now).is_ok());
        }
        assert_eq!(table.reserve(1, now), Err(TableError::Full(100)));
    }

    /// ROUTING.md §5.1–§5.2 (Done-when d, on the table): unused reservations are released
    /// after 30 s; rules idle past their keep-alive are collected; activity keeps them.
    #[test]
    fn unused_reservations_expire_and_idle_rules_are_collected() {
        let start = Instant::now();
        let mut table = table(start);
        let ids = table.reserve(3, start).unwrap_or_default();
        table.install(intermediary(ids[0]), start).unwrap_or(());
        table.install(intermediary(ids[1]), start).unwrap_or(());
        assert_eq!(table.poll_timeout(), Some(start + GC_INTERVAL));
        assert_eq!(
            table.handle_timeout(start + Duration::from_secs(1)),
            Collected::default(),
            "not due yet"
        );

        let mut now = start;
        let mut collected = Collected::default();
        while now < start + Duration::from_secs(40) {
            now = table.poll_timeout().unwrap_or(now + GC_INTERVAL);
            // ids[1] stays active; ids[0] never is again.
            table.touch(ids[1], now);
            let round = table.handle_timeout(now);
            collected.released.extend(round.released);
            collected.idle.extend(round.idle);
        }
        assert_eq!(collected.released, [ids[2]]);
        assert_eq!(
            collected.idle.iter().map(|r| r.key).collect::<Vec<_>>(),
            [ids[0]]
        );
        assert!(table.rule(ids[1]).is_some());
        assert_eq!(
            table.counts(),
            TableCounts {
                intermediary: 1,
                ..TableCounts::default()
            }
        );
    }
}
