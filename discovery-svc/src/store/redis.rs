//! The Redis store (bb8 pool): for several discovery replicas sharing one Redis.
//!
//! Each write is a Lua script, so the sequence check and the write are one atomic step on the
//! server: two replicas can never both accept the same sequence. Sequences and timestamps are
//! stored as 20-digit strings (Lua numbers are doubles and would lose precision above 2⁵³;
//! fixed-width digit strings compare correctly as strings). Every operation is bounded by
//! [`OP_TIMEOUT`], so a dead Redis yields `Unavailable` quickly instead of a hang.
//!
//! Keys (under a prefix, default `skywire:disc:`): `e:<pk>` hash {s, t, v} per entry with a
//! TTL; sets `servers` and `clients` of owner keys; `t:<id>` hash {t, v, a, b} per transport
//! with a TTL; set `edge:<pk>` of transport ids. A delete turns the hash into a tombstone:
//! `v` goes, `d = 1` comes, the TTL becomes the tombstone's; reads look only at `v`. Index sets are pruned of expired members
//! when read. The scripts touch keys they compute, which a single Redis allows; a Redis
//! Cluster deployment would need hash tags.
//!
//! Reads of entries go through a cache that Redis keeps coherent ([`super::cache`],
//! [`super::tracking`]): a copy is served only while this replica's invalidation connection
//! is up and has confirmed a heartbeat within the staleness bound, and a write through this
//! replica drops its own copy before it returns.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use bb8_redis::bb8::{ManageConnection, Pool, PooledConnection};
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{self, Script};
use dmsg::entry::{Entry, Rejected, TransportEntry};
use dmsg::identity::PublicKey;
use observability::MetricsRegistry;
use prost::Message;
use skywire_proto::skywire::discovery::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::cache::{CacheConfig, EntryCache, StaleCopy};
use super::tracking::{self, TrackingTarget};
use super::{
    ClientPage, Deleted, EntryCounts, KeyBytes, Store, StoreError, Written, bad_page_token,
};

/// Longest any Redis operation may take (pool checkout included).
pub const OP_TIMEOUT: Duration = Duration::from_millis(800);
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "skywire:disc:";

const PUT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 's', 't', 'd')
local created = '1'
if cur[1] then
  if cur[3] ~= '1' then created = '0' end
  if ARGV[1] <= cur[1] then return {'1', cur[1], cur[2]} end
  if ARGV[2] < cur[2] then return {'2', cur[1], cur[2]} end
