//! gRPC probes: connect while a process starts, list services by reflection, wait for a
//! health status.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A channel to `addr`, retrying for up to 10 s while the process starts.
pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing accepted gRPC connections on {addr} within 10 s");
}

macro_rules! list_services {
    ($module:ident, $channel:expr) => {{
        use tonic_reflection::pb::$module::ServerReflectionRequest;
        use tonic_reflection::pb::$module::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$module::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$module::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new($channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap();
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

/// The services listed by reflection v1.
pub async fn list_services_v1(channel: Channel) -> Vec<String> {
    list_services!(v1, channel)
}

/// The services listed by reflection v1alpha (what grpcurl 1.8 asks).
pub async fn list_services_v1alpha(channel: Channel) -> Vec<String> {
    list_services!(v1alpha, channel)
}

/// Panics unless both reflection versions list every one of `expected`.
pub async fn assert_reflection_lists(channel: Channel, expected: &[&str]) {
    for services in [
        list_services_v1(channel.clone()).await,
        list_services_v1alpha(channel).await,
    ] {
        for name in expected {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from reflection's {services:?}"
            );
        }
    }
}

/// The health status of `service` ("" for the whole process), or the RPC's error.
pub async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|response| response.into_inner().status())
}

/// Waits (up to `deadline`) until `service` reports `status`.
pub async fn wait_health(
    channel: Channel,
    service: &str,
    status: ServingStatus,
    deadline: Duration,
) {
    let reached = async {
        loop {
            if health(channel.clone(), service).await.ok() == Some(status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(deadline, reached)
        .await
        .unwrap_or_else(|_| panic!("{service:?} did not report {status:?} within {deadline:?}"));
}
