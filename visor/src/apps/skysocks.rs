//! `skysocks`, the SOCKS5 exit (route port 3): each route group that arrives is a tunnel
//! ([`super::tunnel`]); each stream on it asks for one TCP connection from here. The exit
//! resolves names itself (a client's `--socks5-hostname`), connects within
//! [`CONNECT_TIMEOUT`], answers the RFC 1928 reply code, and carries the bytes both ways with
//! half-closes passed on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dmsg::addr::Port;
use dmsg::session::{IncomingHandler, IncomingOpen};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::tunnel::{self, MAX_TARGET_LEN, PlainStream};
use crate::node::{RouteListener, Visor};
use crate::route_group::RouteGroupError;

/// The route port skysocks listens on.
pub const SKYSOCKS_PORT: Port = match Port::new(3) {
    Some(port) => port,
    None => panic!("3 is a valid port"),
};

/// How long connecting to a target may take before the client hears `0x06`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 1928 reply codes (§6).
pub mod reply {
    /// Succeeded.
    pub const SUCCEEDED: u8 = 0x00;
    /// General SOCKS server failure.
    pub const GENERAL_FAILURE: u8 = 0x01;
    /// Connection not allowed by ruleset.
    pub const NOT_ALLOWED: u8 = 0x02;
    /// Network unreachable.
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    /// Host unreachable (also: the name does not resolve).
    pub const HOST_UNREACHABLE: u8 = 0x04;
    /// Connection refused.
    pub const CONNECTION_REFUSED: u8 = 0x05;
    /// TTL expired (also: the connect timed out).
    pub const TTL_EXPIRED: u8 = 0x06;
}

/// The running exit; [`Skysocks::shutdown`] stops it.
#[derive(Debug)]
pub struct Skysocks {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Skysocks {
    /// Listens on `visor`'s route port 3 and serves every tunnel that arrives.
    pub fn start(visor: &Visor) -> Result<Self, RouteGroupError> {
        let listener = visor.listen(SKYSOCKS_PORT)?;
        let this = Self {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        this.tasks.spawn(accept(
            visor.clone_internal(),
            listener,
            this.tasks.clone(),
            this.stop.clone(),
        ));
        tracing::info!(port = %SKYSOCKS_PORT, "skysocks exit listening");
        Ok(this)
    }

    /// Closes every tunnel and connection and waits for their tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn accept(
    visor: Visor,
    mut listener: RouteListener,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let group = tokio::select! {
            () = stop.cancelled() => return,
            group = listener.accept() => match group {
                Some(group) => group,
                None => return,
            },
        };
        let client = group.addr().remote;
        let span = tracing::info_span!("skysocks.tunnel", %client);
        let (visor, tasks_for_streams, stop) = (visor.clone(), tasks.clone(), stop.clone());
        tasks.spawn(
            async move {
                let incoming = streams(tasks_for_streams.clone(), stop.clone());
                let tunnel = tunnel::respond(group, visor.keypair(), visor.pq(), incoming).await;
                let (session, driver) = match tunnel {
                    Ok(tunnel) => tunnel,
                    Err(error) => {
                        tracing::info!(%error, "tunnel refused");
                        return;
                    }
                };
                tracing::debug!("tunnel up");
                tokio::select! {
                    () = stop.cancelled() => session.close(dmsg::wire::Code::ShuttingDown, "the exit stops"),
                    code = driver => tracing::debug!(code = code.label(), "tunnel closed"),
                }
            }
            .instrument(span),
        );
    }
}

/// The handler of a tunnel's streams: each one is a connection, in a task of its own.
fn streams(tasks: TaskTracker, stop: CancellationToken) -> IncomingHandler {
    Arc::new(move |open: IncomingOpen| {
        let stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = connect_and_carry(open) => {}
            }
        });
    })
}

async fn connect_and_carry(open: IncomingOpen) {
    let target = parse_target(open.request());
    let Ok(raw) = open.accept(&[tunnel::STREAM_VERSION]) else {
        return;
    };
    let mut stream = PlainStream::new(raw);
    let connected = match target {
        Some(target) => connect(&target).await,
        None => Err(reply::GENERAL_FAILURE),
    };
    match connected {
        Ok(mut tcp) => {
            if stream.write_all(&[reply::SUCCEEDED]).await.is_err() {
                return;
            }
            match tokio::io::copy_bidirectional(&mut stream, &mut tcp).await {
                Ok((up, down)) => tracing::debug!(up, down, "connection done"),
                Err(error) => tracing::debug!(%error, "connection broken"),
            }
        }
        Err(code) => {
            let _ = stream.write_all(&[code]).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// The target of an OPEN body: `HOST:PORT`, at most [`MAX_TARGET_LEN`] bytes.
pub fn parse_target(body: &[u8]) -> Option<String> {
    if body.len() > MAX_TARGET_LEN {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|port| *port != 0)?;
    (!host.is_empty()).then(|| text.to_owned())
}

/// Connects to `target` (resolving a name here); the reply code on failure.
async fn connect(target: &str) -> Result<TcpStream, u8> {
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(target)).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(error)) => {
                tracing::debug!(target, %error, "does not resolve");
                return Err(reply::HOST_UNREACHABLE);
            }
            Err(_) => return Err(reply::TTL_EXPIRED),
        };
    if resolved.is_empty() {
        return Err(reply::HOST_UNREACHABLE);
    }
    // Each address in turn (a name may resolve to ::1 first and listen on 127.0.0.1 only),
    // all within the one timeout.
    let attempts = async {
        let mut code = reply::HOST_UNREACHABLE;
        for addr in resolved {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(error) => {
                    tracing::debug!(target, %addr, %error, "connect failed");
                    code = reply_code(&error);
                }
            }
        }
        Err(code)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempts)
        .await
        .unwrap_or(Err(reply::TTL_EXPIRED))
}

/// The RFC 1928 reply code for a failed connect.
pub fn reply_code(error: &io::Error) -> u8 {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => reply::CONNECTION_REFUSED,
        io::ErrorKind::HostUnreachable | io::ErrorKind::AddrNotAvailable => reply::HOST_UNREACHABLE,
        io::ErrorKind::NetworkUnreachable => reply::NETWORK_UNREACHABLE,
        io::ErrorKind::TimedOut => reply::TTL_EXPIRED,
        io::ErrorKind::PermissionDenied => reply::NOT_ALLOWED,
        _ => reply::GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_host_and_port() {
        assert_eq!(
            parse_target(b"example.com:80").as_deref(),
            Some("example.com:80")
        );
        assert_eq!(parse_target(b"[::1]:443").as_deref(), Some("[::1]:443"));
        for bad in [
            &b"example.com"[..],
            b":80",
            b"host:0",
            b"host:99999",
            &[0xff, b':', b'1'],
        ] {
            assert_eq!(parse_target(bad), None, "{bad:?}");
        }
        assert_eq!(parse_target(&[b'a'; MAX_TARGET_LEN + 1]), None);
    }

    #[test]
    fn connect_errors_map_to_rfc_1928_codes() {
        let code = |kind| reply_code(&io::Error::from(kind));
        assert_eq!(code(io::ErrorKind::ConnectionRefused), 0x05);
        assert_eq!(code(io::ErrorKind::HostUnreachable), 0x04);
        assert_eq!(code(io::ErrorKind::TimedOut), 0x06);
        assert_eq!(code(io::ErrorKind::PermissionDenied), 0x02);
        assert_eq!(code(io::ErrorKind::Other), 0x01);
    }
}