end
redis.call('HDEL', KEYS[1], 'd')
redis.call('HSET', KEYS[1], 's', ARGV[1], 't', ARGV[2], 'v', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[5] == '1' then redis.call('SADD', KEYS[2], ARGV[7]) else redis.call('SREM', KEYS[2], ARGV[7]) end
if ARGV[6] == '1' then redis.call('SADD', KEYS[3], ARGV[7]) else redis.call('SREM', KEYS[3], ARGV[7]) end
return {'0', created}
";

/// Leaves a tombstone: the hash keeps `s` and `t`, loses `v`, gains `d = 1`.
const DELETE: &str = r"
local cur = redis.call('HMGET', KEYS[1], 't', 'd')
if not cur[1] or cur[2] == '1' then return {'0'} end
if ARGV[1] < cur[1] then return {'2', cur[1]} end
redis.call('HDEL', KEYS[1], 'v')
redis.call('HSET', KEYS[1], 'd', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
return {'1'}
";

/// The values of the hashes named by a set's members (prefix ‖ member), pruning members
/// whose hash expired.
const MEMBER_VALUES: &str = r"
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HGET', ARGV[1] .. m, 'v')
  if v then table.insert(out, v) else redis.call('SREM', KEYS[1], m) end
end
return out
";

const CLIENTS: &str = r"
local r = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local live = {}
for _, pk in ipairs(r[2]) do
  if redis.call('HEXISTS', ARGV[3] .. pk, 'v') == 1 then table.insert(live, pk) else redis.call('SREM', KEYS[1], pk) end
end
return {r[1], live}
";

/// A tombstone (`d = 1`) refuses a registration not newer than it; a live registration one
/// older than it.
const PUT_TRANSPORT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 't', 'd')
if cur[1] then
  if cur[2] == '1' then
    if ARGV[1] <= cur[1] then return {'0', cur[1]} end
  elseif ARGV[1] < cur[1] then return {'0', cur[1]} end
end
redis.call('HDEL', KEYS[1], 'd')
redis.call('HSET', KEYS[1], 't', ARGV[1], 'v', ARGV[2], 'a', ARGV[5], 'b', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[4])
return {'1'}
";

/// Leaves a tombstone holding the later of the registration's and the deregistration's
/// timestamps.
const DELETE_TRANSPORT: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'a', 'b', 't', 'd')
if not cur[1] or cur[4] == '1' then return {'0'} end
if ARGV[3] < cur[3] then return {'2', cur[3]} end
local t = cur[3]
if ARGV[3] > t then t = ARGV[3] end
redis.call('HDEL', KEYS[1], 'v')
redis.call('HSET', KEYS[1], 't', t, 'd', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SREM', ARGV[1] .. cur[1], ARGV[2])
redis.call('SREM', ARGV[1] .. cur[2], ARGV[2])
return {'1'}
";

/// A sequence as a 20-digit string.
fn seq_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

/// A timestamp as a 20-digit string that orders like the number (shifted to be unsigned).
fn ts_key(timestamp: i64) -> String {
    format!(
        "{:020}",
        (i128::from(timestamp) - i128::from(i64::MIN)) as u128
    )
}

fn ts_from_key(key: &str) -> i64 {
    key.parse::<i128>()
        .map(|shifted| (shifted + i128::from(i64::MIN)) as i64)
        .unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A pooled connection that remembers whether it may be broken.
pub struct TrackedConnection {
    connection: MultiplexedConnection,
    /// Set before every command and cleared only when it succeeds: a connection whose command
    /// failed or was cancelled (timed out) is discarded instead of handed out again.
    suspect: bool,
}

/// bb8-redis's manager, plus discarding suspect connections. (bb8-redis never reports a
/// multiplexed connection broken, so after a Redis restart a pool would keep handing out dead
/// connections; checking each with a PING on checkout would double every round trip.)
pub struct TrackingManager(RedisConnectionManager);

impl ManageConnection for TrackingManager {
    type Connection = TrackedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(TrackedConnection {
            connection: self.0.connect().await?,
            suspect: false,
        })
    }

    async fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        self.0.is_valid(&mut connection.connection).await
    }

    fn has_broken(&self, connection: &mut Self::Connection) -> bool {
        connection.suspect
    }
}

