//! Talking to dmsg-discovery: [`Discovery`], what a dmsg node needs from it, and
//! [`DiscoveryClient`], its gRPC implementation over any tonic transport (TCP here; a dmsg
//! stream through `dmsg::grpc`), always through the standard client stack (timeout, circuit
//! breaker).
//!
//! [`publish`] is the update loop: on a stale sequence it resyncs to the
//! stored sequence + 1 and retries; if the stored entry is newer by timestamp it adopts the
//! stored sequence and stops (PROTOCOL.md §14.3).

use std::time::Duration;

use middleware::{
    Breaker, BreakerConfig, ClientStackConfig, GrpcChannel, TimeoutConfig, client_stack,
};
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::discovery_client::DiscoveryClient as GeneratedClient;
use tonic::Code;

use crate::entry::{Entry, delete_request, pk_to_proto};
use dmsg_core::addr::Port;
use dmsg_core::identity::{Keypair, PublicKey};

/// The dmsg port discovery serves gRPC on.
pub const DISCOVERY_PORT: Port = match Port::new(80) {
    Some(port) => port,
    None => panic!("80 is a valid port"),
};
/// Attempts of [`DiscoveryClient::publish`] before it gives up on resyncing.
const PUBLISH_ATTEMPTS: usize = 3;

/// Why a discovery call failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Discovery could not be reached or did not answer in time; retry later.
    #[error("discovery unavailable: {0}")]
    Unavailable(String),
    /// The stored entry is ahead of this one.
    #[error("stale entry: discovery holds sequence {stored_sequence}")]
    Stale {
        /// The stored sequence.
        stored_sequence: u64,
        /// The stored timestamp.
        stored_timestamp: i64,
    },
    /// The request was refused for what it is (malformed, bad signature, not the owner…).
    #[error("discovery refused the request ({code:?}): {message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// Discovery's explanation.
        message: String,
    },
}

impl From<tonic::Status> for DiscoveryError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown => Self::Unavailable(status.message().to_owned()),
            Code::FailedPrecondition => match crate::reason::stored_of(&status) {
                Some((stored_sequence, stored_timestamp)) => Self::Stale {
                    stored_sequence,
                    stored_timestamp,
                },
                None => Self::Refused {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
            },
            code => Self::Refused {
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

/// What a dmsg node needs from discovery.
#[tonic::async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// The entry of `pk`, if any.
    async fn entry(&self, pk: &PublicKey) -> Result<Option<Entry>, DiscoveryError>;
    /// Stores a signed entry; true if it was created.
    async fn put_entry(&self, entry: &Entry) -> Result<bool, DiscoveryError>;
    /// Deletes `keypair`'s entry (signed by it).
    async fn delete_entry(&self, keypair: &Keypair) -> Result<(), DiscoveryError>;
    /// Servers with free sessions, capacity-weighted random order.
    async fn available_servers(&self, limit: u32) -> Result<Vec<Entry>, DiscoveryError>;
    /// Every registered server.
    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError>;
}

/// How [`DiscoveryClient::publish`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// The entry is stored (with the returned sequence).
    Stored {
        /// The entry as stored (its final sequence).
        entry: Box<Entry>,
        /// True if discovery had no entry for the owner before.
        created: bool,
    },
    /// Discovery holds a newer entry (by timestamp): adopt its sequence; nothing was stored.
    Superseded {
        /// The stored sequence to continue from.
        stored_sequence: u64,
    },
}

/// The gRPC discovery client, behind the client middleware stack.
#[derive(Clone, Debug)]
pub struct DiscoveryClient {
    grpc: GeneratedClient<GrpcChannel>,
    breaker: Breaker,
}

/// Timeouts and breaker of discovery clients. The breaker opens for 1 s only: discovery is
/// what every node bootstraps from, so an open breaker must not hold a first registration
/// or publish back for long once discovery answers again (ARCHITECTURE §5).
pub(crate) fn stack_config() -> (ClientStackConfig, BreakerConfig) {
    (
        ClientStackConfig {
            timeouts: TimeoutConfig::uniform(Duration::from_secs(10)),
            ..ClientStackConfig::default()
        },
        BreakerConfig {
            failure_threshold: 3,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(1),
            max_open: None,
        },
    )
}

