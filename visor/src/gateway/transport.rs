//! `TransportGateway` (dmsg port 47): transports of this visor, for transport-setup
//! (ROUTING.md §2).

use std::sync::Arc;

use discovery_client::hexfield::{id_from_proto, id_to_proto, pk_from_proto, pk_to_proto};
use skywire_proto::skywire::visor::v1 as pb;
use tonic::{Code, Request, Response, Status};

use super::{gateway_status, invalid};
use crate::node::{TransportError, Visor};
use crate::transport::{Transport, TransportKind, transport_id};

/// The service.
#[derive(Clone, Debug)]
pub struct TransportGatewayService {
    visor: Visor,
}

impl TransportGatewayService {
    /// The gateway of `visor`.
    pub fn new(visor: Visor) -> Self {
        Self { visor }
    }

    fn info(&self, transport: &Transport) -> pb::TransportInfo {
        let stats = transport.stats();
        pb::TransportInfo {
            id: id_to_proto(&transport.id),
            local_pk: pk_to_proto(&self.visor.public_key()),
            remote_pk: pk_to_proto(&transport.peer),
            r#type: transport.kind.name().to_owned(),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
        }
    }
}

fn transport_status(peer: &str, error: TransportError) -> Status {
    match error {
        TransportError::UnknownPeer(_) => gateway_status(
            Code::FailedPrecondition,
            format!("{error}: add its address to this visor's --pk-table"),
            "unknown_peer",
        ),
        TransportError::ShuttingDown => {
            gateway_status(Code::Unavailable, error.to_string(), "shutting_down")
        }
        other => gateway_status(
            Code::Unavailable,
            format!("cannot reach {peer}: {other}"),
            "peer_unreachable",
        ),
    }
}

#[tonic::async_trait]
impl pb::transport_gateway_server::TransportGateway for TransportGatewayService {
    async fn add_transport(
        &self,
        request: Request<pb::AddTransportRequest>,
    ) -> Result<Response<pb::TransportInfo>, Status> {
        let request = request.into_inner();
        let peer = pk_from_proto(&request.remote_pk, "remote_pk")
            .map_err(|error| invalid(error.to_string()))?;
        let kind: TransportKind = request.r#type.parse().map_err(invalid)?;
        if peer == self.visor.public_key() {
            return Err(invalid("remote_pk is this visor's own key"));
        }
        let id = transport_id(&self.visor.public_key(), &peer, kind);
        let transport: Arc<Transport> = match self.visor.transport(&id) {
            Some(live) => live,
            None => {
                let dialed = match kind {
                    TransportKind::Stcp => self.visor.dial_stcp(peer).await,
                    TransportKind::Dmsg => self.visor.dial_dmsg(peer).await,
                };
                match dialed {
                    Ok(transport) => transport,
                    // The other edge's connection won: that one is the transport.
                    Err(TransportError::Duplicate(_)) => {
                        self.visor.transport(&id).ok_or_else(|| {
                            gateway_status(
                                Code::Aborted,
                                "the winning connection closed; retry",
                                "aborted",
                            )
                        })?
                    }
                    Err(error) => return Err(transport_status(&request.remote_pk, error)),
                }
            }
        };
        Ok(Response::new(self.info(&transport)))
    }

    async fn remove_transport(
        &self,
        request: Request<pb::RemoveTransportRequest>,
    ) -> Result<Response<pb::RemoveTransportResponse>, Status> {
        let id = id_from_proto(&request.into_inner().id, "id")
            .map_err(|error| invalid(error.to_string()))?;
        let transport = self.visor.transport(&id).ok_or_else(|| {
            gateway_status(
                Code::NotFound,
                format!("no transport {} on this visor", hex::encode(id)),
                "not_found",
            )
        })?;
        transport.close("removed through the transport gateway");
        Ok(Response::new(pb::RemoveTransportResponse {}))
    }

    async fn list_transports(
        &self,
        _: Request<pb::ListTransportsRequest>,
    ) -> Result<Response<pb::TransportList>, Status> {
        let transports = self.visor.transports();
        Ok(Response::new(pb::TransportList {
            transports: transports.iter().map(|t| self.info(t)).collect(),
        }))
    }
}
