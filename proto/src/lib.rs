//! Protobuf definitions and generated tonic/prost code for every Skywire-rs gRPC service.
//!
//! Package naming is `skywire.<area>.v1`; each package is a module below [`skywire`]. The
//! `.proto` sources live under `proto/skywire/`; service protos are added by the crates that
//! implement them.
//!
//! # Layout
//! - [`skywire::common::v1`]: types shared by every service (public key, dmsg address).
//! - [`skywire::discovery::v1`]: the Discovery and TransportRegistry services.
//! - [`skywire::client::v1`]: the admin API of `dmsg-cli agent` (Status, Probe, Traffic).
//! - [`skywire::server::v1`]: the dmsg-server admin API (`Stats`).
//! - [`skywire::visor::v1`]: the visor's gateways (`TransportGateway`, `RouteGateway`).
//! - [`skywire::setup::v1`]: transport-setup and route-setup.
//! - [`FILE_DESCRIPTOR_SET`]: one encoded descriptor set with every package, for gRPC reflection.
//! - [`codec::StrictCodec`]: the codec of every generated service: requests holding unknown
//!   fields are refused.
//! - [`status`]: error statuses with a `google.rpc.ErrorInfo`, built and read.
//! - `testing` (feature `testing`): a scriptable `Probe` service for middleware tests.

/// Generated code, one module per protobuf package.
pub mod skywire {
    /// `skywire.client.*`
    pub mod client {
        /// `skywire.client.v1`: the admin API of a long-running dmsg client.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.client.v1");
        }
    }

    /// `skywire.common.*`
    pub mod common {
        /// `skywire.common.v1`: types shared by every service.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.common.v1");
        }
    }

    /// `skywire.discovery.*`
    pub mod discovery {
        /// `skywire.discovery.v1`: the Discovery and TransportRegistry services.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.discovery.v1");
        }
    }

    /// `skywire.server.*`
    pub mod server {
        /// `skywire.server.v1`: the dmsg-server admin API.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.server.v1");
        }
    }

    /// `skywire.setup.*`
    pub mod setup {
        /// `skywire.setup.v1`: transport-setup and route-setup.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.setup.v1");
        }
    }

    /// `skywire.visor.*`
    pub mod visor {
        /// `skywire.visor.v1`: the visor's gateways (transports, routes).
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.visor.v1");
        }
    }

    /// `skywire.testing.*` (feature `testing`; never served by a real process).
    #[cfg(feature = "testing")]
    pub mod testing {
        /// `skywire.testing.v1`: the scriptable `Probe` service.
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("skywire.testing.v1");
        }
    }
}

/// Encoded `FileDescriptorSet` of every compiled package, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("skywire_descriptor");

pub mod codec;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