impl DiscoveryClient {
    /// A client over `transport` (a tonic channel, TCP or dmsg), with the standard stack.
    pub fn new(transport: impl middleware::GrpcTransport) -> Self {
        let (config, breaker_config) = stack_config();
        let breaker = Breaker::new("dmsg-discovery", breaker_config);
        Self {
            grpc: GeneratedClient::new(client_stack(transport, &config, breaker.clone())),
            breaker,
        }
    }

    /// A client of discovery's TCP gRPC endpoint (`http://host:port`), connecting lazily.
    pub fn over_tcp(url: &str) -> Result<Self, DiscoveryError> {
        Ok(Self::new(lazy_endpoint(url)?))
    }

    /// The breaker guarding calls (observe it for metrics).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Publishes `entry` (signing it with `keypair`), resyncing its sequence on a stale error
    /// ([`publish`]).
    pub async fn publish(
        &self,
        keypair: &Keypair,
        entry: Entry,
    ) -> Result<Published, DiscoveryError> {
        publish(self, keypair, entry).await
    }
}

/// A lazily connecting channel to discovery's TCP gRPC endpoint (`http://host:port`).
pub(crate) fn lazy_endpoint(url: &str) -> Result<tonic::transport::Channel, DiscoveryError> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|error| DiscoveryError::Refused {
            code: Code::InvalidArgument,
            message: format!("bad discovery URL {url:?}: {error}"),
        })?
        .connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Publishes `entry` through any [`Discovery`], signing it with `keypair`: on a stale sequence
/// it resyncs to the stored sequence + 1 and retries; if the stored entry is newer by
/// timestamp it reports [`Published::Superseded`] (PROTOCOL.md §14.3).
pub async fn publish(
    discovery: &(impl Discovery + ?Sized),
    keypair: &Keypair,
    mut entry: Entry,
) -> Result<Published, DiscoveryError> {
    let mut last = None;
    for _ in 0..PUBLISH_ATTEMPTS {
        entry.sign(keypair);
        match discovery.put_entry(&entry).await {
            Ok(created) => {
                return Ok(Published::Stored {
                    entry: Box::new(entry),
                    created,
                });
            }
            Err(DiscoveryError::Stale {
                stored_sequence,
                stored_timestamp,
            }) => {
                if stored_timestamp > entry.timestamp {
                    return Ok(Published::Superseded { stored_sequence });
                }
                entry.sequence = stored_sequence + 1;
                last = Some(DiscoveryError::Stale {
                    stored_sequence,
                    stored_timestamp,
                });
            }
            Err(other) => return Err(other),
        }
    }
    Err(last.unwrap_or_else(|| DiscoveryError::Unavailable("publish gave up".into())))
}

#[tonic::async_trait]
impl Discovery for DiscoveryClient {
    async fn entry(&self, pk: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
        let request = pb::GetEntryRequest {
            pk: pk_to_proto(pk),
        };
        match self.grpc.clone().get_entry(request).await {
            Ok(response) => Entry::from_proto(&response.into_inner())
                .map(Some)
                .map_err(|error| DiscoveryError::Refused {
                    code: Code::DataLoss,
                    message: format!("discovery returned a malformed entry: {error}"),
                }),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    async fn put_entry(&self, entry: &Entry) -> Result<bool, DiscoveryError> {
        let request = pb::PutEntryRequest {
            entry: Some(entry.to_proto()),
        };
        Ok(self
            .grpc
            .clone()
            .put_entry(request)
            .await?
            .into_inner()
            .created)
    }

    async fn delete_entry(&self, keypair: &Keypair) -> Result<(), DiscoveryError> {
        self.grpc
            .clone()
            .delete_entry(delete_request(keypair))
            .await?;
        Ok(())
    }

    async fn available_servers(&self, limit: u32) -> Result<Vec<Entry>, DiscoveryError> {
        let list = self
            .grpc
            .clone()
            .available_servers(pb::AvailableServersRequest { limit })
            .await?;
        Ok(servers(list.into_inner()))
    }

    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        let list = self
            .grpc
            .clone()
            .all_servers(pb::AllServersRequest {})
            .await?;
        Ok(servers(list.into_inner()))
    }
}

/// The valid entries of a server list (a malformed one is skipped, never trusted).
fn servers(list: pb::ServerList) -> Vec<Entry> {
    list.entries
        .iter()
        .filter_map(|entry| Entry::from_proto(entry).ok())
        .filter(Entry::signature_valid)
        .collect()
}

/// Several ways to one discovery (its TCP endpoint, its dmsg address), tried in order: a call
/// moves to the next only when the previous one is unavailable.
pub struct FirstAvailable(Vec<std::sync::Arc<dyn Discovery>>);

impl FirstAvailable {
    /// Tries `ways` in order.
    pub fn new(ways: Vec<std::sync::Arc<dyn Discovery>>) -> Self {
        Self(ways)
    }

