//! The gRPC endpoint builder: a port lists, by reflection and health, exactly the services it
//! serves, runs the shared server stack, and drains under a grace bound when it stops.
//!
//! ```text
//! GrpcEndpoint::new(stack)            the server stack (tracing, panics, limits, deadlines)
//!     .add_service(FooServer::new(..)) each served service, by its gRPC name
//!     .with_metrics(&metrics)          GET /metrics on the same port (admin endpoints)
//!     .build(&health, &stop)?          + grpc.health.v1 (each name) + reflection v1/v1alpha,
//!                                      and the task keeping health in step
//!     .serve(incoming, stop, grace)    until `stop`, then at most `grace` for open calls
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use middleware::{ServerStackConfig, ServerStackLayer, server_stack};
use observability::{HealthStates, MetricsRegistry, drive_health};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_reflection::server::Builder as ReflectionBuilder;
use tower_service::Service;

/// The gRPC name of the health service.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// The gRPC names of the two reflection services.
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The encoded descriptor sets of every service a port can serve: Skywire's, health's and
/// reflection's (for reflection itself and for the RPC metrics' method names).
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    skywire_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Why an endpoint could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The reflection services could not be built from the descriptor sets.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A gRPC port being put together; see the module docs.
pub struct GrpcEndpoint {
    routes: Routes,
    served: Vec<&'static str>,
    metrics: Option<MetricsRegistry>,
    stack: ServerStackConfig,
}

impl std::fmt::Debug for GrpcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcEndpoint")
            .field("served", &self.served)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcEndpoint {
    /// An endpoint with no services yet, behind the server stack `stack`, whose services are
    /// described in Skywire's file-descriptor set.
    pub fn new(stack: ServerStackConfig) -> Self {
        Self {
            routes: Routes::default(),
            served: Vec::new(),
            metrics: None,
            stack,
        }
    }

    /// Serves `service` (a generated `FooServer`) under its gRPC name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.served.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Also answers `GET /metrics` with `metrics` and the process-wide families.
    pub fn with_metrics(mut self, metrics: &MetricsRegistry) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Every service name reflection lists: the served ones, health and reflection.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names = self.served.clone();
        names.push(HEALTH_SERVICE);
        names.extend(REFLECTION_SERVICES);
        names
    }

    /// Adds health (the overall status and one per listed service, all driven by `health`)
    /// and reflection listing exactly [`GrpcEndpoint::service_names`]. Also returns the task
    /// that keeps health in step with `health` until `stop` (then every name reads
    /// NOT_SERVING): spawn it in the process's task set.
    pub fn build(
        self,
        health: &HealthStates,
        stop: &CancellationToken,
    ) -> Result<(Endpoint, impl Future<Output = ()> + Send + 'static), EndpointError> {
        let names = self.service_names();
        let reflection = || {
            let builder = DESCRIPTOR_SETS.iter().fold(
                ReflectionBuilder::configure().include_reflection_service(false),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            );
            names
                .iter()
                .fold(builder, |builder, name| builder.with_service_name(*name))
        };
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = self
            .routes
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        if let Some(metrics) = &self.metrics {
            routes = Routes::from(routes.into_axum_router().merge(metrics.router()));
        }
        let served: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let health = drive_health(
            reporter,
            served,
            health.subscribe(),
            stop.clone().cancelled_owned(),
        );
        observability::rpc_metrics::serve_methods(methods_of(&names));
        Ok((
            Endpoint {
                routes,
                stack: server_stack(&self.stack),
                http1: self.metrics.is_some(),
            },
            health,
        ))
    }
}

/// How long after the stop signal open response streams are ended, so a health `Watch`
/// first hears NOT_SERVING.
pub const STREAM_END_DELAY: Duration = Duration::from_millis(200);

/// A built gRPC port, ready to serve on any number of listeners (TCP, dmsg), which share one
/// server stack (one bound on concurrent requests across all of them).
#[derive(Clone)]
pub struct Endpoint {
    routes: Routes,
    stack: ServerStackLayer,
    http1: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

/// The connections `listener` accepts, each with Nagle's algorithm off: a gRPC reply is
/// written in pieces (headers, data, trailers), and with it on the last piece can wait for the
/// client's delayed ACK (40 ms on Linux: seen as a 44 ms GetEntry on Redis in
/// `discovery_bench`).
pub fn tcp_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not turn Nagle's algorithm off");
            }
        })
    })
}

impl Endpoint {
    /// [`Endpoint::serve`] on the connections `listener` accepts ([`tcp_incoming`]).
    pub fn serve_tcp(
        &self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
        grace: Duration,
    ) -> impl Future<Output = Result<(), EndpointError>> + Send + 'static {
        self.serve(tcp_incoming(listener), stop, grace)
    }

    /// Serves the routes on `incoming` (TCP or dmsg) until `stop`; then accepts no more,
    /// ends open response streams after [`STREAM_END_DELAY`] (UNAVAILABLE: see
    /// [`crate::drain`]), lets other calls finish for at most `grace`, and returns. Calls
    /// still open then are left to end with the process (tonic runs each connection in a
    /// task of its own).
    pub fn serve<I, IO, IE>(
        &self,
        incoming: I,
        stop: CancellationToken,
        grace: Duration,
    ) -> impl Future<Output = Result<(), EndpointError>> + Send + 'static
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let end_streams = CancellationToken::new();
        let serving = tonic::transport::Server::builder()
            // HTTP/1.1 only where `GET /metrics` is served.
            .accept_http1(self.http1)
            .layer(self.stack.clone())
            .layer(crate::drain::EndStreamsLayer::new(end_streams.clone()))
            .add_routes(self.routes.clone())
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        async move {
            tokio::pin!(serving);
            tokio::select! {
                result = &mut serving => return result.map_err(EndpointError::from),
                () = stop.cancelled() => {}
            }
            let draining = async {
                let (result, ()) = tokio::join!(&mut serving, async {
                    tokio::time::sleep(STREAM_END_DELAY).await;
                    end_streams.cancel();
                });
                result
            };
            match tokio::time::timeout(grace, draining).await {
                Ok(result) => result.map_err(EndpointError::from),
                Err(_) => {
                    // Open streams (a health Watch, say) never end by themselves.
                    tracing::info!(
                        ?grace,
                        "calls still open after the grace period; closing them"
                    );
                    Ok(())
                }
            }
        }
    }
}

/// The `(service, method)` pairs of `services`, read from [`DESCRIPTOR_SETS`].
fn methods_of(services: &[&str]) -> Vec<(String, String)> {
    use prost::Message;
    let mut methods = Vec::new();
    for set in DESCRIPTOR_SETS {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if services.contains(&name.as_str()) {
                    methods.extend(
                        service
                            .method
                            .iter()
                            .map(|method| (name.clone(), method.name().to_owned())),
                    );
                }
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio_stream::StreamExt;

    use super::*;

    /// Accepted connections have Nagle's algorithm off (a plain `TcpListenerStream`'s have it
    /// on: a GetEntry on Redis then waited 44 ms for the client's delayed ACK).
    #[tokio::test]
    async fn accepted_tcp_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(tcp_incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut plain = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = plain.next().await.unwrap().unwrap();
        assert!(!accepted.nodelay().unwrap(), "what tcp_incoming is for");
    }
}
