//! Port forwarding (the "skynet" use): a visor *publishes* a local TCP service on a route
//! port, and *forwards* a local TCP listener to another visor's published port. Each
//! connection accepted on a forward is one route group dialed through route-setup
//! ([`Visor::dial_route`]); its bytes are copied both ways, and a half-close on either side
//! is passed on (the FIN record, ROUTING.md §6.3), so a request-then-EOF client still gets
//! its whole reply. A visor accepts route groups only on the ports it publishes.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::Port;
use dmsg::identity::PublicKey;
use prometheus::{IntCounterVec, Opts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::node::{RouteListener, Visor};
use crate::route_dial::RouteOptions;
use crate::route_group::RouteGroupError;

/// Connections one forward or publication carries at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;

/// How long connecting to a published service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A local TCP service published on a route port: `PORT=HOST:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The route port other visors dial.
    pub port: Port,
    /// The local service each route group is connected to.
    pub target: SocketAddr,
}

impl FromStr for Published {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, target) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not PORT=HOST:PORT (e.g. 80=127.0.0.1:8080)"))?;
        Ok(Self {
            port: route_port(port)?,
            target: target
                .parse()
                .map_err(|error| format!("{target:?} is not HOST:PORT: {error}"))?,
        })
    }
}

/// A local listener forwarded to another visor's published port: `ADDR=PK:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Where the local listener is bound.
    pub listen: SocketAddr,
    /// The visor publishing the service.
    pub dst: PublicKey,
    /// Its route port.
    pub port: Port,
    /// Dial directly (one hop over a transport to `dst`, no route-setup, no breaker)
    /// instead of through route-setup.
    pub direct: bool,
}

impl FromStr for Forwarded {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape =
            || format!("{s:?} is not ADDR=PK:PORT (e.g. 127.0.0.1:8000=<64 hex digits>:80)");
        let (listen, remote) = s.split_once('=').ok_or_else(shape)?;
        let (dst, port) = remote.rsplit_once(':').ok_or_else(shape)?;
        Ok(Self {
            listen: listen
                .parse()
                .map_err(|error| format!("{listen:?} is not HOST:PORT: {error}"))?,
            dst: dst
                .parse()
                .map_err(|error| format!("{dst:?} is not a public key: {error}"))?,
            port: route_port(port)?,
            direct: false,
        })
    }
}

fn route_port(text: &str) -> Result<Port, String> {
    text.parse::<u16>()
        .ok()
        .and_then(Port::new)
        .ok_or_else(|| format!("{text:?} is not a route port (1..=65535)"))
}

/// Why forwarding could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A published port is already listened on.
    #[error("publishing route port {0}: {1}")]
    Listen(Port, RouteGroupError),
    /// The metrics could not be made.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A forward's local address could not be bound.
    #[error("forwarding {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// What happened to a forwarded or published connection: the `outcome` label of
/// `visor_forward_connections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Carried until both sides finished.
    Done,
    /// Ended by an error after it was set up.
    Broken,
    /// The route dial (forward) or the connect to the local service (publish) failed.
    SetupFailed,
    /// Refused at accept: [`MAX_CONNECTIONS`] were open.
    Busy,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Done => "done",
            Self::Broken => "broken",
            Self::SetupFailed => "setup_failed",
            Self::Busy => "busy",
        })
    }
}

/// The running forwards and publications of a visor (more can be added at runtime, from
/// the control API); [`Forwarding::shutdown`] stops them.
#[derive(Debug)]
pub struct Forwarding {
    visor: Visor,
    tasks: TaskTracker,
    stop: CancellationToken,
    connections: IntCounterVec,
    forwards: std::sync::Mutex<Vec<Forwarded>>,
}

