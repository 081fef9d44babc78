//! The invalidation connection: one RESP3 connection per discovery replica on which Redis
//! announces every write to an entry key (`CLIENT TRACKING ON BCAST PREFIX <prefix>e:`), and
//! which keeps the [`EntryCache`] true to it.
//!
//! Redis sends invalidations and replies on one connection, in order, and the connection's
//! driver hands each invalidation to the cache before it completes any later reply. Redis
//! queues a write's invalidation at the end of the event-loop cycle that applied it, while a
//! `PING` is answered in the cycle that reads it; a `PING` read in a cycle had arrived before
//! that cycle applied anything, so once a heartbeat sent at `t` is answered, every write
//! Redis applied before `t` is out of the cache ([`EntryCache::confirmed`]). The connection is lost when its socket closes, when a
//! heartbeat goes unanswered for [`HEARTBEAT_TIMEOUT`], or when Redis is unreachable; the cache
//! then stops serving copies at once ([`EntryCache::tracking_lost`]) and is flushed when a new
//! connection is up ([`EntryCache::tracking_started`]). The driver runs inside the task of
//! [`run`], so stopping the task closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{
    self, AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::cache::{EntryCache, KeyBytes};

/// The name the connection shows in `CLIENT LIST`.
pub const CONNECTION_NAME: &str = "skywire-discovery-invalidations";
/// Longest a connection attempt (TCP, HELLO 3, tracking on) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A heartbeat unanswered this long means the connection is lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait before reconnecting after Redis refused or dropped the connection: short, because a
/// stale copy may be served until a new connection is up (or Redis answers a read).
const RETRY_UNREACHABLE: Duration = Duration::from_millis(25);
/// A connection up at least this long is retried at once when cut.
const RECONNECT_AT_ONCE_AFTER: Duration = Duration::from_secs(1);
/// Wait before reconnecting after Redis answered but refused tracking (an old Redis, a
/// missing permission): that needs an operator, not a fast retry.
const RETRY_REFUSED: Duration = Duration::from_secs(5);

/// Why a tracking connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
enum TrackingError {
    /// Redis could not be reached (or stopped answering).
    #[error("Redis unreachable: {0}")]
    Unreachable(String),
    /// Redis answered but refused a command of the setup.
    #[error("Redis refused client tracking: {0} (it needs Redis ≥ 6 with RESP3)")]
    Refused(String),
}

/// Where and what to track.
#[derive(Clone, Debug)]
pub struct TrackingTarget {
    info: ConnectionInfo,
    /// The prefix of entry keys: `<store prefix>e:`.
    entry_prefix: String,
}

impl TrackingTarget {
    /// The Redis at `url` (TCP or a Unix socket), tracking keys that start with `entry_prefix`.
    pub fn new(url: &str, entry_prefix: String) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|error| format!("bad Redis URL {url:?}: {error}"))?;
        if !matches!(
            info.addr(),
            ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_)
        ) {
            return Err(format!(
                "its invalidation connection supports redis:// and redis+unix://, not {url:?}"
            ));
        }
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Self {
            info: info.set_redis_settings(resp3),
            entry_prefix,
        })
    }
}

/// Keeps a tracking connection up for `cache` until `stop`, reconnecting whenever it is lost.
pub async fn run(target: TrackingTarget, cache: Arc<EntryCache>, stop: CancellationToken) {
    let mut reported_down = false;
    while !stop.is_cancelled() {
        let attempt = Instant::now();
        let outcome = tokio::select! {
            () = stop.cancelled() => break,
            outcome = track(&target, &cache) => outcome,
        };
        let was_up = cache.tracking_up();
        let lasted = was_up && attempt.elapsed() >= RECONNECT_AT_ONCE_AFTER;
        cache.tracking_lost();
        // One WARN per outage: a connection cut right after setup, again and again, is one.
        if lasted {
            reported_down = false;
        }
        if !reported_down {
            tracing::warn!(
                error = %outcome,
                "the Redis read cache serves nothing fresh until its invalidation connection is back"
            );
            reported_down = true;
        }
        // A connection that was up for a while and got cut is retried at once (a killed
        // connection, a Redis restart); a failed attempt, or one cut right after setup, waits.
        let retry = match outcome {
            _ if lasted => continue,
            TrackingError::Unreachable(_) => RETRY_UNREACHABLE,
            TrackingError::Refused(_) => RETRY_REFUSED,
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(retry) => {}
        }
    }
    cache.tracking_lost();
}

