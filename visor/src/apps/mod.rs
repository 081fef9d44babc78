//! Apps the visor runs in-process (ARCHITECTURE §6): `skysocks`, a SOCKS5 exit on route
//! port 3, and `skysocks-client`, a local SOCKS5 listener whose connections leave through an
//! exit. The two ends share one long-lived route group; each SOCKS connection is one stream
//! of a dmsg mux session over it ([`tunnel`]), so a connection costs no route setup.

pub mod registry;
pub mod skysocks;
pub mod skysocks_client;
pub mod tunnel;
