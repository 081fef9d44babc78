//! Configuration of the `transport-setup` and `route-setup` binaries: one definition each
//! gives the flags, the `SKYWIRE_TRANSPORT_SETUP_*` / `SKYWIRE_ROUTE_SETUP_*` variables and
//! the keys of the `--config` file (see [`service::config`]).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use middleware::BreakerConfig;
use service::{Binary, CommonArgs, ConfigError, DmsgArgs};

use crate::route_setup::RouteSetupConfig;

/// What the skeleton knows of `transport-setup`.
pub const TRANSPORT_SETUP: Binary = Binary {
    name: "transport-setup",
    env_prefix: "SKYWIRE_TRANSPORT_SETUP_",
};

/// What the skeleton knows of `route-setup`.
pub const ROUTE_SETUP: Binary = Binary {
    name: "route-setup",
    env_prefix: "SKYWIRE_ROUTE_SETUP_",
};

/// Skywire's transport-setup: operators ask it, over gRPC on TCP, to add, remove or list a
/// visor's transports; it relays each call to that visor's transport gateway (dmsg port 47)
/// over gRPC tunnelled through dmsg. Visors obey only the transport-setup keys they list
/// (their --transport-setup-pks).
///
/// The gRPC listener is bound first; it also serves grpc.health.v1, gRPC reflection (v1 and
/// v1alpha, for grpcurl) and Prometheus text at GET /metrics. The dmsg client connects in the
/// background, to the seeded --servers alone when no discovery is given.
#[derive(Clone, Debug, Parser)]
#[command(version, about, long_about)]
pub struct TransportSetupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dmsg: DmsgArgs,

    /// Address of the operators' gRPC endpoint (TransportSetup, health, reflection,
    /// /metrics). Anyone who reaches it can change every trusting visor's transports: keep
    /// it on loopback or a private network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9092")]
    pub grpc: SocketAddr,
}

impl service::process::Resolve for TransportSetupArgs {
    /// The flags are the settings: nothing to combine.
    type Settings = TransportSetupArgs;

    fn resolve(self) -> Result<TransportSetupArgs, ConfigError> {
        self.dmsg.check()?;
        Ok(self)
    }
}

/// Skywire's route-setup: a visor asks it (gRPC on dmsg port 36) for a route group to
/// another visor; it finds forward and reverse paths over discovery's transport registry,
/// reserves route IDs and installs the rules on every hop through their route gateways
/// (dmsg port 136), and answers with the initiator's rules. A destination whose setups keep
/// failing is refused at once for a while (its breaker, listed by the Breakers RPC).
///
/// The TCP listener is bound first; it serves the same RouteSetup service to operators,
/// with grpc.health.v1, gRPC reflection (v1 and v1alpha) and Prometheus text at GET
/// /metrics. On dmsg, a visor may dial only its own route groups (src must be its key).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct RouteSetupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dmsg: DmsgArgs,

    /// Address of the operators' gRPC endpoint (RouteSetup, health, reflection, /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9093")]
    pub grpc: SocketAddr,

    /// Longest one route-group setup may take, in seconds (a caller's shorter grpc-timeout
    /// wins).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,

    /// Setups in progress at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_in_flight: u64,

    /// Failed setups to one destination, within --breaker-window-secs, that open its
    /// breaker.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: u32,

    /// The window, in seconds, in which --breaker-failures count.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub breaker_window_secs: u64,

    /// Seconds an open breaker refuses before it lets one probe through.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub breaker_open_secs: u64,

    /// Seconds after its first trip that a breaker is closed whatever happened (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub breaker_max_open_secs: u64,
}

/// route-setup's resolved settings.
#[derive(Clone, Debug)]
pub struct RouteSetupSettings {
    /// The flags every binary has.
    pub common: CommonArgs,
    /// Key, seeded servers, discovery.
    pub dmsg: DmsgArgs,
    /// The TCP gRPC listen address.
    pub grpc: SocketAddr,
    /// The core's settings.
    pub core: RouteSetupConfig,
}

impl service::process::Resolve for RouteSetupArgs {
    type Settings = RouteSetupSettings;

    fn resolve(self) -> Result<RouteSetupSettings, ConfigError> {
        self.dmsg.check()?;
        if self.dmsg.discovery.is_none() && self.dmsg.discovery_pk.is_none() {
            return Err(ConfigError::Invalid(
                "route-setup finds paths in discovery's transport registry: give --discovery URL \
                 or --discovery-pk PK"
                    .into(),
            ));
        }
        let secs = Duration::from_secs;
        let core = RouteSetupConfig {
            request_timeout: secs(self.request_timeout_secs),
            max_in_flight: usize::try_from(self.max_in_flight).unwrap_or(usize::MAX),
            breaker: BreakerConfig {
                failure_threshold: self.breaker_failures,
                window: secs(self.breaker_window_secs),
                open_for: secs(self.breaker_open_secs),
                max_open: (self.breaker_max_open_secs > 0)
                    .then(|| secs(self.breaker_max_open_secs)),
            },
            ..RouteSetupConfig::default()
        };
        Ok(RouteSetupSettings {
            common: self.common,
            dmsg: self.dmsg,
            grpc: self.grpc,
            core,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_setup_needs_a_registry_and_takes_the_go_numbers_by_default() {
        let error = service::config::resolve::<RouteSetupArgs>(&ROUTE_SETUP, &[]).unwrap_err();
        assert!(error.to_string().contains("--discovery"), "{error}");
        let settings = service::config::resolve::<RouteSetupArgs>(
            &ROUTE_SETUP,
            &["--discovery", "http://127.0.0.1:9090"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let defaults = RouteSetupConfig::default();
        assert_eq!(settings.core.request_timeout, defaults.request_timeout);
        assert_eq!(settings.core.max_in_flight, defaults.max_in_flight);
        assert_eq!(settings.core.breaker.failure_threshold, 3);
        assert_eq!(settings.core.breaker.open_for, Duration::from_secs(300));
        assert_eq!(
            settings.core.breaker.max_open,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(settings.grpc.port(), 9093);
        let error = service::config::resolve::<RouteSetupArgs>(
            &ROUTE_SETUP,
            &["--discovery", "127.0.0.1:9090"],
        )
        .unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
    }

    #[test]
    fn transport_setup_runs_on_seeds_alone() {
        let settings = service::config::resolve::<TransportSetupArgs>(&TRANSPORT_SETUP, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.grpc.port(), 9092);
        assert!(settings.dmsg.discovery.is_none());
    }
}
