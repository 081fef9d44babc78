//! `dmsg-server`, the relay, as a library: the binary is [`run::run`] behind [`config`].
//!
//! The relay listener is bound and its accept loop running before anything outbound starts
//! (ARCHITECTURE §5): registration with discovery is a background task with full-jitter
//! backoff, refreshed every minute and soon after the session count changes; in dmsg-only mode
//! the server's transit client (same key) reaches discovery through other seeded servers.
//! Health reports the data plane: if the accept loop dies, health turns NOT_SERVING and the
//! process exits non-zero. Shutdown stops accepting, joins the publisher, deletes the entry,
//! then closes sessions.
//!
//! # Layout
//! - [`config`]: flags, `SKYWIRE_SERVER_*` environment and TOML, resolved into settings.
//! - [`registration`]: the background publisher of the server entry and its observable state.
//! - [`agent`]: the client agent (`dmsg-cli agent`): echo port and the Agent admin API.
//! - [`admin`]: the admin gRPC `Stats` service and the Prometheus collector.
//! - [`binary`], [`cli`]: the `dmsg-server` and `dmsg-cli` binaries' `main` (also run by
//!   `skywire-localnet`).
//! - [`run`]: the process: relay, registration, admin endpoint, ordered shutdown.

pub mod admin;
pub mod agent;
pub mod binary;
pub mod cli;
pub mod config;
pub mod registration;
pub mod run;
