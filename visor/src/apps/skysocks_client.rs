//! `skysocks-client`: a local SOCKS5 listener (default `127.0.0.1:1080`) whose connections
//! leave through a `skysocks` exit. One long-lived route group to the exit carries a tunnel
//! ([`super::tunnel`]); it is kept up in the background — dialed again with backoff (1 s
//! doubling to 30 s, full jitter) whenever it dies — and each SOCKS connection is a stream
//! on it, so a connection costs no route setup. With `direct`, the route group is a direct
//! one (one hop over a transport to the exit, [`Visor::dial_direct`]): no route-setup, no
//! breaker.
//!
//! The SOCKS5 protocol (RFC 1928) is fast-socks5's server side: a greeting that is not done
//! within the greeting timeout is closed; only CONNECT is served (others get `0x07`, unknown
//! address types `0x08`); the exit's reply code is passed on before anything else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dmsg::backoff::Backoff;
use dmsg::identity::PublicKey;
use dmsg::session::Session;
use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::io::AsyncReadExt;
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

/// How long a connection waits for the tunnel to come up, and for the exit's reply.
pub const TUNNEL_WAIT: Duration = Duration::from_secs(15);

/// SOCKS connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;

/// What the client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The exit visor (running skysocks).
    pub exit: PublicKey,
    /// Reach it over a direct transport, without route-setup.
    pub direct: bool,
    /// See [`DEFAULT_GREETING_TIMEOUT`].
    pub greeting_timeout: Duration,
}

/// The running client; [`SkysocksClient::shutdown`] stops it.
#[derive(Debug)]
pub struct SkysocksClient {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl SkysocksClient {
    /// Serves SOCKS5 on `listener` through `config.exit`.
    pub fn start(visor: &Visor, config: ClientConfig, listener: TcpListener) -> Self {
        let this = Self {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        let (tunnel_tx, tunnel_rx) = watch::channel(None);
        this.tasks.spawn(keep_tunnel(
            visor.clone_internal(),
            config,
            tunnel_tx,
            this.tasks.clone(),
            this.stop.clone(),
        ));
        this.tasks.spawn(serve(
            listener,
            config,
            tunnel_rx,
            this.tasks.clone(),
            this.stop.clone(),
        ));
        tracing::info!(exit = %config.exit, direct = config.direct, "skysocks-client started");
        this
    }

    /// Closes the listener, every connection and the tunnel, and waits for their tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Keeps a tunnel to the exit up, publishing the live session (or `None`) on `current`.
async fn keep_tunnel(
    visor: Visor,
    config: ClientConfig,
    current: watch::Sender<Option<Session>>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let dialed = tokio::select! {
            () = stop.cancelled() => return,
            dialed = open_tunnel(&visor, config) => dialed,
        };
        match dialed {
            Ok((session, driver)) => {
                let driving = tasks.spawn(driver);
                let ready = tokio::time::timeout(tunnel::TUNNEL_HANDSHAKE_TIMEOUT, session.ready());
                if let Err(error) = ready
                    .await
                    .map_err(|_| TunnelError::Timeout)
                    .and_then(|ready| ready.map_err(TunnelError::NotReady))
                {
                    tracing::info!(exit = %config.exit, %error, "no tunnel to the exit");
                    session.close(dmsg::wire::Code::Normal, "not ready");
                } else {
                    backoff.reset();
                    tracing::info!(exit = %config.exit, "tunnel to the exit up");
                    let _ = current.send(Some(session.clone()));
                    tokio::select! {
                        () = stop.cancelled() => {
                            session.close(dmsg::wire::Code::ShuttingDown, "the client stops");
                            let _ = current.send(None);
                            return;
                        }
                        code = session.closed() => {
                            tracing::info!(code = code.label(), "tunnel to the exit closed; dialing again");
                        }
                    }
                    let _ = current.send(None);
                }
                drop(driving);
            }
            Err(error) => tracing::info!(exit = %config.exit, %error, "no tunnel to the exit"),
        }
        let wait = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn open_tunnel(visor: &Visor, config: ClientConfig) -> Result<tunnel::Tunnel, String> {
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
    config: ClientConfig,
    tunnel: watch::Receiver<Option<Session>>,
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
            tracing::debug!(%peer, "{MAX_CONNECTIONS} SOCKS connections open; closed at once");
            continue;
        };
        let (tunnel, stop) = (tunnel.clone(), stop.clone());
        let span = tracing::debug_span!("skysocks.connection", %peer);
        tasks.spawn(
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = handle(tcp, config, tunnel) => {}
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// One SOCKS connection: greeting and request within the timeout, then a stream to the exit.
async fn handle(tcp: TcpStream, config: ClientConfig, tunnel: watch::Receiver<Option<Session>>) {
    let greeted = tokio::time::timeout(config.greeting_timeout, async {
        let proto = Socks5ServerProtocol::accept_no_auth(tcp).await?;
        proto.read_command().await
    })
    .await;
    let (proto, command, target) = match greeted {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => {
            tracing::debug!(%error, "SOCKS request refused");
            return;
        }
        Err(_) => {
            tracing::debug!("no SOCKS request within the greeting timeout; closed");
            return;
        }
    };
    if command != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return;
    }
    let target = match target {
        TargetAddr::Ip(addr) => addr.to_string(),
        TargetAddr::Domain(host, port) => format!("{host}:{port}"),
    };
    match open_stream(tunnel, &target).await {
        Ok(mut stream) => {
            let Ok(mut tcp) = proto
                .reply_success(SocketAddr::from(([0, 0, 0, 0], 0)))
                .await
            else {
                return;
            };
            match tokio::io::copy_bidirectional(&mut tcp, &mut stream).await {
                Ok((up, down)) => tracing::debug!(up, down, "connection done"),
                Err(error) => tracing::debug!(%error, "connection broken"),
            }
        }
        Err(code) => {
            let _ = proto.reply_error(&reply_error(code)).await;
        }
    }
}

/// A stream to `target` through the tunnel, once the exit has connected; the reply code
/// otherwise.
async fn open_stream(
    mut tunnel: watch::Receiver<Option<Session>>,
    target: &str,
) -> Result<PlainStream, u8> {
    let waited = tokio::time::timeout(TUNNEL_WAIT, async {
        let live = tunnel.wait_for(|session| session.as_ref().is_some_and(|s| !s.is_closed()));
        live.await.ok().and_then(|session| session.clone())
    })
    .await;
    let Ok(Some(session)) = waited else {
        // No tunnel to the exit: the network towards it is down.
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
