//! The `skywire.discovery.v1.Discovery` service: thin handlers — decode, validate, store.

use std::sync::Arc;
use std::time::Duration;

use crate::status::{missing, not_found, rejected_status};
use dmsg::entry::{Entry, Rejected, pk_from_proto, pk_to_proto, unix_nanos_now, validate_delete};
use dmsg::hexfield::{pk_bytes_from_proto, pk_from_bytes};
use dmsg::identity::PublicKey;
use prost::Message;
use rand::Rng;
use skywire_proto::skywire::discovery::v1::discovery_server::Discovery;
use skywire_proto::skywire::discovery::v1::{self as pb};
use tonic::{Request, Response, Status};

use crate::guard::{EntryRead, GuardedStore};
use crate::store::{Deleted, ttl_for};

/// Most servers `AvailableServers` returns.
pub const MAX_AVAILABLE: usize = 512;
/// Largest `ListClients` page.
pub const MAX_PAGE: usize = 1000;

/// Reports the dmsg servers this discovery is connected to (for `Status`).
pub type ConnectedServers = Arc<dyn Fn() -> Vec<PublicKey> + Send + Sync>;

/// TTLs of stored entries.
#[derive(Clone, Copy, Debug)]
pub struct Ttls {
    /// Entries with a server part.
    pub server: Duration,
    /// Client-only entries (and transports).
    pub client: Duration,
}

impl Default for Ttls {
    /// 2 minutes for servers, 60 for clients.
    fn default() -> Self {
        Self {
            server: Duration::from_secs(120),
            client: Duration::from_secs(3600),
        }
    }
}

/// The Discovery service.
#[derive(Clone)]
pub struct DiscoveryService {
    store: GuardedStore,
    ttls: Ttls,
    own_pk: PublicKey,
    connected: ConnectedServers,
}

impl DiscoveryService {
    /// A service over `store`.
    pub fn new(
        store: GuardedStore,
        ttls: Ttls,
        own_pk: PublicKey,
        connected: ConnectedServers,
    ) -> Self {
        Self {
            store,
            ttls,
            own_pk,
            connected,
        }
    }
}

/// Response metadata of a `GetEntry` answered from a stale copy (the store was unreachable):
/// `true`.
pub const STALE_METADATA: &str = "skywire-entry-stale";
/// With [`STALE_METADATA`]: how long ago the copy was read from the store, in milliseconds.
pub const STALE_AGE_METADATA: &str = "skywire-entry-age-ms";

