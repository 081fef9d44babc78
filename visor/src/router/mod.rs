//! The router core (ROUTING.md §4–§5): the rule table and what to do with an arriving route
//! packet, as plain data with `now` passed in — no IO, no clock, no tasks (like
//! `dmsg::mux`). The runtime around it owns the transports and timers.

pub mod rule;
pub mod table;

use tokio::time::Instant;

pub use rule::{NextHop, RouteDescriptor, Rule, RuleKind, TransportId};
pub use table::{Collected, RuleTable, TableConfig, TableCounts, TableError};

use crate::packet::RouteId;

/// Why a packet was dropped (label `reason` of `visor_packets_dropped_total`, ROUTING.md §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No rule for the route id.
    UnknownRoute,
    /// The route id names a FORWARD rule, which only sends.
    WrongRule,
    /// The route's queue at this hop is past its window.
    OverWindow,
    /// The outgoing transport's queue is full.
    QueueFull,
    /// The next transport is gone.
    TransportClosed,
    /// The packet broke the layout.
    Malformed,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 6] = [
        Self::UnknownRoute,
        Self::WrongRule,
        Self::OverWindow,
        Self::QueueFull,
        Self::TransportClosed,
        Self::Malformed,
    ];

    /// A stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownRoute => "unknown_route",
            Self::WrongRule => "wrong_rule",
            Self::OverWindow => "over_window",
            Self::QueueFull => "queue_full",
            Self::TransportClosed => "transport_closed",
            Self::Malformed => "malformed",
        }
    }

    /// Position in [`DropReason::ALL`] (for counter arrays).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What to do with an arriving route packet (ROUTING.md §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it on: same type and body, this route id, onto this transport.
    Forward(NextHop),
    /// It is for the local route group of this descriptor.
    Deliver(RouteDescriptor),
    /// Drop it, counted under the reason.
    Drop(DropReason),
}

/// Decides what to do with a packet that arrived on `from` with `route`, marking the rule
/// active.
pub fn route(table: &mut RuleTable, route: RouteId, from: TransportId, now: Instant) -> Decision {
    match table.touch_from(route, from, now).map(|rule| rule.kind) {
        Some(RuleKind::Intermediary(next)) => Decision::Forward(next),
        Some(RuleKind::Consume(descriptor)) => Decision::Deliver(descriptor),
        Some(RuleKind::Forward { .. }) => Decision::Drop(DropReason::WrongRule),
        None => Decision::Drop(DropReason::UnknownRoute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg::addr::Port;
    use dmsg::identity::Keypair;

    /// ROUTING.md §4.2: each rule type's decision, and an unknown id dropped.
    #[test]
    fn each_rule_type_decides_as_the_table_says() {
        let now = Instant::now();
        let mut table = RuleTable::new(TableConfig::default(), now);
        let ids = table.reserve(3, now).unwrap_or_default();
        let descriptor = RouteDescriptor {
            src_pk: Keypair::generate().public(),
            dst_pk: Keypair::generate().public(),
            src_port: Port::new(5).unwrap_or_else(|| unreachable!()),
            dst_port: Port::new(6).unwrap_or_else(|| unreachable!()),
        };
        let next = NextHop {
            route: ids[0],
            transport: [3; 16],
        };
        for rule in [
            Rule::new(ids[0], RuleKind::Intermediary(next)),
            Rule::new(ids[1], RuleKind::Consume(descriptor)),
            Rule::new(ids[2], RuleKind::Forward { descriptor, next }),
        ] {
            assert_eq!(table.install(rule, now), Ok(()));
        }
        assert_eq!(
            route(&mut table, ids[0], [0; 16], now),
            Decision::Forward(next)
        );
        assert_eq!(
            route(&mut table, ids[1], [0; 16], now),
            Decision::Deliver(descriptor)
        );
        assert_eq!(
            route(&mut table, ids[2], [0; 16], now),
            Decision::Drop(DropReason::WrongRule)
        );
        assert_eq!(
            table.rules_from(&[0; 16]).len(),
            3,
            "each remembers where it came from"
        );
        assert!(table.rules_from(&[1; 16]).is_empty());
        let unknown = RouteId::new(999).unwrap_or_else(|| unreachable!());
        assert_eq!(
            route(&mut table, unknown, [0; 16], now),
            Decision::Drop(DropReason::UnknownRoute)
        );
    }
}
