//! The embedded default deployment: dmsg servers every client knows without configuration,
//! so that a minimal first boot, with discovery unreachable, still has servers to try.
//!
//! The list is `deployment/servers.txt` beside this crate, one `PK@HOST:PORT` per line
//! (`#` comments). Skywire-rs has no public deployment yet, so it holds no servers; a
//! deployment adds its own before building. Entries that do not parse are skipped with a
//! warning rather than failing a client's start.

use crate::addr::ServerAddr;

const SERVERS: &str = include_str!("../deployment/servers.txt");

/// The embedded default servers.
pub fn default_servers() -> Vec<ServerAddr> {
    SERVERS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| match line.parse() {
            Ok(server) => Some(server),
            Err(error) => {
                tracing::warn!(%line, %error, "skipping a malformed embedded default server");
                None
            }
        })
        .collect()
}
