//! `skysocks-client`: a local SOCKS5 listener (default `127.0.0.1:1080`) whose connections
//! leave through a `skysocks` exit. One long-lived route group to the exit carries a tunnel
//! ([`super::tunnel`]); it is kept up in the background — dialed again with backoff (1 s
//! doubling to 30 s, full jitter) whenever it dies — and each SOCKS connection is a stream
//! on it, so a connection costs no route setup. With `direct`, the route group is a direct
//! one (one hop over a transport to the exit, [`Visor::dial_direct`]): no route-setup, no
//! breaker.
//!
//! The SOCKS5 protocol (RFC 1928, RFC 1929) is fast-socks5's server side: a greeting that is
//! not done within the greeting timeout is closed; with credentials configured only
//! username/password is accepted (a client offering only "no auth" gets `0xFF`); only
//! CONNECT is served (others get `0x07`, unknown address types `0x08`); the exit's reply code
//! is passed on before anything else, and with no tunnel the answer is `0x03` at once. A
//! panic in the dial path fails that request with `0x01` and nothing else. Every
//! connection's outcome is counted when it is known (`skysocks_client_connections_total`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dmsg::backoff::Backoff;
use dmsg::identity::PublicKey;
use dmsg::session::Session;
use fast_socks5::server::{Socks5ServerProtocol, SocksServerError};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use futures::FutureExt;
use prometheus::{IntCounterVec, Opts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::skysocks::{SKYSOCKS_PORT, reply};
use super::tunnel::{self, PlainStream, TunnelError};
use crate::node::Visor;
use crate::route_dial::RouteOptions;
use crate::route_group::RouteGroup;

/// The default SOCKS5 listen address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1080);

/// How long a SOCKS client may take over its greeting and request.
pub const DEFAULT_GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection waits for a tunnel that is still being dialed, and for the exit's
/// reply.
pub const TUNNEL_WAIT: Duration = Duration::from_secs(15);

/// SOCKS connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;

/// RFC 1929 credentials a SOCKS client must give.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for Credentials {
    type Err = String;

    /// `USER:PASSWORD` (the first line of a secret file).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let line = s.lines().next().unwrap_or_default();
        let (user, password) = line
            .split_once(':')
            .ok_or("expected USER:PASSWORD on the first line")?;
        if user.is_empty() || password.is_empty() || user.len() > 255 || password.len() > 255 {
            return Err("user and password are 1 to 255 bytes each (RFC 1929)".into());
        }
        Ok(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// Called with the target before each stream to the exit opens (tests inject faults here).
pub type DialHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What the client does.
#[derive(Clone)]
pub struct ClientConfig {
    /// The exit visor (running skysocks).
    pub exit: PublicKey,
    /// Reach it over a direct transport, without route-setup.
    pub direct: bool,
    /// See [`DEFAULT_GREETING_TIMEOUT`].
    pub greeting_timeout: Duration,
    /// Require these credentials (RFC 1929); `None`: no authentication.
    pub auth: Option<Credentials>,
    /// See [`DialHook`].
    pub on_dial: Option<DialHook>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("exit", &self.exit)
            .field("direct", &self.direct)
            .field("greeting_timeout", &self.greeting_timeout)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Through `exit`, with the defaults: routed, 10 s greeting, no authentication.
    pub fn new(exit: PublicKey) -> Self {
        Self {
            exit,
            direct: false,
            greeting_timeout: DEFAULT_GREETING_TIMEOUT,
            auth: None,
            on_dial: None,
        }
    }
}

/// How a SOCKS connection ended: the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Carried to its end.
    Done,
    /// Broken after it was set up.
    Broken,
    /// No greeting and request within the timeout.
    GreetingTimeout,
    /// A malformed or refused greeting or request (auth included).
    BadRequest,
    /// Not CONNECT.
    Unsupported,
    /// No tunnel to the exit.
    NoTunnel,
    /// The exit could not connect (its reply code was passed on).
    Refused,
    /// The dial path panicked.
    Panicked,
    /// Closed at accept: every slot taken.
    Busy,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Broken => "broken",
            Self::GreetingTimeout => "greeting_timeout",
            Self::BadRequest => "bad_request",
            Self::Unsupported => "unsupported",
            Self::NoTunnel => "no_tunnel",
            Self::Refused => "refused",
            Self::Panicked => "panicked",
            Self::Busy => "busy",
        }
    }
}