    async fn first<'a, T, F>(
        &'a self,
        call: impl Fn(&'a dyn Discovery) -> F,
    ) -> Result<T, DiscoveryError>
    where
        F: std::future::Future<Output = Result<T, DiscoveryError>> + 'a,
    {
        let mut last = DiscoveryError::Unavailable("no way to discovery is configured".into());
        for way in &self.0 {
            match call(way.as_ref()).await {
                Err(DiscoveryError::Unavailable(why)) => last = DiscoveryError::Unavailable(why),
                other => return other,
            }
        }
        Err(last)
    }
}

impl std::fmt::Debug for FirstAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstAvailable({} ways)", self.0.len())
    }
}

#[tonic::async_trait]
impl Discovery for FirstAvailable {
    async fn entry(&self, pk: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
        self.first(|way| way.entry(pk)).await
    }

    async fn put_entry(&self, entry: &Entry) -> Result<bool, DiscoveryError> {
        self.first(|way| way.put_entry(entry)).await
    }

    async fn delete_entry(&self, keypair: &Keypair) -> Result<(), DiscoveryError> {
        self.first(|way| way.delete_entry(keypair)).await
    }

    async fn available_servers(&self, limit: u32) -> Result<Vec<Entry>, DiscoveryError> {
        self.first(|way| way.available_servers(limit)).await
    }

    async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
        self.first(|way| way.all_servers()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A scripted discovery that answers every call with one error (or an empty list).
    struct Scripted {
        error: Option<DiscoveryError>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn answer<T: Default>(&self) -> Result<T, DiscoveryError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.error.clone().map_or_else(|| Ok(T::default()), Err)
        }
    }

    #[tonic::async_trait]
    impl Discovery for Scripted {
        async fn entry(&self, _: &PublicKey) -> Result<Option<Entry>, DiscoveryError> {
            self.answer()
        }
        async fn put_entry(&self, _: &Entry) -> Result<bool, DiscoveryError> {
            self.answer()
        }
        async fn delete_entry(&self, _: &Keypair) -> Result<(), DiscoveryError> {
            self.answer()
        }
        async fn available_servers(&self, _: u32) -> Result<Vec<Entry>, DiscoveryError> {
            self.answer()
        }
        async fn all_servers(&self) -> Result<Vec<Entry>, DiscoveryError> {
            self.answer()
        }
    }

    fn scripted(error: Option<DiscoveryError>) -> Arc<Scripted> {
        Arc::new(Scripted {
            error,
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn first_available_moves_on_only_when_a_way_is_unavailable() {
        let down = scripted(Some(DiscoveryError::Unavailable("down".into())));
        let up = scripted(None);
        let both = FirstAvailable::new(vec![down.clone(), up.clone()]);
        assert_eq!(both.all_servers().await.unwrap(), Vec::new());
        assert_eq!(
            (
                down.calls.load(Ordering::Relaxed),
                up.calls.load(Ordering::Relaxed)
            ),
            (1, 1)
        );

        let refusing = scripted(Some(DiscoveryError::Refused {
            code: Code::InvalidArgument,
            message: "bad".into(),
        }));
        let never = scripted(None);
        let ways = FirstAvailable::new(vec![refusing.clone(), never.clone()]);
        assert!(matches!(
            ways.entry(&Keypair::generate().public()).await,
            Err(DiscoveryError::Refused { .. })
        ));
        assert_eq!(
            never.calls.load(Ordering::Relaxed),
            0,
            "a refusal is an answer"
        );

        let none = FirstAvailable::new(vec![down.clone()]);
        assert!(matches!(
            none.all_servers().await,
            Err(DiscoveryError::Unavailable(_))
        ));
    }
}