/// Entries and transports in Redis, entries read through a cache Redis keeps coherent.
/// Dropping the store stops its invalidation connection; [`Store::close`] also waits for it.
pub struct RedisStore {
    pool: Pool<TrackingManager>,
    prefix: String,
    cache: Arc<EntryCache>,
    /// The invalidation connection's task (none with the cache off).
    tasks: Mutex<JoinSet<()>>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    put: Script,
    delete: Script,
    member_values: Script,
    clients: Script,
    put_transport: Script,
    delete_transport: Script,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port[/db]`) with a read cache sized by
    /// `cache`. Connects lazily: a Redis that is down at start only makes operations fail
    /// until it is up. Starts the cache's invalidation connection, so it must be called
    /// inside a tokio runtime.
    pub fn new(url: &str, prefix: &str, cache: CacheConfig) -> Result<Self, StoreError> {
        let bad_url = |error: redis::RedisError| {
            StoreError::Unavailable(format!("bad Redis URL {url:?}: {error}"))
        };
        // Small requests, each awaited: nothing is gained by letting Nagle's algorithm hold
        // one back (redis-rs leaves it on by default).
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(bad_url)?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let manager = RedisConnectionManager::new(info.set_tcp_settings(tcp)).map_err(bad_url)?;
        // No PING on every checkout (it would double every round trip): a connection whose
        // command fails or times out is marked and dropped instead (`TrackingManager`).
        let pool = Pool::builder()
            .max_size(32)
            .test_on_check_out(false)
            .connection_timeout(Duration::from_millis(500))
            .build_unchecked(TrackingManager(manager));
        let target = match TrackingTarget::new(url, format!("{prefix}e:")) {
            Ok(target) => Some(target).filter(|_| cache.enabled()),
            Err(why) if cache.enabled() => {
                tracing::warn!(%why, "the Redis read cache is off");
                None
            }
            Err(_) => None,
        };
        let cache = if target.is_some() {
            cache
        } else {
            CacheConfig::disabled()
        };
        let entry_cache = Arc::new(
            EntryCache::new(cache, Instant::now())
                .map_err(|error| StoreError::Unavailable(format!("cache metrics: {error}")))?,
        );
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(target) = target {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                StoreError::Unavailable(
                    "the Redis store must be opened inside a tokio runtime".into(),
                )
            })?;
            tasks.spawn_on(
                tracking::run(target, entry_cache.clone(), stop.clone()),
                &runtime,
            );
        }
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            cache: entry_cache,
            tasks: Mutex::new(tasks),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            put: Script::new(PUT),
            delete: Script::new(DELETE),
            member_values: Script::new(MEMBER_VALUES),
            clients: Script::new(CLIENTS),
            put_transport: Script::new(PUT_TRANSPORT),
            delete_transport: Script::new(DELETE_TRANSPORT),
        })
    }

    fn entry_key(&self, key: &KeyBytes) -> String {
        format!("{}e:{}", self.prefix, hex::encode(key))
    }

    fn set_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn transport_key(&self, id: &[u8; 16]) -> String {
        format!("{}t:{}", self.prefix, hex::encode(id))
    }

    fn edge_key(&self, pk: &PublicKey) -> String {
        format!("{}edge:{pk}", self.prefix)
    }

    /// A pooled connection, marked suspect until its command succeeds.
    async fn connection(&self) -> Result<PooledConnection<'_, TrackingManager>, StoreError> {
        let mut connection =
            self.pool.get().await.map_err(|error| {
                StoreError::Unavailable(format!("no Redis connection: {error}"))
            })?;
        connection.suspect = true;
        Ok(connection)
    }

    /// Runs `request` within [`OP_TIMEOUT`] (pool checkout included).
    async fn execute<T: redis::FromRedisValue>(
        &self,
        request: impl RedisRequest,
    ) -> Result<T, StoreError> {
        let reply = bounded(async {
            let mut connection = self.connection().await?;
            let reply = request
                .send::<T>(&mut connection.connection)
                .await
                .map_err(command_failed)?;
            connection.suspect = false;
            Ok(reply)
        })
        .await?;
        self.cache.redis_answered();
        Ok(reply)
    }

    /// The `v` field of one hash.
    async fn value(&self, key: String) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("HGET");
        command.arg(key).arg("v");
        self.execute(command).await
    }

    fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
        let proto =
            pb::Entry::decode(bytes).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        Entry::from_proto(&proto).map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    fn decode_transport(bytes: &[u8]) -> Result<TransportEntry, StoreError> {
        let proto = pb::TransportEntry::decode(bytes)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        TransportEntry::from_proto(&proto).map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    async fn values_of_set(
        &self,
        set: String,
        member_prefix: String,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.execute(self.member_values.key(set).arg(member_prefix))
            .await
    }
}

#[tonic::async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, pk: &PublicKey) -> Result<Option<Entry>, StoreError> {
        let value = self.value(self.entry_key(pk.as_bytes())).await?;
        value.map(|bytes| Self::decode_entry(&bytes)).transpose()
    }

    /// Reads Redis (never the cache: see [`Store::cached_entry`]) and keeps a copy when
    /// nothing invalidated it meanwhile.
    async fn get_proto(&self, key_bytes: &KeyBytes) -> Result<Option<pb::Entry>, StoreError> {
        let ticket = self.cache.ticket(key_bytes);
        // The TTL counts from before the read, so a copy never outlives the entry.
        let issued = Instant::now();
        let key = self.entry_key(key_bytes);
        // One transaction: the value and the TTL of the same version.
        let mut read = redis::pipe();
        read.atomic()
            .cmd("HGET")
            .arg(&key)
            .arg("v")
            .cmd("PTTL")
            .arg(&key);
        let (value, ttl_ms): (Option<Vec<u8>>, i64) = self.execute(&read).await?;
        let Some(bytes) = value else {
            return Ok(None);
        };
        let entry = pb::Entry::decode(bytes.as_slice())
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        if let (Some(ticket), Ok(ttl_ms @ 1..)) = (ticket, u64::try_from(ttl_ms)) {
            self.cache.fill(
                ticket,
                key_bytes,
                &entry,
                Duration::from_millis(ttl_ms),
                issued,
            );
        }
        Ok(Some(entry))
    }

    fn cached_entry(&self, key: &KeyBytes) -> Option<pb::Entry> {
        self.cache.fresh(key, Instant::now())
    }

    fn last_known_entry(&self, key: &KeyBytes) -> Option<StaleCopy> {
        self.cache.last_known(key, Instant::now())
    }

    fn register_metrics(&self, metrics: &MetricsRegistry) -> Result<(), prometheus::Error> {
        for collector in self.cache.metrics().collectors() {
            metrics.registry().register(collector)?;
        }
        Ok(())
    }

    async fn close(&self) {
        self.stop.cancel();
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        while tasks.join_next().await.is_some() {}
    }

    async fn put(
        &self,
        entry: &Entry,
        ttl: Duration,
    ) -> Result<Result<Written, Rejected>, StoreError> {
        let pk = entry.owner.to_string();
        let reply: Vec<String> = self
            .execute(
                self.put
                    .key(self.entry_key(entry.owner.as_bytes()))
                    .key(self.set_key("servers"))
                    .key(self.set_key("clients"))
                    .arg(seq_key(entry.sequence))
                    .arg(ts_key(entry.timestamp))
                    .arg(entry.to_proto().encode_to_vec())
                    .arg(ttl_ms(ttl))
                    .arg(if entry.server.is_some() { "1" } else { "0" })
                    .arg(if entry.client.is_some() { "1" } else { "0" })
                    .arg(pk),
            )
            .await?;
        let field = |i: usize| reply.get(i).map(String::as_str).unwrap_or_default();
        if field(0) == "0" {
            // Read-your-writes on this replica: the invalidation Redis sends may come later.
            self.cache.invalidate(entry.owner.as_bytes());
        }
        let stored = || (field(1).parse::<u64>().unwrap_or(0), ts_from_key(field(2)));
        match field(0) {
            "0" => Ok(Ok(if field(1) == "1" {
                Written::Created
            } else {
                Written::Updated
            })),
            "1" => {
                let (stored_sequence, stored_timestamp) = stored();
                Ok(Err(Rejected::StaleSequence {
                    sequence: entry.sequence,
                    stored_sequence,
                    stored_timestamp,
                }))
            }
            "2" => {
                let (stored_sequence, stored_timestamp) = stored();
                Ok(Err(Rejected::TimestampBackwards {
                    timestamp: entry.timestamp,
                    stored_sequence,
                    stored_timestamp,
                }))
            }
            other => Err(StoreError::Corrupt(format!(
                "unexpected put reply {other:?}"
            ))),
        }
    }

    async fn delete(
        &self,
        pk: &PublicKey,
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        let reply: Vec<String> = self
            .execute(
                self.delete
                    .key(self.entry_key(pk.as_bytes()))
                    .key(self.set_key("servers"))
                    .key(self.set_key("clients"))
                    .arg(ts_key(timestamp))
                    .arg(pk.to_string())
                    .arg(ttl_ms(tombstone_ttl)),
            )
            .await?;
        let deleted = deleted_of(&reply);
        if deleted == Deleted::Deleted {
            self.cache.invalidate(pk.as_bytes());
        }
        Ok(deleted)
    }

    async fn servers(&self) -> Result<Vec<Entry>, StoreError> {
        let values = self
            .values_of_set(self.set_key("servers"), format!("{}e:", self.prefix))
            .await?;
        values
            .iter()
            .map(|bytes| Self::decode_entry(bytes))
            .collect()
    }

    async fn clients(&self, token: &str, count: usize) -> Result<ClientPage, StoreError> {
        // Checked before Redis sees it: a cursor Redis cannot parse fails the script, and
        // that must not look like a store fault (it would trip the breaker for everyone).
        let cursor = if token.is_empty() {
            0
        } else {
            token.parse::<u64>().map_err(|_| bad_page_token(token))?
        };
        let (next, members): (String, Vec<String>) = self
            .execute(
                self.clients
                    .key(self.set_key("clients"))
                    .arg(cursor.to_string())
                    .arg(count.max(1))
                    .arg(format!("{}e:", self.prefix)),
            )
            .await?;
        let clients = members
            .iter()
            .map(|pk| {
                pk.parse()
                    .map_err(|_| StoreError::Corrupt(format!("bad key {pk:?} in the client set")))
            })
            .collect::<Result<_, _>>()?;
        Ok(ClientPage {
            clients,
            next: if next == "0" { String::new() } else { next },
        })
    }

    async fn counts(&self) -> Result<EntryCounts, StoreError> {
        let mut servers = redis::cmd("SCARD");
        servers.arg(self.set_key("servers"));
        let mut clients = redis::cmd("SCARD");
        clients.arg(self.set_key("clients"));
        Ok(EntryCounts {
            servers: self.execute(servers).await?,
            clients: self.execute(clients).await?,
        })
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.execute::<String>(redis::cmd("PING")).await.map(|_| ())
    }

    async fn put_transport(
        &self,
        transport: &TransportEntry,
        ttl: Duration,
    ) -> Result<Result<(), Rejected>, StoreError> {
        let reply: Vec<String> = self
            .execute(
                self.put_transport
                    .key(self.transport_key(&transport.id))
                    .key(self.edge_key(&transport.edge_a))
                    .key(self.edge_key(&transport.edge_b))
                    .arg(ts_key(transport.timestamp))
                    .arg(transport.to_proto().encode_to_vec())
                    .arg(ttl_ms(ttl))
                    .arg(hex::encode(transport.id))
                    .arg(transport.edge_a.to_string())
                    .arg(transport.edge_b.to_string()),
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("1") => Ok(Ok(())),
            Some("0") => Ok(Err(Rejected::StaleRegistration {
                timestamp: transport.timestamp,
                stored_timestamp: ts_from_key(reply.get(1).map_or("", String::as_str)),
            })),
            other => Err(StoreError::Corrupt(format!(
                "unexpected transport put reply {other:?}"
            ))),
        }
    }

    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, StoreError> {
        let value = self.value(self.transport_key(id)).await?;
        value
            .map(|bytes| Self::decode_transport(&bytes))
            .transpose()
    }

    async fn transports_by_edge(
        &self,
        edge: &PublicKey,
    ) -> Result<Vec<TransportEntry>, StoreError> {
        let values = self
            .values_of_set(self.edge_key(edge), format!("{}t:", self.prefix))
            .await?;
        values
            .iter()
            .map(|bytes| Self::decode_transport(bytes))
            .collect()
    }

    async fn delete_transport(
        &self,
        id: &[u8; 16],
        timestamp: i64,
        tombstone_ttl: Duration,
    ) -> Result<Deleted, StoreError> {
        let reply: Vec<String> = self
            .execute(
                self.delete_transport
                    .key(self.transport_key(id))
                    .arg(format!("{}edge:", self.prefix))
                    .arg(hex::encode(id))
                    .arg(ts_key(timestamp))
                    .arg(ttl_ms(tombstone_ttl)),
            )
            .await?;
        Ok(deleted_of(&reply))
    }
}

/// What runs on one pooled connection: a command, a pipeline or a script invocation.
trait RedisRequest {
    /// Sends it and reads the reply.
    async fn send<T: redis::FromRedisValue>(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<T>;
}

impl RedisRequest for redis::Cmd {
    async fn send<T: redis::FromRedisValue>(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<T> {
        self.query_async(connection).await
    }
}

impl RedisRequest for &redis::Pipeline {
    async fn send<T: redis::FromRedisValue>(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<T> {
        self.query_async(connection).await
    }
}

impl RedisRequest for &mut redis::ScriptInvocation<'_> {
    async fn send<T: redis::FromRedisValue>(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<T> {
        self.invoke_async(connection).await
    }
}

/// How a delete script ended: `{'1'}`, `{'0'}` (nothing live) or `{'2', stored timestamp}`.
fn deleted_of(reply: &[String]) -> Deleted {
    match reply.first().map(String::as_str) {
        Some("1") => Deleted::Deleted,
        Some("2") => Deleted::Newer {
            stored_timestamp: ts_from_key(reply.get(1).map_or("", String::as_str)),
        },
        _ => Deleted::NotFound,
    }
}

/// Bounds `work` by [`OP_TIMEOUT`]: a dead or stalled Redis yields `Unavailable` quickly.
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OP_TIMEOUT, work).await.map_err(|_| {
        StoreError::Unavailable(format!("Redis did not answer within {OP_TIMEOUT:?}"))
    })?
}

fn command_failed(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis command failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_encode_to_strings_that_order_like_the_numbers() {
        let samples = [i64::MIN, -5, 0, 1, 1_700_000_000_000_000_000, i64::MAX];
        for pair in samples.windows(2) {
            assert!(ts_key(pair[0]) < ts_key(pair[1]), "{pair:?}");
            assert_eq!(ts_key(pair[0]).len(), 20);
        }
        for t in samples {
            assert_eq!(ts_from_key(&ts_key(t)), t);
        }
        assert!(seq_key(9) < seq_key(10));
        assert!(seq_key(u64::MAX - 1) < seq_key(u64::MAX));
    }
}