fn count(outcome: Outcome) {
    static FAMILY: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    let family = FAMILY.get_or_init(|| {
        let made = IntCounterVec::new(
            Opts::new(
                "skysocks_client_connections_total",
                "SOCKS connections of skysocks-client, by outcome (counted when it is known)",
            ),
            &["outcome"],
        )
        .and_then(|family| {
            observability::metrics::process_registry().register(Box::new(family.clone()))?;
            Ok(family)
        });
        made.map_err(|error| tracing::warn!(%error, "skysocks-client metrics unavailable"))
            .ok()
    });
    if let Some(family) = family {
        family.with_label_values(&[outcome.label()]).inc();
    }
}

/// The tunnel as connections see it.
#[derive(Clone, Debug, Default)]
struct TunnelState {
    /// The live session, if any.
    session: Option<Session>,
    /// Failed dials so far: a connection waiting for a tunnel stops waiting at the next one.
    failures: u64,
}

/// The running client; [`SkysocksClient::shutdown`] stops it.
#[derive(Debug)]
pub struct SkysocksClient {
    tasks: TaskTracker,
    stop: CancellationToken,
    tunnel: watch::Receiver<TunnelState>,
}

impl SkysocksClient {
    /// Serves SOCKS5 on `listener` through `config.exit`.
    pub fn start(visor: &Visor, config: ClientConfig, listener: TcpListener) -> Self {
        let (tunnel_tx, tunnel_rx) = watch::channel(TunnelState::default());
        let this = Self {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            tunnel: tunnel_rx.clone(),
        };
        tracing::info!(exit = %config.exit, direct = config.direct, auth = config.auth.is_some(), "skysocks-client started");
        this.tasks.spawn(keep_tunnel(
            visor.clone_internal(),
            config.clone(),
            tunnel_tx,
            this.tasks.clone(),
            this.stop.clone(),
        ));
        this.tasks.spawn(serve(
            listener,
            Arc::new(config),
            tunnel_rx,
            this.tasks.clone(),
            this.stop.clone(),
        ));
        this
    }

    /// Whether the tunnel to the exit is up now.
    pub fn tunnel_up(&self) -> bool {
        self.tunnel
            .borrow()
            .session
            .as_ref()
            .is_some_and(|session| !session.is_closed())
    }

    /// Streams open on the tunnel now (one per SOCKS connection being carried).
    pub fn open_streams(&self) -> usize {
        self.tunnel
            .borrow()
            .session
            .as_ref()
            .map_or(0, Session::stream_count)
    }

