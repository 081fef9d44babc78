//! What discovery's errors carry (PROTOCOL.md §14.3): every refusal is a status with a
//! `google.rpc.ErrorInfo` in the domain [`ERROR_DOMAIN`], one of the reasons below, and the
//! facts a client acts on as metadata (for a stale entry, the stored sequence and
//! timestamp). grpcurl prints them; [`crate::discovery::DiscoveryError`] reads them.

use std::collections::HashMap;

use skywire_proto::status::status_with_info;
use tonic::Code;

use crate::entry::Rejected;

/// The `ErrorInfo` domain of discovery's errors.
pub const ERROR_DOMAIN: &str = "dmsg-discovery";

/// A key or id field does not parse (INVALID_ARGUMENT; also a `google.rpc.BadRequest`).
pub const INVALID_FIELD: &str = "invalid_field";
/// A required message field is absent (INVALID_ARGUMENT).
pub const MISSING_FIELD: &str = "missing_field";
/// An entry or transport is malformed (INVALID_ARGUMENT).
pub const MALFORMED: &str = "malformed";
/// An entry is larger than the limit (INVALID_ARGUMENT).
pub const TOO_LARGE: &str = "too_large";
/// A signature does not verify for the key it claims (UNAUTHENTICATED).
pub const BAD_SIGNATURE: &str = "bad_signature";
/// A delete not signed by the entry's owner (PERMISSION_DENIED).
pub const NOT_OWNER: &str = "not_owner";
/// A deregistration signed by a key that is not an edge of the transport (PERMISSION_DENIED).
pub const NOT_AN_EDGE: &str = "not_an_edge";
/// A timestamp outside the window around discovery's clock (FAILED_PRECONDITION).
pub const CLOCK_SKEW: &str = "clock_skew";
/// A sequence not above the stored (or deleted) entry's (FAILED_PRECONDITION).
pub const STALE_SEQUENCE: &str = "stale_sequence";
/// A timestamp older than the stored entry's (FAILED_PRECONDITION).
pub const TIMESTAMP_BACKWARDS: &str = "timestamp_backwards";
/// A delete or deregistration older than what is stored (FAILED_PRECONDITION).
pub const STALE_DELETE: &str = "stale_delete";
/// A transport registration not newer than the stored registration or deregistration
/// (FAILED_PRECONDITION).
pub const STALE_REGISTRATION: &str = "stale_registration";
/// No live entry or transport (NOT_FOUND).
pub const NOT_FOUND: &str = "not_found";
/// A page token this server never issued (INVALID_ARGUMENT).
pub const BAD_PAGE_TOKEN: &str = "bad_page_token";
/// The store is unreachable, too slow, or its breaker is open (UNAVAILABLE: retry later).
pub const STORE_UNAVAILABLE: &str = "store_unavailable";
/// The store returned data that does not decode (INTERNAL).
pub const STORE_CORRUPT: &str = "store_corrupt";

/// Metadata key: the stored entry's sequence (decimal).
pub const STORED_SEQUENCE: &str = "stored_sequence";
/// Metadata key: the stored entry's or registration's timestamp (decimal ns).
pub const STORED_TIMESTAMP: &str = "stored_timestamp";

/// A discovery status: `code`, `message`, and an `ErrorInfo` of `reason` with `metadata`.
pub fn status(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: &[(&str, String)],
) -> tonic::Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    status_with_info(code, message, ERROR_DOMAIN, reason, metadata)
}

/// The status for a refused entry, transport or request: its code, its reason, and for a
/// stale sequence or timestamp the stored values a client resyncs from.
pub fn rejected_status(rejected: &Rejected) -> tonic::Status {
    let message = rejected.to_string();
    let stored = |sequence: u64, timestamp: i64| {
        [
            (STORED_SEQUENCE, sequence.to_string()),
            (STORED_TIMESTAMP, timestamp.to_string()),
        ]
    };
    match rejected {
        Rejected::Malformed(_) => status(Code::InvalidArgument, message, MALFORMED, &[]),
        Rejected::TooLarge { size, max } => status(
            Code::InvalidArgument,
            message,
            TOO_LARGE,
            &[("size", size.to_string()), ("max", max.to_string())],
        ),
        Rejected::BadSignature { owner } => status(
            Code::Unauthenticated,
            message,
            BAD_SIGNATURE,
            &[("key", owner.to_string())],
        ),
        Rejected::NotOwner(pk) => status(
            Code::PermissionDenied,
            message,
            NOT_OWNER,
            &[("key", pk.to_string())],
        ),
        Rejected::NotAnEdge { key, transport } => status(
            Code::PermissionDenied,
            message,
            NOT_AN_EDGE,
            &[
                ("key", key.to_string()),
                ("transport", hex::encode(transport)),
            ],
        ),
        Rejected::ClockSkew { timestamp, now } => status(
            Code::FailedPrecondition,
            message,
            CLOCK_SKEW,
            &[
                ("timestamp", timestamp.to_string()),
                ("now", now.to_string()),
            ],
        ),
        Rejected::StaleSequence {
            stored_sequence,
            stored_timestamp,
            ..
        } => status(
            Code::FailedPrecondition,
            message,
            STALE_SEQUENCE,
            &stored(*stored_sequence, *stored_timestamp),
        ),
        Rejected::TimestampBackwards {
            stored_sequence,
            stored_timestamp,
            ..
        } => status(
            Code::FailedPrecondition,
            message,
            TIMESTAMP_BACKWARDS,
            &stored(*stored_sequence, *stored_timestamp),
        ),
        Rejected::StaleRegistration {
            stored_timestamp, ..
        } => status(
            Code::FailedPrecondition,
            message,
            STALE_REGISTRATION,
            &[(STORED_TIMESTAMP, stored_timestamp.to_string())],
        ),
        Rejected::StaleDelete {
            stored_timestamp, ..
        } => status(
            Code::FailedPrecondition,
            message,
            STALE_DELETE,
            &[(STORED_TIMESTAMP, stored_timestamp.to_string())],
        ),
    }
}

/// The stored (sequence, timestamp) a stale-entry status carries, if `status` is one.
pub fn stored_of(status: &tonic::Status) -> Option<(u64, i64)> {
    let info = skywire_proto::status::error_info(status)?;
    if info.domain != ERROR_DOMAIN
        || !matches!(info.reason.as_str(), STALE_SEQUENCE | TIMESTAMP_BACKWARDS)
    {
        return None;
    }
    Some((
        info.metadata.get(STORED_SEQUENCE)?.parse().ok()?,
        info.metadata.get(STORED_TIMESTAMP)?.parse().ok()?,
    ))
}

/// The reason of a discovery status, if it has one.
pub fn reason_of(status: &tonic::Status) -> Option<String> {
    skywire_proto::status::reason_in(status, ERROR_DOMAIN)
}