/// One connection's life: set up, then heartbeats until it fails. Returns why it ended.
async fn track(target: &TrackingTarget, cache: &Arc<EntryCache>) -> TrackingError {
    let (mut connection, driver) =
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(target, cache)).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return error,
            Err(_) => {
                return TrackingError::Unreachable(format!(
                    "no tracking connection within {CONNECT_TIMEOUT:?}"
                ));
            }
        };
    let mut driver = driver;
    let setup = async {
        let mut name = redis::cmd("CLIENT");
        name.arg("SETNAME").arg(CONNECTION_NAME);
        command(&mut connection, name).await?;
        let mut tracking = redis::cmd("CLIENT");
        tracking
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&target.entry_prefix);
        command(&mut connection, tracking).await?;
        let sent = Instant::now();
        ping(&mut connection).await?;
        Ok::<_, TrackingError>(sent)
    };
    let sent = tokio::select! {
        () = &mut driver => return TrackingError::Unreachable("the connection closed during setup".into()),
        setup = tokio::time::timeout(CONNECT_TIMEOUT, setup) => match setup {
            Ok(Ok(sent)) => sent,
            Ok(Err(error)) => return error,
            Err(_) => return TrackingError::Unreachable(format!("no tracking set up within {CONNECT_TIMEOUT:?}")),
        },
    };
    cache.tracking_started(sent);
    tracing::info!(prefix = %target.entry_prefix, "the Redis read cache is coherent again (tracking on)");
    let heartbeat_every = cache.config().heartbeat_every;
    let heartbeats = async {
        let mut ticks = tokio::time::interval(heartbeat_every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let sent = Instant::now();
            match tokio::time::timeout(HEARTBEAT_TIMEOUT, ping(&mut connection)).await {
                Ok(Ok(())) => cache.confirmed(sent),
                Ok(Err(error)) => return error,
                Err(_) => {
                    return TrackingError::Unreachable(format!(
                        "a heartbeat went unanswered for {HEARTBEAT_TIMEOUT:?}"
                    ));
                }
            }
        }
    };
    tokio::select! {
        () = &mut driver => TrackingError::Unreachable("the connection closed".into()),
        error = heartbeats => error,
    }
}

/// What reads and writes a connection's socket: polled by the task that owns it.
type Driver = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A RESP3 connection whose pushes go to `cache`, and its driver (to poll).
async fn connect(
    target: &TrackingTarget,
    cache: &Arc<EntryCache>,
) -> Result<(MultiplexedConnection, Driver), TrackingError> {
    let unreachable = |error: std::io::Error| TrackingError::Unreachable(error.to_string());
    let pushes = {
        let cache = cache.clone();
        let prefix = target.entry_prefix.clone();
        move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            handle_push(&cache, &prefix, push);
            Ok(())
        }
    };
    let config = AsyncConnectionConfig::new().set_push_sender(pushes);
    let settings = target.info.redis_settings();
    let connected = match target.info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(unreachable)?;
            stream.set_nodelay(true).map_err(unreachable)?;
            MultiplexedConnection::new_with_config(settings, stream, config)
                .await
                .map(|(connection, driver)| (connection, Box::pin(driver) as Driver))
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(unreachable)?;
            MultiplexedConnection::new_with_config(settings, stream, config)
                .await
                .map(|(connection, driver)| (connection, Box::pin(driver) as Driver))
        }
        other => {
            return Err(TrackingError::Refused(format!(
                "unsupported Redis address {other}"
            )));
        }
    };
    connected.map_err(setup_failed)
}

async fn command(
    connection: &mut MultiplexedConnection,
    command: redis::Cmd,
) -> Result<(), TrackingError> {
    command
        .query_async::<Value>(connection)
        .await
        .map(|_| ())
        .map_err(setup_failed)
}

async fn ping(connection: &mut MultiplexedConnection) -> Result<(), TrackingError> {
    redis::cmd("PING")
        .query_async::<String>(connection)
        .await
        .map(|_| ())
        .map_err(setup_failed)
}

/// An error from Redis itself means it refused; anything else (or a Redis still loading its
/// data) that it is unreachable for now.
fn setup_failed(error: redis::RedisError) -> TrackingError {
    let loading = matches!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
    );
    if loading || error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
        TrackingError::Unreachable(error.to_string())
    } else {
        TrackingError::Refused(error.to_string())
    }
}

/// Applies one push from Redis: invalidated keys leave the cache; a null (FLUSHDB) or a key
/// that does not parse empties it.
fn handle_push(cache: &EntryCache, entry_prefix: &str, push: PushInfo) {
    if push.kind != PushKind::Invalidate {
        return;
    }
    match push.data.first() {
        Some(Value::Array(keys)) => {
            for key in keys {
                match entry_key(entry_prefix, key) {
                    Some(key) => cache.invalidate(&key),
                    None => {
                        cache.invalidate_all();
                        return;
                    }
                }
            }
        }
        _ => cache.invalidate_all(),
    }
}

/// The public key in an invalidated Redis key `<prefix><64 hex>`.
fn entry_key(entry_prefix: &str, key: &Value) -> Option<KeyBytes> {
    let Value::BulkString(bytes) = key else {
        return None;
    };
    let hex_key = bytes.strip_prefix(entry_prefix.as_bytes())?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidated_keys_parse_back_to_public_keys() {
        let key = [7u8; 32];
        let redis_key = format!("p:e:{}", hex::encode(key)).into_bytes();
        assert_eq!(entry_key("p:e:", &Value::BulkString(redis_key)), Some(key));
        assert_eq!(
            entry_key("p:e:", &Value::BulkString(b"p:e:zz".to_vec())),
            None
        );
        assert_eq!(
            entry_key("p:e:", &Value::BulkString(b"q:e:00".to_vec())),
            None
        );
        assert_eq!(entry_key("p:e:", &Value::Nil), None);
    }
}