impl Forwarding {
    /// Nothing forwarded or published yet, on `visor`.
    pub fn new(visor: &Visor) -> Result<Self, ForwardError> {
        Ok(Self {
            visor: visor.clone_internal(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            connections: IntCounterVec::new(
                Opts::new(
                    "visor_forward_connections_total",
                    "Connections of port forwarding, by side (forward: a local listener to a \
                     remote visor; publish: a route group to a local service) and outcome",
                ),
                &["side", "outcome"],
            )?,
            forwards: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Starts serving `published` and `forwarded` (each with its bound listener).
    pub fn start(
        visor: &Visor,
        published: &[Published],
        forwarded: Vec<(Forwarded, TcpListener)>,
    ) -> Result<Self, ForwardError> {
        let this = Self::new(visor)?;
        for publication in published {
            this.publish(*publication)?;
        }
        for (forward, listener) in forwarded {
            this.forward(forward, listener);
        }
        Ok(this)
    }

    /// Publishes a local service on a route port.
    pub fn publish(&self, publication: Published) -> Result<(), ForwardError> {
        let listener = self
            .visor
            .listen(publication.port)
            .map_err(|error| ForwardError::Listen(publication.port, error))?;
        tracing::info!(port = %publication.port, target = %publication.target, "publishing");
        self.tasks
            .spawn(self.clone_parts().publish(listener, publication.target));
        Ok(())
    }

    /// Forwards connections on `listener` (bound at `forward.listen`).
    pub fn forward(&self, forward: Forwarded, listener: TcpListener) {
        tracing::info!(listen = %forward.listen, dst = %forward.dst, port = %forward.port, direct = forward.direct, "forwarding");
        self.forwards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(forward);
        self.tasks.spawn(
            self.clone_parts()
                .forward(self.visor.clone(), listener, forward),
        );
    }

    /// Binds `forward.listen` and forwards its connections.
    pub async fn forward_on(&self, forward: Forwarded) -> Result<(), ForwardError> {
        let listener =
            TcpListener::bind(forward.listen)
                .await
                .map_err(|error| ForwardError::Bind {
                    addr: forward.listen,
                    error,
                })?;
        self.forward(forward, listener);
        Ok(())
    }

    /// The forwards running now.
    pub fn forwards(&self) -> Vec<Forwarded> {
        self.forwards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The `visor_forward_connections_total` family, to register.
    pub fn metrics(&self) -> IntCounterVec {
        self.connections.clone()
    }

    /// Closes every listener and connection and waits for their tasks.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            tasks: self.tasks.clone(),
            stop: self.stop.clone(),
            connections: self.connections.clone(),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// What an accept loop needs: the tracker its connections join, the stop signal, the
/// counters, and its own connection slots.
struct Parts {
    tasks: TaskTracker,
    stop: CancellationToken,
    connections: IntCounterVec,
    slots: Arc<Semaphore>,
}

impl Parts {
    /// Runs one connection in a task of its own, within a slot, until it ends or `stop`;
    /// closes it at once when every slot is taken. Counts the outcome.
    fn carry_in_task<F>(&self, side: &'static str, span: tracing::Span, connection: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let count = move |connections: &IntCounterVec, outcome: Outcome| {
            connections
                .with_label_values(&[side, &outcome.to_string()])
                .inc();
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            count(&self.connections, Outcome::Busy);
            span.in_scope(|| tracing::debug!("{MAX_CONNECTIONS} connections open; closed at once"));
            return;
        };
        let connections = self.connections.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(
            async move {
                let outcome = tokio::select! {
                    () = stop.cancelled() => Outcome::Broken,
                    outcome = connection => outcome,
                };
                count(&connections, outcome);
                drop(slot);
            }
            .instrument(span),
        );
    }

    /// Route groups arriving on a published port, each connected to `target`.
    async fn publish(self, mut listener: RouteListener, target: SocketAddr) {
        loop {
            let group = tokio::select! {
                () = self.stop.cancelled() => return,
                group = listener.accept() => match group {
                    Some(group) => group,
                    None => return,
                },
            };
            let span =
                tracing::debug_span!("visor.publish", remote = %group.addr().remote, %target);
            self.carry_in_task("publish", span, async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                    Ok(Ok(tcp)) => carry(group, tcp).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "the published service refused");
                        Outcome::SetupFailed
                    }
                    Err(_) => {
                        tracing::debug!("the published service did not answer");
                        Outcome::SetupFailed
                    }
                }
            });
        }
    }

    /// Connections on a local listener, each carried over a route group to `forward.dst`.
    async fn forward(self, visor: Visor, listener: TcpListener, forward: Forwarded) {
        loop {
            let accepted = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds, say: back off a moment instead of spinning.
                    tracing::warn!(%error, listen = %forward.listen, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let span = tracing::debug_span!("visor.forward", %peer, dst = %forward.dst, port = %forward.port);
            let visor = visor.clone();
            self.carry_in_task("forward", span, async move {
                let dialed = if forward.direct {
                    visor
                        .dial_direct(forward.dst, forward.port, None)
                        .await
                        .map_err(|error| error.to_string())
                } else {
                    visor
                        .dial_route(forward.dst, forward.port, RouteOptions::default())
                        .await
                        .map_err(|error| error.to_string())
                };
                match dialed {
                    Ok(group) => carry(group, tcp).await,
                    Err(error) => {
                        tracing::info!(%error, "dial failed; connection closed");
                        Outcome::SetupFailed
                    }
                }
            });
        }
    }
}

/// Copies both ways until both sides have finished (each EOF passed on as a half-close) or
/// an error.
async fn carry<A, B>(mut a: A, mut b: B) -> Outcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((sent, received)) => {
            tracing::debug!(sent, received, "connection done");
            Outcome::Done
        }
        Err(error) => {
            tracing::debug!(%error, "connection broken");
            Outcome::Broken
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_or_say_what_is_wrong() {
        let pk = dmsg::identity::Keypair::generate().public();
        assert_eq!(
            "80=127.0.0.1:8080".parse::<Published>(),
            Ok(Published {
                port: Port::new(80).unwrap_or_else(|| unreachable!()),
                target: SocketAddr::from(([127, 0, 0, 1], 8080)),
            })
        );
        assert_eq!(
            format!("127.0.0.1:8000={pk}:80").parse::<Forwarded>(),
            Ok(Forwarded {
                listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
                dst: pk,
                port: Port::new(80).unwrap_or_else(|| unreachable!()),
                direct: false,
            })
        );
        for (text, says) in [
            ("80", "PORT=HOST:PORT"),
            ("0=127.0.0.1:1", "route port"),
            ("80=localhost", "HOST:PORT"),
        ] {
            let error = text.parse::<Published>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        for (text, says) in [
            ("127.0.0.1:8000".to_owned(), "ADDR=PK:PORT"),
            (format!("127.0.0.1:8000={pk}"), "ADDR=PK:PORT"),
            ("127.0.0.1:8000=abc:80".to_owned(), "public key"),
            (format!("127.0.0.1:8000={pk}:x"), "route port"),
            (format!("nowhere={pk}:80"), "HOST:PORT"),
        ] {
            let error = text.parse::<Forwarded>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