/// A stale copy as a `GetEntry` answer, marked in its metadata.
fn stale_response(stale: crate::store::StaleCopy) -> Response<pb::Entry> {
    let mut response = Response::new(stale.entry);
    let metadata = response.metadata_mut();
    metadata.insert(
        STALE_METADATA,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    metadata.insert(
        STALE_AGE_METADATA,
        tonic::metadata::MetadataValue::from(
            u64::try_from(stale.age.as_millis()).unwrap_or(u64::MAX),
        ),
    );
    response
}

/// Orders servers randomly, weighted by free sessions (Efraimidis–Spirakis: key `u^(1/w)`,
/// largest first), and keeps at most `limit`.
pub fn weighted_order(mut servers: Vec<Entry>, limit: usize, rng: &mut impl Rng) -> Vec<Entry> {
    servers.retain(|entry| {
        entry
            .server
            .as_ref()
            .is_some_and(|s| s.available_sessions > 0)
    });
    let mut keyed: Vec<(f64, Entry)> = servers
        .into_iter()
        .map(|entry| {
            let weight = entry.server.as_ref().map_or(1, |s| s.available_sessions) as f64;
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / weight), entry)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed
        .into_iter()
        .take(limit)
        .map(|(_, entry)| entry)
        .collect()
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        const FIELD: &str = "GetEntryRequest.pk";
        let key = pk_bytes_from_proto(&request.get_ref().pk, FIELD).map_err(|e| e.status())?;
        // Only checked keys are stored: the key is checked only when nothing is found, so a
        // bad key still gets INVALID_ARGUMENT, whatever the store said.
        let read = self.store.get_entry(&key).await;
        if let Ok(Some(read)) = read {
            return Ok(match read {
                EntryRead::Current(entry) => Response::new(entry),
                EntryRead::Stale(stale) => stale_response(stale),
            });
        }
        let pk = pk_from_bytes(key, FIELD).map_err(|error| error.status())?;
        match read {
            Err(status) => Err(status),
            _ => Err(not_found(format_args!("entry for {pk}"))),
        }
    }

    async fn put_entry(
        &self,
        request: Request<pb::PutEntryRequest>,
    ) -> Result<Response<pb::PutEntryResponse>, Status> {
        let proto = request
            .into_inner()
            .entry
            .ok_or_else(|| missing("PutEntryRequest", "entry"))?;
        let entry = Entry::from_proto(&proto).map_err(|error| rejected_status(&error))?;
        entry
            .validate(proto.encoded_len(), unix_nanos_now())
            .map_err(|error| rejected_status(&error))?;
        let ttl = ttl_for(&entry, self.ttls.server, self.ttls.client);
        let written = self
            .store
            .call("put", |store| store.put(&entry, ttl))
            .await?;
        match written {
            Ok(written) => {
                tracing::debug!(
                    pk = %entry.owner,
                    sequence = entry.sequence,
                    server = entry.server.is_some(),
                    created = written == crate::store::Written::Created,
                    "entry stored"
                );
                Ok(Response::new(pb::PutEntryResponse {
                    created: written == crate::store::Written::Created,
                }))
            }
            Err(rejected) => {
                tracing::debug!(pk = %entry.owner, %rejected, "entry refused");
                Err(rejected_status(&rejected))
            }
        }
    }

    async fn delete_entry(
        &self,
        request: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let request = request.into_inner();
        let pk =
            pk_from_proto(&request.pk, "DeleteEntryRequest.pk").map_err(|error| error.status())?;
        validate_delete(
            &pk,
            request.timestamp_unix_nanos,
            &request.signature,
            None,
            unix_nanos_now(),
        )
        .map_err(|error| rejected_status(&error))?;
        let tombstone_ttl = self.ttls.client;
        match self
            .store
            .call("delete", |store| {
                store.delete(&pk, request.timestamp_unix_nanos, tombstone_ttl)
            })
            .await?
        {
            Deleted::Deleted => Ok(Response::new(pb::DeleteEntryResponse {})),
            Deleted::NotFound => Err(not_found(format_args!("entry for {pk}"))),
            Deleted::Newer { stored_timestamp } => Err(rejected_status(&Rejected::StaleDelete {
                timestamp: request.timestamp_unix_nanos,
                stored_timestamp,
            })),
        }
    }

    async fn available_servers(
        &self,
        request: Request<pb::AvailableServersRequest>,
    ) -> Result<Response<pb::ServerList>, Status> {
        let limit = match request.get_ref().limit {
            0 => MAX_AVAILABLE,
            n => (n as usize).min(MAX_AVAILABLE),
        };
        let servers = self.store.call("servers", |store| store.servers()).await?;
        let ordered = weighted_order(servers, limit, &mut rand::rng());
        Ok(Response::new(pb::ServerList {
            entries: ordered.iter().map(Entry::to_proto).collect(),
        }))
    }

    async fn all_servers(
        &self,
        _: Request<pb::AllServersRequest>,
    ) -> Result<Response<pb::ServerList>, Status> {
        let servers = self.store.call("servers", |store| store.servers()).await?;
        Ok(Response::new(pb::ServerList {
            entries: servers.iter().map(Entry::to_proto).collect(),
        }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let request = request.into_inner();
        let count = match request.page_size {
            0 => 100,
            n => (n as usize).min(MAX_PAGE),
        };
        let page = self
            .store
            .call("clients", |store| store.clients(&request.page_token, count))
            .await?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: page.clients.iter().map(pk_to_proto).collect(),
            next_page_token: page.next,
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let health = self.store.health().await;
        Ok(Response::new(pb::StatusResponse {
            store: self.store.store().kind().to_owned(),
            store_healthy: health.is_ok(),
            store_error: health.err().unwrap_or_default(),
            dmsg_servers: (self.connected)().iter().map(pk_to_proto).collect(),
            pk: pk_to_proto(&self.own_pk),
        }))
    }
}

#[cfg(test)]
mod tests {
    use dmsg::entry::ServerPart;
    use dmsg::identity::Keypair;
    use rand::SeedableRng;

    use super::*;

    fn server(sessions: i64) -> Entry {
        let keypair = Keypair::generate();
        Entry::server(
            keypair.public(),
            1,
            ServerPart {
                address: "h:1".into(),
                available_sessions: sessions,
                server_type: String::new(),
                max_sessions: 2048,
            },
        )
    }

    /// Full servers are left out; the order favours free capacity but stays random.
    #[test]
    fn available_servers_are_weighted_by_free_sessions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let big = server(1000);
        let small = server(1);
        let full = server(0);
        let mut big_first = 0;
        for _ in 0..1000 {
            let order = weighted_order(
                vec![small.clone(), big.clone(), full.clone()],
                512,
                &mut rng,
            );
            assert_eq!(order.len(), 2, "the full server is left out");
            if order[0] == big {
                big_first += 1;
            }
        }
        assert!(
            big_first > 950,
            "the big server comes first almost always: {big_first}"
        );
        assert!(big_first < 1000, "but not always: {big_first}");
        let many: Vec<Entry> = (0..600).map(|_| server(5)).collect();
        assert_eq!(weighted_order(many, 512, &mut rng).len(), 512);
    }
}
