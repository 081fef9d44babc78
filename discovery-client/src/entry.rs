//! Discovery entries and transport entries: the model, the canonical bytes their signatures
//! cover, and the validation rules (PROTOCOL.md §14). Pure: time is passed in.
//!
//! Servers (dmsg-discovery) and clients (anything that publishes or reads entries) use the
//! same code, so both ends agree byte for byte on what a signature covers.

use ring::digest::{SHA256, digest};
use skywire_proto::skywire::discovery::v1 as pb;

pub use crate::hexfield::{FieldError, id_from_proto, id_to_proto, pk_from_proto, pk_to_proto};
use dmsg_core::identity::{Keypair, PublicKey, SIGNATURE_LEN};

/// Most delegated servers a client entry may list.
pub const MAX_DELEGATED_SERVERS: usize = 64;
/// Largest encoded (protobuf) entry: 64 delegated keys as hex text fit with room to spare.
pub const MAX_ENTRY_BYTES: usize = 8192;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 32;
/// Longest server address.
pub const MAX_ADDRESS_LEN: usize = 255;
/// Longest server type or transport type.
pub const MAX_TYPE_LEN: usize = 32;
/// A server entry (or a signed request) may be at most this old …
pub const MAX_AGE_NANOS: i64 = 60 * 1_000_000_000;
/// … and at most this far in the future.
pub const MAX_FUTURE_NANOS: i64 = 5 * 1_000_000_000;

impl From<FieldError> for Rejected {
    fn from(error: FieldError) -> Self {
        Self::Malformed(error.to_string())
    }
}

/// Why an entry or request is refused. Each maps to one gRPC code (PROTOCOL.md §14.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// A field is missing or malformed (INVALID_ARGUMENT).
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// The encoded entry is too large (INVALID_ARGUMENT).
    #[error("entry of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The signature does not verify for the owner (UNAUTHENTICATED).
    #[error("the signature does not verify for {owner}")]
    BadSignature {
        /// The claimed owner.
        owner: PublicKey,
    },
    /// The sequence is not larger than the stored one (FAILED_PRECONDITION).
    #[error("sequence {sequence} is not greater than the stored {stored_sequence}; resync to {}", stored_sequence + 1)]
    StaleSequence {
        /// The refused sequence.
        sequence: u64,
        /// The stored entry's sequence.
        stored_sequence: u64,
        /// The stored entry's timestamp.
        stored_timestamp: i64,
    },
    /// The timestamp is older than the stored one (FAILED_PRECONDITION).
    #[error("timestamp {timestamp} is older than the stored {stored_timestamp}")]
    TimestampBackwards {
        /// The refused timestamp.
        timestamp: i64,
        /// The stored entry's sequence.
        stored_sequence: u64,
        /// The stored entry's timestamp.
        stored_timestamp: i64,
    },
    /// The timestamp is outside the accepted window around the receiver's clock
    /// (FAILED_PRECONDITION): a stale or replayed entry, or a clock out of sync.
    #[error(
        "timestamp {timestamp} is outside [now − 60 s, now + 5 s] (now {now}): check the sender's clock"
    )]
    ClockSkew {
        /// The refused timestamp.
        timestamp: i64,
        /// The receiver's clock.
        now: i64,
    },
    /// A delete or deregistration not signed by an owner (PERMISSION_DENIED).
    #[error("only an owner may do this: the signature does not verify for {0}")]
    NotOwner(PublicKey),
    /// A deregistration signed by a key that is not an edge of the transport
    /// (PERMISSION_DENIED).
    #[error(
        "key {key} is not an edge of transport {}: only its two edges may deregister it",
        hex::encode(transport)
    )]
    NotAnEdge {
        /// The key that signed.
        key: PublicKey,
        /// The transport id.
        transport: [u8; 16],
    },
    /// A transport registration not newer than the stored registration or deregistration
    /// (FAILED_PRECONDITION): a replay, or a registration overtaken by a newer one.
    #[error(
        "registration timestamp {timestamp} is not newer than the stored {stored_timestamp} \
         of this transport: sign a new registration"
    )]
    StaleRegistration {
        /// The refused registration's timestamp.
        timestamp: i64,
        /// The stored registration's or deregistration's timestamp.
        stored_timestamp: i64,
    },
    /// A delete or deregistration older than what is stored (FAILED_PRECONDITION): the
    /// stored entry or registration is kept.
    #[error(
        "this delete (timestamp {timestamp}) is older than what is stored \
         (timestamp {stored_timestamp}): sign a new one to delete it"
    )]
    StaleDelete {
        /// The refused request's timestamp.
        timestamp: i64,
        /// The stored entry's or registration's timestamp.
        stored_timestamp: i64,
    },
}

