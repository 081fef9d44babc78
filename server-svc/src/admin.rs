//! The admin side of a dmsg-server: the `skywire.server.v1.Admin/Stats` RPC and a Prometheus
//! collector, both reading the relay's live counters and the registration state at the moment
//! they are asked (nothing is sampled on a timer, so nothing goes stale).

use std::collections::HashMap;

use dmsg::entry::pk_to_proto;
use dmsg::server::{RejectReason, Server, ServerStats};
use observability::metrics::set_counter;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use skywire_proto::skywire::server::v1 as pb;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registration::{Phase, RegistrationState};

/// What the admin side reads.
#[derive(Clone, Debug)]
pub struct AdminView {
    /// The relay.
    pub server: Server,
    /// The registration state.
    pub registration: watch::Receiver<RegistrationState>,
    /// The registered address.
    pub public_address: String,
    /// When the relay started accepting.
    pub started: Instant,
    /// True while the accept loop runs.
    pub relay_up: watch::Receiver<bool>,
}

/// The `Admin` gRPC service.
#[derive(Clone, Debug)]
pub struct AdminService {
    view: AdminView,
}

impl AdminService {
    /// Serves `view`.
    pub fn new(view: AdminView) -> Self {
        Self { view }
    }
}

fn phase_to_proto(phase: &Phase) -> pb::registration::State {
    match phase {
        Phase::Disabled => pb::registration::State::Disabled,
        Phase::Pending => pb::registration::State::Pending,
        Phase::Registered => pb::registration::State::Registered,
        Phase::Deregistered => pb::registration::State::Deregistered,
    }
}

/// The Stats answer for a snapshot.
fn stats_response(view: &AdminView, stats: &ServerStats) -> pb::StatsResponse {
    let registration = view.registration.borrow().clone();
    pb::StatsResponse {
        pk: pk_to_proto(&view.server.public_key()),
        public_address: view.public_address.clone(),
        sessions: stats.sessions,
        sessions_total: stats.sessions_total,
        streams: stats.streams,
        streams_total: stats.streams_total,
        bytes_relayed: stats.bytes_relayed,
        handshakes_pq: stats.handshakes.hybrid,
        handshakes_classical: stats.handshakes.classical,
        handshakes_pq_refused: stats.handshakes.pq_refused,
        handshakes_downgraded: stats.handshakes.downgrades,
        rejects: stats
            .rejects
            .iter()
            .map(|(reason, count)| (reason.label().to_owned(), *count))
            .collect::<HashMap<_, _>>(),
        available_sessions: view.server.available_sessions(),
        registration: Some(pb::Registration {
            state: phase_to_proto(&registration.phase).into(),
            sequence: registration.sequence,
            failed_attempts: registration.failed_attempts,
            last_error: registration.last_error,
            last_registered_unix: registration.last_registered_nanos / 1_000_000_000,
            via: registration.via,
        }),
        uptime_secs: view.started.elapsed().as_secs(),
        recent_session_starts_unix_ms: view.server.recent_session_starts(),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn stats(
        &self,
        _request: tonic::Request<pb::StatsRequest>,
    ) -> Result<tonic::Response<pb::StatsResponse>, tonic::Status> {
        let stats = self.view.server.stats();
        Ok(tonic::Response::new(stats_response(&self.view, &stats)))
    }
}

/// The relay's metrics, refreshed from the live counters at every scrape.
#[derive(Clone, Debug)]
pub struct RelayCollector {
    view: AdminView,
    up: IntGauge,
    sessions: IntGauge,
    sessions_total: IntCounter,
    streams: IntGauge,
    streams_total: IntCounter,
    bytes_relayed: IntCounter,
    available_sessions: IntGauge,
    handshakes: IntCounterVec,
    rejects: IntCounterVec,
    registered: IntGauge,
    registration_failures: IntGauge,
}

impl RelayCollector {
    /// A collector over `view`.
    pub fn new(view: AdminView) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        Ok(Self {
            view,
            up: gauge("dmsg_server_relay_up", "1 while the relay accept loop runs")?,
            sessions: gauge("dmsg_server_sessions_open", "Sessions open now")?,
            sessions_total: counter(
                "dmsg_server_sessions_established_total",
                "Sessions established since start",
            )?,
            streams: gauge("dmsg_server_streams_open", "Relayed streams open now")?,
            streams_total: counter(
                "dmsg_server_streams_established_total",
                "Relayed streams established since start",
            )?,
            bytes_relayed: counter(
                "dmsg_server_relayed_bytes_total",
                "Payload bytes relayed, both directions",
            )?,
            available_sessions: gauge(
                "dmsg_server_available_sessions",
                "Sessions advertised as free (may be negative)",
            )?,
            handshakes: IntCounterVec::new(
                Opts::new(
                    "dmsg_server_handshakes_total",
                    "Session handshakes by outcome (hybrid, classical, downgrade, pq_refused)",
                ),
                &["outcome"],
            )?,
            rejects: IntCounterVec::new(
                Opts::new(
                    "dmsg_server_rejects_total",
                    "Connections and streams refused, by reason",
                ),
                &["reason"],
            )?,
            registered: gauge(
                "dmsg_server_registered",
                "1 while the server entry is stored in discovery",
            )?,
            registration_failures: gauge(
                "dmsg_server_registration_failed_attempts",
                "Failed registration attempts since the last success",
            )?,
        })
    }

    fn refresh(&self) {
        let stats = self.view.server.stats();
        let gauge = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.up.set(i64::from(*self.view.relay_up.borrow()));
        gauge(&self.sessions, stats.sessions);
        set_counter(&self.sessions_total, stats.sessions_total);
        gauge(&self.streams, stats.streams);
        set_counter(&self.streams_total, stats.streams_total);
        set_counter(&self.bytes_relayed, stats.bytes_relayed);
        self.available_sessions
            .set(self.view.server.available_sessions());
        for (outcome, value) in stats.handshakes.by_outcome() {
            set_counter(&self.handshakes.with_label_values(&[outcome]), value);
        }
        for reason in RejectReason::ALL {
            set_counter(
                &self.rejects.with_label_values(&[reason.label()]),
                stats.rejected(reason),
            );
        }
        let registration = self.view.registration.borrow();
        self.registered
            .set(i64::from(registration.phase == Phase::Registered));
        self.registration_failures
            .set(i64::from(registration.failed_attempts));
    }
}

impl RelayCollector {
    /// Every metric of the collector.
    fn parts(&self) -> [&dyn Collector; 11] {
        [
            &self.up,
            &self.sessions,
            &self.sessions_total,
            &self.streams,
            &self.streams_total,
            &self.bytes_relayed,
            &self.available_sessions,
            &self.handshakes,
            &self.rejects,
            &self.registered,
            &self.registration_failures,
        ]
    }
}

impl Collector for RelayCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(Collector::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.parts()
            .into_iter()
            .flat_map(Collector::collect)
            .collect()
    }
}
