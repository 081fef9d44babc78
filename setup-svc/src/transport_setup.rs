//! The `TransportSetup` gRPC service (ARCHITECTURE §6): each operator call goes to the `from`
//! visor's `TransportGateway` (dmsg port 47) over gRPC tunnelled through dmsg, one reused
//! channel per visor, and its answer is relayed with a status that names the visor.

use std::collections::HashMap;

use discovery_client::hexfield::pk_from_proto;
use dmsg::client::WeakClient;
use dmsg::identity::PublicKey;
use skywire_proto::skywire::setup::v1 as pb;
use skywire_proto::skywire::visor::v1 as visor_pb;
use skywire_proto::skywire::visor::v1::transport_gateway_client::TransportGatewayClient;
use tonic::{Code, Request, Response, Status};
use visor::gateway::TRANSPORT_GATEWAY_PORT;

use crate::gateway::VisorChannels;

/// The error domain of transport-setup's errors.
pub const ERROR_DOMAIN: &str = "transport-setup";

/// The service.
#[derive(Debug)]
pub struct TransportSetupService {
    channels: VisorChannels,
}

impl TransportSetupService {
    /// Calls visors through `client`'s dmsg sessions.
    pub fn new(client: WeakClient) -> Self {
        Self {
            channels: VisorChannels::new(client, TRANSPORT_GATEWAY_PORT),
        }
    }

    fn gateway(&self, visor: PublicKey) -> TransportGatewayClient<middleware::GrpcChannel> {
        TransportGatewayClient::new(self.channels.channel(visor))
    }
}

fn visor_key(text: &str, field: &str) -> Result<PublicKey, Status> {
    pk_from_proto(text, field).map_err(|error| {
        skywire_proto::status::status_with_info(
            Code::InvalidArgument,
            error.to_string(),
            ERROR_DOMAIN,
            "invalid_argument",
            HashMap::new(),
        )
    })
}

/// The visor's answer as transport-setup's: its own refusals pass through; a visor that
/// refuses this transport-setup's key is PERMISSION_DENIED, and not reaching it UNAVAILABLE,
/// each naming the visor.
fn relayed(visor: &PublicKey, status: Status) -> Status {
    if dmsg::grpc::refusal(&status) == Some(dmsg::wire::Code::NotAllowed) {
        return skywire_proto::status::status_with_info(
            Code::PermissionDenied,
            format!(
                "visor {visor} does not trust this transport-setup's key: add it to the \
                 visor's --transport-setup-pks"
            ),
            ERROR_DOMAIN,
            "not_trusted",
            HashMap::from([("visor".to_owned(), visor.to_string())]),
        );
    }
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
            if skywire_proto::status::error_info(&status).is_none() =>
        {
            skywire_proto::status::status_with_info(
                Code::Unavailable,
                format!(
                    "visor {visor} is unreachable over dmsg: {}",
                    status.message()
                ),
                ERROR_DOMAIN,
                "visor_unreachable",
                HashMap::from([("visor".to_owned(), visor.to_string())]),
            )
        }
        _ => status,
    }
}

#[tonic::async_trait]
impl pb::transport_setup_server::TransportSetup for TransportSetupService {
    async fn add_transport(
        &self,
        request: Request<pb::AddTransportRequest>,
    ) -> Result<Response<visor_pb::TransportInfo>, Status> {
        let request = request.into_inner();
        let from = visor_key(&request.from, "from")?;
        visor_key(&request.to, "to")?;
        let answer = self
            .gateway(from)
            .add_transport(visor_pb::AddTransportRequest {
                remote_pk: request.to,
                r#type: request.r#type,
            })
            .await
            .map_err(|status| relayed(&from, status))?;
        Ok(Response::new(answer.into_inner()))
    }

    async fn remove_transport(
        &self,
        request: Request<pb::RemoveTransportRequest>,
    ) -> Result<Response<pb::RemoveTransportResponse>, Status> {
        let request = request.into_inner();
        let from = visor_key(&request.from, "from")?;
        self.gateway(from)
            .remove_transport(visor_pb::RemoveTransportRequest { id: request.id })
            .await
            .map_err(|status| relayed(&from, status))?;
        Ok(Response::new(pb::RemoveTransportResponse {}))
    }

    async fn list_transports(
        &self,
        request: Request<pb::ListTransportsRequest>,
    ) -> Result<Response<visor_pb::TransportList>, Status> {
        let visor = visor_key(&request.into_inner().pk, "pk")?;
        let answer = self
            .gateway(visor)
            .list_transports(visor_pb::ListTransportsRequest {})
            .await
            .map_err(|status| relayed(&visor, status))?;
        Ok(Response::new(answer.into_inner()))
    }
}
