//! gRPC server reflection for a process: its own descriptor sets plus `grpc.health.v1`,
//! served as v1 and as v1alpha (grpcurl 1.8 speaks only v1alpha; rust-stack.md).

use tonic_reflection::server::Builder;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionAlpha,
    ServerReflectionServer as ServerReflectionAlphaServer,
};

/// Builds the reflection services, v1 and v1alpha, knowing `descriptor_sets` (encoded
/// file-descriptor sets) and `grpc.health.v1`.
#[allow(clippy::type_complexity)]
pub fn reflection_services(
    descriptor_sets: &[&'static [u8]],
) -> Result<
    (
        ServerReflectionServer<impl ServerReflection>,
        ServerReflectionAlphaServer<impl ServerReflectionAlpha>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        descriptor_sets.iter().fold(
            Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
