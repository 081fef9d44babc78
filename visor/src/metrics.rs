//! The visor's Prometheus metrics, read from the live data plane at every scrape: transports
//! by type and state (live ones are `up`; persistent ones being dialed are `dialing` or
//! `failing`), route groups, rules by type, reservations, bytes, drops by reason, dmsg
//! sessions.

use observability::metrics::set_counter;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::gateway::GatewayCounters;
use crate::node::Visor;
use crate::router::DropReason;
use crate::transport::TransportKind;
use crate::transport::persistent::TransportKeepers;
use crate::uptime::Uptime;
use dmsg::client::keeper::TargetState;

/// The keepers of the persistent transports, shared with the collector (taken out at
/// shutdown).
pub type SharedKeepers = std::sync::Arc<std::sync::Mutex<Option<TransportKeepers>>>;

/// The collector.
#[derive(Clone, Debug)]
pub struct VisorCollector {
    visor: Visor,
    keepers: SharedKeepers,
    gateways: GatewayCounters,
    gateway_refused: IntCounterVec,
    transports: IntGaugeVec,
    route_groups: IntGauge,
    rules: IntGaugeVec,
    reservations: IntGauge,
    bytes: IntCounterVec,
    drops: IntCounterVec,
    dmsg_sessions: IntGauge,
    uptime: Uptime,
    uptime_ratio: GaugeVec,
    uptime_up: IntGaugeVec,
}

impl VisorCollector {
    /// A collector over `visor` and the keepers of its persistent transports.
    pub fn new(
        visor: Visor,
        keepers: SharedKeepers,
        gateways: GatewayCounters,
        uptime: Uptime,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            visor,
            keepers,
            gateways,
            uptime,
            uptime_ratio: GaugeVec::new(
                Opts::new(
                    "visor_uptime_ratio",
                    "The uptime probe: share of samples with the tier up, by tier (dmsg, \
                     routes) and window (1h, 24h); absent with no sample",
                ),
                &["tier", "window"],
            )?,
            uptime_up: IntGaugeVec::new(
                Opts::new(
                    "visor_uptime_up",
                    "The uptime probe's last sample: 1 if the tier is up now, by tier",
                ),
                &["tier"],
            )?,
            gateway_refused: IntCounterVec::new(
                Opts::new(
                    "visor_gateway_refused_total",
                    "Gateway streams refused at accept (key not trusted), by gateway",
                ),
                &["gateway"],
            )?,
            transports: IntGaugeVec::new(
                Opts::new(
                    "visor_transports",
                    "Transports by type and state: up (live), and persistent ones being \
                     dialed (dialing) or failing to dial (failing)",
                ),
                &["type", "state"],
            )?,
            route_groups: IntGauge::new("visor_route_groups", "Route groups open now")?,
            rules: IntGaugeVec::new(
                Opts::new("visor_rules", "Routing rules installed now, by type"),
                &["type"],
            )?,
            reservations: IntGauge::new(
                "visor_route_reservations",
                "Route IDs reserved and not yet turned into a rule",
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "visor_transport_bytes_total",
                    "Frame bytes over transports, by direction (sent, received)",
                ),
                &["direction"],
            )?,
            drops: IntCounterVec::new(
                Opts::new(
                    "visor_packets_dropped_total",
                    "Route packets dropped, by reason",
                ),
                &["reason"],
            )?,
            dmsg_sessions: IntGauge::new(
                "visor_dmsg_sessions",
                "Sessions of the visor's dmsg client to dmsg servers now",
            )?,
        })
    }

    fn refresh(&self) {
        let stats = self.visor.stats();
        let gauge = |g: &IntGauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        let transports = self.visor.transports();
        let persistent = self
            .keepers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(TransportKeepers::states)
            .unwrap_or_default();
        for kind in TransportKind::ALL {
            let up = transports.iter().filter(|t| t.kind == kind).count();
            gauge(&self.transports.with_label_values(&[kind.name(), "up"]), up);
            let (mut dialing, mut failing) = (0, 0);
            for (target, state) in &persistent {
                if target.kind != kind {
                    continue;
                }
                match state {
                    TargetState::Dialing => dialing += 1,
                    TargetState::Failing { .. } => failing += 1,
                    TargetState::Up => {}
                }
            }
            gauge(
                &self.transports.with_label_values(&[kind.name(), "dialing"]),
                dialing,
            );
            gauge(
                &self.transports.with_label_values(&[kind.name(), "failing"]),
                failing,
            );
        }
        gauge(&self.route_groups, stats.route_groups);
        for (label, count) in [
            ("consume", stats.rules.consume),
            ("forward", stats.rules.forward),
            ("intermediary", stats.rules.intermediary),
        ] {
            gauge(&self.rules.with_label_values(&[label]), count);
        }
        gauge(&self.reservations, stats.rules.reserved);
        set_counter(&self.bytes.with_label_values(&["sent"]), stats.bytes_sent);
        set_counter(
            &self.bytes.with_label_values(&["received"]),
            stats.bytes_received,
        );
        for reason in DropReason::ALL {
            set_counter(
                &self.drops.with_label_values(&[reason.label()]),
                stats.dropped(reason),
            );
        }
        gauge(
            &self.dmsg_sessions,
            self.visor.dmsg().connected_servers().len(),
        );
        for (gateway, count) in [
            ("transport", &self.gateways.transport_refused),
            ("route", &self.gateways.route_refused),
        ] {
            set_counter(
                &self.gateway_refused.with_label_values(&[gateway]),
                count.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }

    fn refresh_uptime(&self) {
        let report = self.uptime.report();
        self.uptime_ratio.reset();
        for (tier, window, ratio) in [
            ("dmsg", "1h", report.dmsg_hour),
            ("dmsg", "24h", report.dmsg_day),
            ("routes", "1h", report.routes_hour),
            ("routes", "24h", report.routes_day),
        ] {
            if let Some(value) = ratio.value() {
                self.uptime_ratio
                    .with_label_values(&[tier, window])
                    .set(value);
            }
        }
        if let Some(last) = report.last {
            self.uptime_up
                .with_label_values(&["dmsg"])
                .set(i64::from(last.dmsg));
            self.uptime_up
                .with_label_values(&["routes"])
                .set(i64::from(last.routes == Some(true)));
        }
    }

    fn parts(&self) -> [&dyn Collector; 10] {
        [
            &self.uptime_ratio,
            &self.uptime_up,
            &self.gateway_refused,
            &self.transports,
            &self.route_groups,
            &self.rules,
            &self.reservations,
            &self.bytes,
            &self.drops,
            &self.dmsg_sessions,
        ]
    }
}

impl Collector for VisorCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(Collector::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.refresh_uptime();
        self.parts()
            .into_iter()
            .flat_map(Collector::collect)
            .collect()
    }
}