/// The client part of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientPart {
    /// Servers the client keeps sessions with.
    pub delegated_servers: Vec<PublicKey>,
}

/// The server part of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerPart {
    /// `host:port` of the server's dmsg listener.
    pub address: String,
    /// Sessions it can still take (max − current; may be negative).
    pub available_sessions: i64,
    /// Informational type ("official", "community", …).
    pub server_type: String,
    /// Advertised capacity (0: not stated); `max_sessions − available_sessions` is the load.
    pub max_sessions: i64,
}

impl ServerPart {
    /// Sessions the server holds now, if its entry states its capacity.
    pub fn sessions(&self) -> Option<i64> {
        (self.max_sessions > 0).then(|| self.max_sessions.saturating_sub(self.available_sessions))
    }
}

/// A discovery entry (PROTOCOL.md §14.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The owner.
    pub owner: PublicKey,
    /// Strictly increasing per owner.
    pub sequence: u64,
    /// When the owner made this version (nanoseconds since the Unix epoch).
    pub timestamp: i64,
    /// The owner's software version.
    pub version: String,
    /// Present for clients.
    pub client: Option<ClientPart>,
    /// Present for servers.
    pub server: Option<ServerPart>,
    /// The owner completes dmsg handshakes with the PQ hybrid.
    pub pq_capable: bool,
    /// Ed25519 signature over [`Entry::signing_bytes`] (all zero until signed).
    pub signature: [u8; SIGNATURE_LEN],
}