    /// Closes the listener, every connection and the tunnel, and waits for their tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Keeps a tunnel to the exit up, publishing its state on `current`.
async fn keep_tunnel(
    visor: Visor,
    config: ClientConfig,
    current: watch::Sender<TunnelState>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let dialed = tokio::select! {
            () = stop.cancelled() => return,
            dialed = open_tunnel(&visor, &config) => dialed,
        };
        let up = match dialed {
            Ok((session, driver)) => {
                tasks.spawn(driver);
                let ready = tokio::time::timeout(tunnel::TUNNEL_HANDSHAKE_TIMEOUT, session.ready())
                    .await
                    .map_err(|_| TunnelError::Timeout)
                    .and_then(|ready| ready.map_err(TunnelError::NotReady));
                match ready {
                    Ok(()) => Ok(session),
                    Err(error) => {
                        session.close(dmsg::wire::Code::Normal, "not ready");
                        Err(error.to_string())
                    }
                }
            }
            Err(error) => Err(error),
        };
        match up {
            Ok(session) => {
                backoff.reset();
                tracing::info!(exit = %config.exit, "tunnel to the exit up");
                current.send_modify(|state| state.session = Some(session.clone()));
                tokio::select! {
                    () = stop.cancelled() => {
                        session.close(dmsg::wire::Code::ShuttingDown, "the client stops");
                        current.send_modify(|state| state.session = None);
                        return;
                    }
                    code = session.closed() => {
                        tracing::info!(code = code.label(), "tunnel to the exit closed; dialing again");
                    }
                }
                current.send_modify(|state| state.session = None);
            }
            Err(error) => {
                tracing::info!(exit = %config.exit, %error, "no tunnel to the exit");
                current.send_modify(|state| state.failures += 1);
            }
        }
        let wait = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn open_tunnel(visor: &Visor, config: &ClientConfig) -> Result<tunnel::Tunnel, String> {
    let group: RouteGroup = if config.direct {
        visor
            .dial_direct(config.exit, SKYSOCKS_PORT, None)
            .await
            .map_err(|error| error.to_string())?
    } else {
        visor
            .dial_route(config.exit, SKYSOCKS_PORT, RouteOptions::default())
            .await
            .map_err(|error| error.to_string())?
    };
    // The exit opens no streams towards the client.
    let refuse: dmsg::session::IncomingHandler = Arc::new(drop);
    tunnel::initiate(group, visor.keypair(), visor.pq(), refuse)
        .await
        .map_err(|error| error.to_string())
}

/// Accepts SOCKS connections, each in a task of its own within [`MAX_CONNECTIONS`].
async fn serve(
    listener: TcpListener,
    config: Arc<ClientConfig>,
    tunnel: watch::Receiver<TunnelState>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "SOCKS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            count(Outcome::Busy);
            tracing::debug!(%peer, "{MAX_CONNECTIONS} SOCKS connections open; closed at once");
            continue;
        };
        let (tunnel, stop, config) = (tunnel.clone(), stop.clone(), config.clone());
        let span = tracing::debug_span!("skysocks.connection", %peer);
        tasks.spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    outcome = handle(tcp, &config, tunnel) => count(outcome),
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// The greeting: no authentication, or exactly the configured credentials.
async fn greet<T>(
    tcp: T,
    auth: Option<&Credentials>,
) -> Result<Socks5ServerProtocol<T, fast_socks5::server::states::Authenticated>, SocksServerError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match auth {
        None => Socks5ServerProtocol::accept_no_auth(tcp).await,
        Some(expected) => Socks5ServerProtocol::accept_password_auth(tcp, |user, password| {
            user == expected.user && password == expected.password
        })
        .await
        .map(|(proto, _)| proto),
    }
}

/// One SOCKS connection: greeting and request within the timeout, then a stream to the exit.
async fn handle(
    tcp: TcpStream,
    config: &ClientConfig,
    tunnel: watch::Receiver<TunnelState>,
) -> Outcome {
    let greeted = tokio::time::timeout(config.greeting_timeout, async {
        greet(tcp, config.auth.as_ref()).await?.read_command().await
    })
    .await;
    let (proto, command, target) = match greeted {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            tracing::debug!(%error, "SOCKS request refused");
            return Outcome::BadRequest;
        }
        Err(_) => {
            tracing::debug!("no SOCKS request within the greeting timeout; closed");
            return Outcome::GreetingTimeout;
        }
    };
    if command != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return Outcome::Unsupported;
    }
    let target = match target {
        TargetAddr::Ip(addr) => addr.to_string(),
        TargetAddr::Domain(host, port) => format!("{host}:{port}"),
    };
    // The dial path runs under catch_unwind: a panic fails this request and nothing else.
    let dialed = std::panic::AssertUnwindSafe(open_stream(tunnel, &target, config))
        .catch_unwind()
        .await;
    let opened = match dialed {
        Ok(opened) => opened,
        Err(_) => {
            tracing::warn!(target, "the dial path panicked; this request fails");
            let _ = proto.reply_error(&ReplyError::GeneralFailure).await;
            return Outcome::Panicked;
        }
    };
    match opened {
        Ok(mut stream) => {
            let Ok(mut tcp) = proto
                .reply_success(SocketAddr::from(([0, 0, 0, 0], 0)))
                .await
            else {
                return Outcome::Broken;
            };
            match tokio::io::copy_bidirectional(&mut tcp, &mut stream).await {
                Ok((up, down)) => {
                    tracing::debug!(up, down, "connection done");
                    Outcome::Done
                }
                Err(error) => {
                    tracing::debug!(%error, "connection broken");
                    Outcome::Broken
                }
            }
        }
        Err(code) => {
            let _ = proto.reply_error(&reply_error(code)).await;
            if code == reply::NETWORK_UNREACHABLE {
                Outcome::NoTunnel
            } else {
                Outcome::Refused
            }
        }
    }
}

