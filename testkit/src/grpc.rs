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

/// The names of `services`, sorted, for comparing sets.
fn sorted(services: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut names: Vec<String> = services.into_iter().map(Into::into).collect();
    names.sort();
    names
}

/// Panics unless the port behind `channel` serves exactly `expected` (besides health and
/// both reflection versions, which every port has): both reflection versions list exactly
/// those, health answers SERVING for each by name, and one unary method of each (the first
/// its descriptor lists; reflection has none and answered the listing) does not answer
/// UNIMPLEMENTED to an empty request.
pub async fn assert_serves_exactly(channel: Channel, expected: &[&str]) {
    let expected = sorted(expected.iter().copied().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]));
    assert_eq!(
        sorted(list_services_v1(channel.clone()).await),
        expected,
        "reflection v1"
    );
    assert_eq!(
        sorted(list_services_v1alpha(channel.clone()).await),
        expected,
        "reflection v1alpha"
    );
    for name in &expected {
        let status = health(channel.clone(), name).await;
        assert!(
            matches!(status, Ok(ServingStatus::Serving)),
            "health of {name}: {status:?}"
        );
        let Some(method) = first_unary_method(channel.clone(), name).await else {
            continue;
        };
        let path = format!("/{name}/{method}");
        let answer = call_empty(channel.clone(), &path).await;
        if let Err(status) = &answer {
            assert_ne!(
                status.code(),
                tonic::Code::Unimplemented,
                "{path} is listed but not served: {status:?}"
            );
        }
    }
}

/// The first unary method of `service`, read from its descriptor through reflection v1.
pub async fn first_unary_method(channel: Channel, service: &str) -> Option<String> {
    use prost::Message;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(service.to_owned())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let files = match responses.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto,
        other => panic!("no descriptor of {service}: {other:?}"),
    };
    let (package, short) = service.rsplit_once('.').unwrap_or(("", service));
    files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .filter(|file| file.package() == package)
        .flat_map(|file| file.service)
        .find(|s| s.name() == short)
        .unwrap_or_else(|| panic!("the descriptor of {service} does not define it"))
        .method
        .iter()
        .find(|m| !m.client_streaming() && !m.server_streaming())
        .map(|m| m.name().to_owned())
}

/// Sends an empty message to the unary method at `path` and returns the answer's bytes.
pub async fn call_empty(channel: Channel, path: &str) -> Result<bytes::Bytes, tonic::Status> {
    call_raw(channel, path, bytes::Bytes::new()).await
}

/// Sends `message` — encoded bytes, exactly as given (unknown fields, padding) — to the unary
/// method at `path` and returns the answer's bytes.
pub async fn call_raw(
    channel: Channel,
    path: &str,
    message: bytes::Bytes,
) -> Result<bytes::Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A codec passing message bytes through unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
