//! The `skywire.discovery.v1.TransportRegistry` service: transports signed by both edges.

use crate::status::{missing, not_found, rejected_status};
use crate::store::Deleted;
use dmsg::entry::{
    Rejected, TransportEntry, deregister_signing_bytes, id_from_proto, id_to_proto, pk_from_proto,
    unix_nanos_now,
};
use dmsg::identity::SIGNATURE_LEN;
use skywire_proto::skywire::discovery::v1::transport_registry_server::TransportRegistry;
use skywire_proto::skywire::discovery::v1::{self as pb};
use tonic::{Request, Response, Status};

use crate::guard::GuardedStore;
use crate::service::Ttls;

/// The TransportRegistry service.
#[derive(Clone)]
pub struct TransportService {
    store: GuardedStore,
    ttls: Ttls,
}

impl TransportService {
    /// A service over `store`; transports live as long as client entries.
    pub fn new(store: GuardedStore, ttls: Ttls) -> Self {
        Self { store, ttls }
    }
}

/// The transport id in `field`, or INVALID_ARGUMENT naming it.
fn transport_id(text: &str, field: &str) -> Result<[u8; 16], Status> {
    id_from_proto(text, field).map_err(|error| error.status())
}

#[tonic::async_trait]
impl TransportRegistry for TransportService {
    async fn register_transport(
        &self,
        request: Request<pb::RegisterTransportRequest>,
    ) -> Result<Response<pb::RegisterTransportResponse>, Status> {
        let proto = request
            .into_inner()
            .entry
            .ok_or_else(|| missing("RegisterTransportRequest", "entry"))?;
        let transport =
            TransportEntry::from_proto(&proto).map_err(|error| rejected_status(&error))?;
        transport
            .validate(unix_nanos_now())
            .map_err(|error| rejected_status(&error))?;
        let ttl = self.ttls.client;
        self.store
            .call("put_transport", |store| {
                store.put_transport(&transport, ttl)
            })
            .await?
            .map_err(|rejected| rejected_status(&rejected))?;
        Ok(Response::new(pb::RegisterTransportResponse {}))
    }

    async fn get_transport(
        &self,
        request: Request<pb::GetTransportRequest>,
    ) -> Result<Response<pb::TransportEntry>, Status> {
        let id = transport_id(&request.get_ref().id, "GetTransportRequest.id")?;
        match self
            .store
            .call("transport", |store| store.transport(&id))
            .await?
        {
            Some(transport) => Ok(Response::new(transport.to_proto())),
            None => Err(not_found(format_args!("transport {}", id_to_proto(&id)))),
        }
    }

    async fn transports_by_edge(
        &self,
        request: Request<pb::TransportsByEdgeRequest>,
    ) -> Result<Response<pb::TransportList>, Status> {
        let edge = pk_from_proto(&request.get_ref().edge, "TransportsByEdgeRequest.edge")
            .map_err(|error| error.status())?;
        let transports = self
            .store
            .call("transports_by_edge", |store| {
                store.transports_by_edge(&edge)
            })
            .await?;
        Ok(Response::new(pb::TransportList {
            entries: transports.iter().map(TransportEntry::to_proto).collect(),
        }))
    }

    async fn deregister_transport(
        &self,
        request: Request<pb::DeregisterTransportRequest>,
    ) -> Result<Response<pb::DeregisterTransportResponse>, Status> {
        let request = request.into_inner();
        let id = transport_id(&request.id, "DeregisterTransportRequest.id")?;
        let edge = pk_from_proto(&request.edge, "DeregisterTransportRequest.edge")
            .map_err(|error| error.status())?;
        let signature: [u8; SIGNATURE_LEN] = request
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| rejected_status(&Rejected::NotOwner(edge)))?;
        let timestamp = request.timestamp_unix_nanos;
        if !edge.verify(&deregister_signing_bytes(&id, &edge, timestamp), &signature) {
            return Err(rejected_status(&Rejected::NotOwner(edge)));
        }
        let now = unix_nanos_now();
        if !dmsg::entry::in_window(timestamp, now) {
            return Err(rejected_status(&Rejected::ClockSkew { timestamp, now }));
        }
        // The id is derived from the edges (checked at registration), so the edges read
        // here are the edges of every registration this id can ever have.
        let Some(stored) = self
            .store
            .call("transport", |store| store.transport(&id))
            .await?
        else {
            return Err(not_found(format_args!("transport {}", id_to_proto(&id))));
        };
        if edge != stored.edge_a && edge != stored.edge_b {
            return Err(rejected_status(&Rejected::NotAnEdge {
                key: edge,
                transport: id,
            }));
        }
        let tombstone_ttl = self.ttls.client;
        match self
            .store
            .call("delete_transport", |store| {
                store.delete_transport(&id, timestamp, tombstone_ttl)
            })
            .await?
        {
            Deleted::Deleted => Ok(Response::new(pb::DeregisterTransportResponse {})),
            Deleted::NotFound => Err(not_found(format_args!("transport {}", id_to_proto(&id)))),
            Deleted::Newer { stored_timestamp } => Err(rejected_status(&Rejected::StaleDelete {
                timestamp,
                stored_timestamp,
            })),
        }
    }
}
