//! The client agent: a long-running dmsg client that echoes on one port and answers
//! `skywire.client.v1.Agent` — its status, and stream probes to other clients — so a fleet
//! harness reads clients through an API instead of their logs (`dmsg-cli agent`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::{DmsgAddr, Port};
use dmsg::client::{Client, Listener};
use dmsg::entry::{pk_from_proto, pk_to_proto};
use dmsg::identity::PublicKey;
use dmsg::stream::DmsgStream;
use skywire_proto::skywire::client::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

/// Largest probe payload.
pub const MAX_PROBE_BYTES: u32 = 16 * 1024 * 1024;
/// Largest traffic chunk.
pub const MAX_CHUNK_BYTES: u32 = 1024 * 1024;
/// Longest traffic run.
pub const MAX_TRAFFIC: Duration = Duration::from_secs(600);
/// Echo streams served at once; more wait in the listener's backlog.
pub const MAX_ECHO_STREAMS: usize = 256;
/// Probe and Traffic calls served at once; more are refused with RESOURCE_EXHAUSTED.
pub const MAX_CALLS: usize = 32;
/// Longest one echo round trip of a Probe or Traffic call may take.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Echoes every stream arriving at `listener` until `stop`, each in a task of `tasks`.
pub async fn serve_echo(listener: Listener, tasks: TaskTracker, stop: CancellationToken) {
    listener
        .serve(MAX_ECHO_STREAMS, tasks, stop, |stream| async {
            if let Err(error) = echo(stream).await {
                tracing::debug!(%error, "echo stream ended with an error");
            }
        })
        .await;
}

/// Echoes one stream to its end, then closes the sending side.
async fn echo(stream: DmsgStream) -> std::io::Result<()> {
    let (mut read, mut write) = tokio::io::split(stream);
    tokio::io::copy(&mut read, &mut write).await?;
    write.shutdown().await
}

/// The `Agent` gRPC service over a client.
#[derive(Clone, Debug)]
pub struct AgentService {
    client: Client,
    echo_port: Port,
    /// Probe and Traffic calls running now (each holds up to two buffers of its size).
    calls: Arc<Semaphore>,
    /// Cancelled when the agent stops: calls in flight end at once.
    stop: CancellationToken,
}

impl AgentService {
    /// Answers for `client`, which echoes on `echo_port`; Probe and Traffic calls end when
    /// `stop` is cancelled.
    pub fn new(client: Client, echo_port: Port, stop: CancellationToken) -> Self {
        Self {
            client,
            echo_port,
            calls: Arc::new(Semaphore::new(MAX_CALLS)),
            stop,
        }
    }

    /// A slot for one Probe or Traffic call, or RESOURCE_EXHAUSTED.
    fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_CALLS} probe and traffic calls are running; retry when one ends"
            ))
        })
    }

    /// Runs `call` unless the agent stops first (UNAVAILABLE then).
    async fn until_stopped<T>(
        &self,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::select! {
            result = call => result,
            () = self.stop.cancelled() => Err(Status::unavailable("the agent is shutting down")),
        }
    }

    /// Dials `pk:port` by discovery, as a gRPC status on failure.
    /// `field` names the key's field in errors.
    async fn dial(&self, pk: &str, field: &str, port: u32) -> Result<DmsgStream, Status> {
        let pk: PublicKey = pk_from_proto(pk, field).map_err(|error| error.status())?;
        let port = u16::try_from(port)
            .ok()
            .and_then(Port::new)
            .ok_or_else(|| Status::invalid_argument(format!("port {port} is not 1-65535")))?;
        self.client
            .dial(DmsgAddr::new(pk, port))
            .await
            .map_err(|error| Status::unavailable(error.to_string()))
    }
}