/// Nanoseconds since the Unix epoch, now (the wall clock; entries carry wall-clock time).
pub fn unix_nanos_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn put_str(out: &mut Vec<u8>, s: &str, len_bytes: usize) {
    // Lengths are bounded by validation; the prefix width covers them.
    if len_bytes == 1 {
        out.push(s.len() as u8);
    } else {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// True if `timestamp` is within [now − 60 s, now + 5 s] (signed requests and server entries).
pub fn in_window(timestamp: i64, now: i64) -> bool {
    timestamp >= now.saturating_sub(MAX_AGE_NANOS)
        && timestamp <= now.saturating_add(MAX_FUTURE_NANOS)
}

/// Label of entry signatures.
const ENTRY_LABEL: &[u8] = b"skywire-discovery/1 entry";
/// Label of delete signatures.
const DELETE_LABEL: &[u8] = b"skywire-discovery/1 delete";

impl Entry {
    /// A new, unsigned client entry.
    pub fn client(owner: PublicKey, sequence: u64, delegated_servers: Vec<PublicKey>) -> Self {
        Self {
            owner,
            sequence,
            timestamp: unix_nanos_now(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            client: Some(ClientPart { delegated_servers }),
            server: None,
            pq_capable: true,
            signature: [0u8; SIGNATURE_LEN],
        }
    }

    /// A new, unsigned server entry.
    pub fn server(owner: PublicKey, sequence: u64, server: ServerPart) -> Self {
        Self {
            client: None,
            server: Some(server),
            ..Self::client(owner, sequence, Vec::new())
        }
    }

    /// The bytes the signature covers (PROTOCOL.md §14.1).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(ENTRY_LABEL);
        out.extend_from_slice(self.owner.as_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        put_str(&mut out, &self.version, 1);
        let flags = u8::from(self.client.is_some())
            | u8::from(self.server.is_some()) << 1
            | u8::from(self.pq_capable) << 2;
        out.push(flags);
        if let Some(client) = &self.client {
            out.extend_from_slice(&(client.delegated_servers.len() as u16).to_be_bytes());
            for server in &client.delegated_servers {
                out.extend_from_slice(server.as_bytes());
            }
        }
        if let Some(server) = &self.server {
            put_str(&mut out, &server.address, 2);
            out.extend_from_slice(&server.available_sessions.to_be_bytes());
            put_str(&mut out, &server.server_type, 1);
            out.extend_from_slice(&server.max_sessions.to_be_bytes());
        }
        out
    }

    /// Signs the entry with the owner's key pair.
    pub fn sign(&mut self, keypair: &Keypair) {
        self.signature = keypair.sign(&self.signing_bytes());
    }

    /// The entry, signed.
    pub fn signed(mut self, keypair: &Keypair) -> Self {
        self.sign(keypair);
        self
    }

    /// True if the signature verifies for the owner.
    pub fn signature_valid(&self) -> bool {
        self.owner.verify(&self.signing_bytes(), &self.signature)
    }

    /// Checks everything that does not depend on a stored entry (PROTOCOL.md §14.3):
    /// sizes, fields, the signature, and a server entry's timestamp window. `encoded_len` is
    /// the size of the entry as received.
    pub fn validate(&self, encoded_len: usize, now: i64) -> Result<(), Rejected> {
        if encoded_len > MAX_ENTRY_BYTES {
            return Err(Rejected::TooLarge {
                size: encoded_len,
                max: MAX_ENTRY_BYTES,
            });
        }
        let malformed = |what: &str| Err(Rejected::Malformed(what.to_owned()));
        if self.version.len() > MAX_VERSION_LEN {
            return malformed("version longer than 32 bytes");
        }
        match (&self.client, &self.server) {
            (None, None) => {
                return malformed("an entry needs a client part, a server part or both");
            }
            (Some(client), _) if client.delegated_servers.len() > MAX_DELEGATED_SERVERS => {
                return malformed("more than 64 delegated servers");
            }
            _ => {}
        }
        if let Some(server) = &self.server {
            if server.address.is_empty() {
                return malformed("a server entry needs an address");
            }
            if server.address.len() > MAX_ADDRESS_LEN || server.server_type.len() > MAX_TYPE_LEN {
                return malformed("server address or type too long");
            }
            if server.max_sessions < 0 {
                return malformed("max_sessions must not be negative (0 = not stated)");
            }
        }
        if !self.signature_valid() {
            return Err(Rejected::BadSignature { owner: self.owner });
        }
        if self.server.is_some() && !in_window(self.timestamp, now) {
            return Err(Rejected::ClockSkew {
                timestamp: self.timestamp,
                now,
            });
        }
        Ok(())
    }

    /// Checks the entry may replace the stored `(sequence, timestamp)` (PROTOCOL.md §14.3).
    pub fn validate_update(&self, stored: Option<(u64, i64)>) -> Result<(), Rejected> {
        let Some((stored_sequence, stored_timestamp)) = stored else {
            return Ok(());
        };
        if self.sequence <= stored_sequence {
            return Err(Rejected::StaleSequence {
                sequence: self.sequence,
                stored_sequence,
                stored_timestamp,
            });
        }
        if self.timestamp < stored_timestamp {
            return Err(Rejected::TimestampBackwards {
                timestamp: self.timestamp,
                stored_sequence,
                stored_timestamp,
            });
        }
        Ok(())
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> pb::Entry {
        pb::Entry {
            owner: pk_to_proto(&self.owner),
            sequence: self.sequence,
            timestamp_unix_nanos: self.timestamp,
            version: self.version.clone(),
            client: self.client.as_ref().map(|c| pb::ClientPart {
                delegated_servers: c.delegated_servers.iter().map(pk_to_proto).collect(),
            }),
            server: self.server.as_ref().map(|s| pb::ServerPart {
                address: s.address.clone(),
                available_sessions: s.available_sessions,
                server_type: s.server_type.clone(),
                max_sessions: s.max_sessions,
            }),
            pq_capable: self.pq_capable,
            signature: self.signature.to_vec(),
        }
    }

    /// Reads the protobuf form, checking that keys and the signature are well formed.
    pub fn from_proto(entry: &pb::Entry) -> Result<Self, Rejected> {
        let owner = pk_from_proto(&entry.owner, "Entry.owner")?;
        let signature: [u8; SIGNATURE_LEN] = entry
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Rejected::Malformed("the signature must be 64 bytes".into()))?;
        let client = match &entry.client {
            None => None,
            Some(client) if client.delegated_servers.len() > MAX_DELEGATED_SERVERS => {
                return Err(Rejected::Malformed("more than 64 delegated servers".into()));
            }
            Some(client) => Some(ClientPart {
                delegated_servers: client
                    .delegated_servers
                    .iter()
                    .enumerate()
                    .map(|(n, pk)| {
                        pk_from_proto(pk, &format!("Entry.client.delegated_servers[{n}]"))
                    })
                    .collect::<Result<_, _>>()?,
            }),
        };
        Ok(Self {
            owner,
            sequence: entry.sequence,
            timestamp: entry.timestamp_unix_nanos,
            version: entry.version.clone(),
            client,
            server: entry.server.as_ref().map(|s| ServerPart {
                address: s.address.clone(),
                available_sessions: s.available_sessions,
                server_type: s.server_type.clone(),
                max_sessions: s.max_sessions,
            }),
            pq_capable: entry.pq_capable,
            signature,
        })
    }
}

/// The bytes an owner signs to delete its entry (PROTOCOL.md §14.2).
pub fn delete_signing_bytes(pk: &PublicKey, timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(DELETE_LABEL.len() + 40);
    out.extend_from_slice(DELETE_LABEL);
    out.extend_from_slice(pk.as_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out
}

/// A signed delete request for `keypair`'s entry, made now.
pub fn delete_request(keypair: &Keypair) -> pb::DeleteEntryRequest {
    let timestamp = unix_nanos_now();
    pb::DeleteEntryRequest {
        pk: pk_to_proto(&keypair.public()),
        timestamp_unix_nanos: timestamp,
        signature: keypair
            .sign(&delete_signing_bytes(&keypair.public(), timestamp))
            .to_vec(),
    }
}

/// Checks a delete: signed by `pk`, recent, and not older than the entry it deletes.
pub fn validate_delete(
    pk: &PublicKey,
    timestamp: i64,
    signature: &[u8],
    stored_timestamp: Option<i64>,
    now: i64,
) -> Result<(), Rejected> {
    let signature: [u8; SIGNATURE_LEN] =
        signature.try_into().map_err(|_| Rejected::NotOwner(*pk))?;
    if !pk.verify(&delete_signing_bytes(pk, timestamp), &signature) {
        return Err(Rejected::NotOwner(*pk));
    }
    if !in_window(timestamp, now) || stored_timestamp.is_some_and(|stored| timestamp < stored) {
        return Err(Rejected::ClockSkew { timestamp, now });
    }
    Ok(())
}

// === transports ===

/// Label of transport signatures.
const TRANSPORT_LABEL: &[u8] = b"skywire-transport/1 register";
/// Label of transport deregistrations.
const DEREGISTER_LABEL: &[u8] = b"skywire-transport/1 deregister";
/// Label of transport ids.
const TRANSPORT_ID_LABEL: &[u8] = b"skywire-transport/1 id";

/// A transport between two visors, signed by both (PROTOCOL.md §14.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportEntry {
    /// Derived from the edges and the type.
    pub id: [u8; 16],
    /// The lower edge (bytewise).
    pub edge_a: PublicKey,
    /// The higher edge.
    pub edge_b: PublicKey,
    /// "dmsg", "stcp", …
    pub kind: String,
    /// When the edges signed it.
    pub timestamp: i64,
    /// Signature by `edge_a`.
    pub signature_a: [u8; SIGNATURE_LEN],
    /// Signature by `edge_b`.
    pub signature_b: [u8; SIGNATURE_LEN],
}

/// The transport id for two edges (either order) and a type.
pub fn transport_id(a: &PublicKey, b: &PublicKey, kind: &str) -> [u8; 16] {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut input = Vec::with_capacity(TRANSPORT_ID_LABEL.len() + 64 + kind.len());
    input.extend_from_slice(TRANSPORT_ID_LABEL);
    input.extend_from_slice(low.as_bytes());
    input.extend_from_slice(high.as_bytes());
    input.extend_from_slice(kind.as_bytes());
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_ref()[..16]);
    id
}

impl TransportEntry {
    /// An unsigned transport between `a` and `b` (sorted), made now.
    pub fn new(a: PublicKey, b: PublicKey, kind: &str) -> Self {
        let (edge_a, edge_b) = if a <= b { (a, b) } else { (b, a) };
        Self {
            id: transport_id(&a, &b, kind),
            edge_a,
            edge_b,
            kind: kind.to_owned(),
            timestamp: unix_nanos_now(),
            signature_a: [0u8; SIGNATURE_LEN],
            signature_b: [0u8; SIGNATURE_LEN],
        }
    }

    /// The bytes both edges sign.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRANSPORT_LABEL.len() + 100);
        out.extend_from_slice(TRANSPORT_LABEL);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(self.edge_a.as_bytes());
        out.extend_from_slice(self.edge_b.as_bytes());
        put_str(&mut out, &self.kind, 1);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out
    }

    /// Adds `keypair`'s signature (it must be one of the edges; otherwise nothing changes).
    pub fn sign_as(&mut self, keypair: &Keypair) {
        let signature = keypair.sign(&self.signing_bytes());
        if keypair.public() == self.edge_a {
            self.signature_a = signature;
        } else if keypair.public() == self.edge_b {
            self.signature_b = signature;
        }
    }

    /// Checks the id, the type, both signatures and the timestamp window.
    pub fn validate(&self, now: i64) -> Result<(), Rejected> {
        if self.kind.is_empty() || self.kind.len() > MAX_TYPE_LEN {
            return Err(Rejected::Malformed(
                "transport type must be 1–32 bytes".into(),
            ));
        }
        if self.edge_a >= self.edge_b {
            return Err(Rejected::Malformed(
                "transport edges must be distinct and sorted".into(),
            ));
        }
        if self.id != transport_id(&self.edge_a, &self.edge_b, &self.kind) {
            return Err(Rejected::Malformed(
                "transport id does not match its edges and type".into(),
            ));
        }
        let bytes = self.signing_bytes();
        for (edge, signature) in [
            (&self.edge_a, &self.signature_a),
            (&self.edge_b, &self.signature_b),
        ] {
            if !edge.verify(&bytes, signature) {
                return Err(Rejected::BadSignature { owner: *edge });
            }
        }
        if !in_window(self.timestamp, now) {
            return Err(Rejected::ClockSkew {
                timestamp: self.timestamp,
                now,
            });
        }
        Ok(())
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> pb::TransportEntry {
        pb::TransportEntry {
            id: id_to_proto(&self.id),
            edge_a: pk_to_proto(&self.edge_a),
            edge_b: pk_to_proto(&self.edge_b),
            r#type: self.kind.clone(),
            timestamp_unix_nanos: self.timestamp,
            signature_a: self.signature_a.to_vec(),
            signature_b: self.signature_b.to_vec(),
        }
    }

    /// Reads the protobuf form.
    pub fn from_proto(entry: &pb::TransportEntry) -> Result<Self, Rejected> {
        let signature = |bytes: &[u8]| -> Result<[u8; SIGNATURE_LEN], Rejected> {
            bytes
                .try_into()
                .map_err(|_| Rejected::Malformed("signatures must be 64 bytes".into()))
        };
        Ok(Self {
            id: id_from_proto(&entry.id, "TransportEntry.id")?,
            edge_a: pk_from_proto(&entry.edge_a, "TransportEntry.edge_a")?,
            edge_b: pk_from_proto(&entry.edge_b, "TransportEntry.edge_b")?,
            kind: entry.r#type.clone(),
            timestamp: entry.timestamp_unix_nanos,
            signature_a: signature(&entry.signature_a)?,
            signature_b: signature(&entry.signature_b)?,
        })
    }
}

/// The bytes an edge signs to deregister a transport.
pub fn deregister_signing_bytes(id: &[u8; 16], edge: &PublicKey, timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(DEREGISTER_LABEL.len() + 56);
    out.extend_from_slice(DEREGISTER_LABEL);
    out.extend_from_slice(id);
    out.extend_from_slice(edge.as_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
