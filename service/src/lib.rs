//! The skeleton every Skywire-rs binary stands on, so a new binary is its services, its keys
//! and its defaults — nothing copied from another binary.
//!
//! # Layout
//! - [`config`]: one clap definition gives the flags, the `SKYWIRE_<BINARY>_*` variables and
//!   the TOML keys of `--config`; file < environment < flag.
//! - [`endpoint`]: a gRPC port that lists (reflection) and reports (health) exactly the
//!   services it serves, behind the shared server stack, drained under a grace bound.
//! - [`dmsg_args`]: the flags of a dmsg client process (key, seeded servers, discovery).
//! - [`drain`]: open response streams end with UNAVAILABLE at shutdown.
//! - [`process`]: `main` (settings, runtime, fatal errors as JSON in JSON mode), telemetry
//!   around the service, SIGINT/SIGTERM with a grace period and a second signal that exits.
//! - [`CommonArgs`]: the flags every binary has (`--config`, `--require-pq`,
//!   `--shutdown-grace-secs`).

pub mod config;
pub mod dmsg_args;
pub mod drain;
pub mod endpoint;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{Binary, ConfigError};
pub use dmsg_args::DmsgArgs;
pub use endpoint::{Endpoint, EndpointError, GrpcEndpoint};

/// The flags every binary has; `#[command(flatten)]` it into the binary's definition.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// TOML file with any of the settings (keys listed at the end of --help).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Refuse every dmsg handshake that does not complete the ML-KEM-768 hybrid (by default a
    /// classical completion is allowed, logged and counted).
    #[arg(long, env = "SKYWIRE_REQUIRE_PQ", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_pq: bool,

    /// Seconds a stopping process waits for open calls and its own clean-up after SIGINT or
    /// SIGTERM before it exits anyway (a second signal exits at once).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_grace_secs: u64,
}

impl CommonArgs {
    /// The grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