/// Sends `payload` and reads it back, within [`ROUND_TRIP_TIMEOUT`].
async fn round_trip(
    stream: &mut DmsgStream,
    payload: &[u8],
    back: &mut [u8],
) -> Result<(), Status> {
    let io = |error: std::io::Error| Status::unavailable(format!("stream failed: {error}"));
    let exchange = async {
        stream.write_all(payload).await?;
        stream.flush().await?;
        stream.read_exact(back).await.map(drop)
    };
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no echo of {} bytes within {ROUND_TRIP_TIMEOUT:?}",
                payload.len()
            ))
        })?
        .map_err(io)?;
    if back != payload {
        return Err(Status::data_loss("the echo differs from what was sent"));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let handshakes = self.client.handshake_stats();
        Ok(Response::new(pb::StatusResponse {
            pk: pk_to_proto(&self.client.public_key()),
            connected_servers: self
                .client
                .connected_servers()
                .iter()
                .map(pk_to_proto)
                .collect(),
            published_sequence: self.client.published_sequence().unwrap_or(0),
            tasks: self.client.task_count() as u64,
            echo_port: u32::from(self.echo_port.get()),
            handshakes_pq: handshakes.hybrid,
            handshakes_classical: handshakes.classical,
            handshakes_downgraded: handshakes.downgrades,
            handshakes_pq_refused: handshakes.pq_refused,
        }))
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let request = request.into_inner();
        if request.bytes == 0 || request.bytes > MAX_PROBE_BYTES {
            return Err(Status::invalid_argument(format!(
                "bytes must be 1..={MAX_PROBE_BYTES}"
            )));
        }
        let _slot = self.slot()?;
        self.until_stopped(async {
            let started = Instant::now();
            let mut stream = self
                .dial(&request.pk, "ProbeRequest.pk", request.port)
                .await?;
            let payload: Vec<u8> = (0..request.bytes).map(|i| (i % 251) as u8).collect();
            let mut back = vec![0u8; payload.len()];
            round_trip(&mut stream, &payload, &mut back).await?;
            let elapsed = started.elapsed();
            Ok(Response::new(pb::ProbeResponse {
                elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                via_server: pk_to_proto(&stream.session().remote()),
            }))
        })
        .await
    }

    async fn traffic(
        &self,
        request: Request<pb::TrafficRequest>,
    ) -> Result<Response<pb::TrafficResponse>, Status> {
        let request = request.into_inner();
        let duration = Duration::from_millis(u64::from(request.millis));
        if duration > MAX_TRAFFIC
            || request.chunk_bytes == 0
            || request.chunk_bytes > MAX_CHUNK_BYTES
        {
            return Err(Status::invalid_argument(format!(
                "millis must be at most {} and chunk_bytes 1..={MAX_CHUNK_BYTES}",
                MAX_TRAFFIC.as_millis()
            )));
        }
        let _slot = self.slot()?;
        self.until_stopped(async {
            let mut stream = self
                .dial(&request.pk, "TrafficRequest.pk", request.port)
                .await?;
            let payload: Vec<u8> = (0..request.chunk_bytes).map(|i| (i % 253) as u8).collect();
            let mut back = vec![0u8; payload.len()];
            let until = Instant::now() + duration;
            let mut round_trips = 0u64;
            while Instant::now() < until {
                round_trip(&mut stream, &payload, &mut back)
                    .await
                    .map_err(|status| {
                        Status::new(
                            status.code(),
                            format!("after {round_trips} round trips: {}", status.message()),
                        )
                    })?;
                round_trips += 1;
            }
            Ok(Response::new(pb::TrafficResponse {
                bytes_echoed: round_trips * u64::from(request.chunk_bytes),
                round_trips,
                via_server: pk_to_proto(&stream.session().remote()),
            }))
        })
        .await
    }
}

/// The client's own families on the agent's `/metrics`, read from the client at each scrape.
#[derive(Clone, Debug)]
pub struct ClientCollector {
    client: Client,
    sessions: prometheus::IntGauge,
    published: prometheus::IntGauge,
    handshakes: prometheus::IntCounterVec,
}

impl ClientCollector {
    /// A collector over `client`.
    pub fn new(client: Client) -> Result<Self, prometheus::Error> {
        Ok(Self {
            client,
            sessions: prometheus::IntGauge::new(
                "dmsg_client_server_sessions",
                "Sessions to dmsg servers open now",
            )?,
            published: prometheus::IntGauge::new(
                "dmsg_client_entry_published",
                "1 once discovery has stored this client's entry",
            )?,
            handshakes: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "dmsg_client_handshakes_total",
                    "Session and stream handshakes by outcome (hybrid, classical, downgrade, \
                     pq_refused)",
                ),
                &["outcome"],
            )?,
        })
    }
}

impl prometheus::core::Collector for ClientCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.sessions.desc();
        descs.extend(self.published.desc());
        descs.extend(self.handshakes.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.sessions
            .set(i64::try_from(self.client.connected_servers().len()).unwrap_or(i64::MAX));
        self.published
            .set(i64::from(self.client.published_sequence().is_some()));
        for (outcome, value) in self.client.handshake_stats().by_outcome() {
            observability::metrics::set_counter(
                &self.handshakes.with_label_values(&[outcome]),
                value,
            );
        }
        let mut families = self.sessions.collect();
        families.extend(self.published.collect());
        families.extend(self.handshakes.collect());
        families
    }
}