/// A stream to `target` through the tunnel, once the exit has connected; the reply code
/// otherwise (`0x03` when there is no tunnel: none up, and the next dial failed too).
async fn open_stream(
    mut tunnel: watch::Receiver<TunnelState>,
    target: &str,
    config: &ClientConfig,
) -> Result<PlainStream, u8> {
    if let Some(hook) = &config.on_dial {
        hook(target);
    }
    let failures = tunnel.borrow().failures;
    let waited = tokio::time::timeout(TUNNEL_WAIT, async {
        let state = tunnel.wait_for(|state| {
            state.session.as_ref().is_some_and(|s| !s.is_closed()) || state.failures > failures
        });
        state.await.ok().and_then(|state| state.session.clone())
    })
    .await;
    let Ok(Some(session)) = waited else {
        return Err(reply::NETWORK_UNREACHABLE);
    };
    let answered = tokio::time::timeout(TUNNEL_WAIT, async {
        let pending = session
            .open(target.as_bytes())
            .map_err(|_| reply::GENERAL_FAILURE)?;
        let (raw, _) = pending.answer().await.map_err(|_| reply::GENERAL_FAILURE)?;
        let mut stream = PlainStream::new(raw);
        let code = stream.read_u8().await.map_err(|_| reply::GENERAL_FAILURE)?;
        if code == reply::SUCCEEDED {
            Ok(stream)
        } else {
            Err(code)
        }
    })
    .await;
    answered.unwrap_or(Err(reply::TTL_EXPIRED))
}

/// fast-socks5's value for a reply code from the exit (anything unknown is a general
/// failure: the crate's own `from_u8` panics on it).
fn reply_error(code: u8) -> ReplyError {
    match code {
        0x02 => ReplyError::ConnectionNotAllowed,
        0x03 => ReplyError::NetworkUnreachable,
        0x04 => ReplyError::HostUnreachable,
        0x05 => ReplyError::ConnectionRefused,
        0x06 => ReplyError::TtlExpired,
        0x07 => ReplyError::CommandNotSupported,
        0x08 => ReplyError::AddressTypeNotSupported,
        _ => ReplyError::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_never_print_the_password() {
        let credentials: Credentials = "alice:s3cret\nignored"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credentials.user, "alice");
        assert_eq!(credentials.password, "s3cret");
        assert!(!format!("{credentials:?}").contains("s3cret"));
        for bad in ["alice", ":x", "alice:", ""] {
            assert!(bad.parse::<Credentials>().is_err(), "{bad:?}");
        }
        assert_eq!(reply_error(0x05).as_u8(), 0x05);
        assert_eq!(reply_error(0x42).as_u8(), 0x01);
    }
}
