//! Talking to discovery's TransportRegistry (PROTOCOL.md §14.4): [`Registry`], what a visor
//! needs from it, and [`RegistryClient`], its gRPC implementation over any tonic transport,
//! through the standard client stack.

use middleware::{Breaker, GrpcChannel, client_stack};
use skywire_proto::skywire::discovery::v1 as pb;
use skywire_proto::skywire::discovery::v1::transport_registry_client::TransportRegistryClient;
use tonic::Code;

use crate::discovery::DiscoveryError;
use crate::entry::{
    TransportEntry, deregister_signing_bytes, id_to_proto, pk_to_proto, unix_nanos_now,
};
use dmsg_core::identity::{Keypair, PublicKey};

/// What a visor needs from the transport registry.
#[tonic::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers (or refreshes) a transport signed by both edges.
    async fn register(&self, entry: &TransportEntry) -> Result<(), DiscoveryError>;
    /// Removes transport `id`, signed by `edge` (one of its edges), timestamped now.
    async fn deregister(&self, edge: &Keypair, id: &[u8; 16]) -> Result<(), DiscoveryError>;
    /// The transport `id`, if registered.
    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, DiscoveryError>;
    /// Every live transport with `edge` (entries that do not validate are skipped).
    async fn transports_by_edge(
        &self,
        edge: &PublicKey,
    ) -> Result<Vec<TransportEntry>, DiscoveryError>;
}

/// The gRPC registry client, behind the client middleware stack.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    grpc: TransportRegistryClient<GrpcChannel>,
    breaker: Breaker,
}

impl RegistryClient {
    /// A client over `transport` (a tonic channel, TCP or dmsg), with the standard stack
    /// (the same timeouts and breaker settings as [`crate::discovery::DiscoveryClient`]).
    pub fn new(transport: impl middleware::GrpcTransport) -> Self {
        let (config, breaker_config) = crate::discovery::stack_config();
        let breaker = Breaker::new("transport-registry", breaker_config);
        Self {
            grpc: TransportRegistryClient::new(client_stack(transport, &config, breaker.clone())),
            breaker,
        }
    }

    /// A client of discovery's TCP gRPC endpoint (`http://host:port`), connecting lazily.
    pub fn over_tcp(url: &str) -> Result<Self, DiscoveryError> {
        Ok(Self::new(crate::discovery::lazy_endpoint(url)?))
    }

    /// The breaker guarding calls.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

#[tonic::async_trait]
impl Registry for RegistryClient {
    async fn register(&self, entry: &TransportEntry) -> Result<(), DiscoveryError> {
        let request = pb::RegisterTransportRequest {
            entry: Some(entry.to_proto()),
        };
        self.grpc.clone().register_transport(request).await?;
        Ok(())
    }

    async fn deregister(&self, edge: &Keypair, id: &[u8; 16]) -> Result<(), DiscoveryError> {
        let timestamp = unix_nanos_now();
        let request = pb::DeregisterTransportRequest {
            id: id_to_proto(id),
            edge: pk_to_proto(&edge.public()),
            timestamp_unix_nanos: timestamp,
            signature: edge
                .sign(&deregister_signing_bytes(id, &edge.public(), timestamp))
                .to_vec(),
        };
        match self.grpc.clone().deregister_transport(request).await {
            Ok(_) => Ok(()),
            // Already gone (expired, or the other edge removed it): what was wanted.
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(status.into()),
        }
    }

    async fn transport(&self, id: &[u8; 16]) -> Result<Option<TransportEntry>, DiscoveryError> {
        let request = pb::GetTransportRequest {
            id: id_to_proto(id),
        };
        match self.grpc.clone().get_transport(request).await {
            Ok(response) => TransportEntry::from_proto(&response.into_inner())
                .map(Some)
                .map_err(|error| DiscoveryError::Refused {
                    code: Code::DataLoss,
                    message: format!("discovery returned a malformed transport: {error}"),
                }),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    async fn transports_by_edge(
        &self,
        edge: &PublicKey,
    ) -> Result<Vec<TransportEntry>, DiscoveryError> {
        let request = pb::TransportsByEdgeRequest {
            edge: pk_to_proto(edge),
        };
        let list = self.grpc.clone().transports_by_edge(request).await?;
        Ok(list
            .into_inner()
            .entries
            .iter()
            .filter_map(|entry| TransportEntry::from_proto(entry).ok())
            .filter(|entry| entry.edge_a == *edge || entry.edge_b == *edge)
            .collect())
    }
}
