//! The statuses discovery answers with (PROTOCOL.md §14.3), each carrying a
//! `google.rpc.ErrorInfo` (domain `dmsg-discovery`): entry refusals from
//! [`rejected_status`], store failures from [`store_status`], and the two plain answers.
//! Messages say what the caller did and what to do; store internals stay in the server's log.

use dmsg::reason::{self, status};
use tonic::Code;

use crate::store::StoreError;

pub use dmsg::reason::rejected_status;

/// The status for a store failure. A request the store can never serve is the caller's
/// (INVALID_ARGUMENT); an unreachable store is UNAVAILABLE; undecodable data is INTERNAL.
pub fn store_status(error: &StoreError) -> tonic::Status {
    match error {
        StoreError::BadRequest { message, reason } => {
            status(Code::InvalidArgument, message.clone(), reason, &[])
        }
        StoreError::Unavailable(_) => status(
            Code::Unavailable,
            "the entry store is unavailable right now; retry with backoff",
            reason::STORE_UNAVAILABLE,
            &[],
        ),
        StoreError::Corrupt(_) => status(
            Code::Internal,
            "the entry store holds data this server cannot decode (a server fault, not the \
             request's); operators: see the server log",
            reason::STORE_CORRUPT,
            &[],
        ),
    }
}

/// NOT_FOUND: no live `what` (e.g. "entry for <pk>").
pub fn not_found(what: impl std::fmt::Display) -> tonic::Status {
    status(Code::NotFound, format!("no {what}"), reason::NOT_FOUND, &[])
}

/// INVALID_ARGUMENT: `rpc` needs its `field`.
pub fn missing(rpc: &str, field: &str) -> tonic::Status {
    status(
        Code::InvalidArgument,
        format!("{rpc} needs {field}"),
        reason::MISSING_FIELD,
        &[("field", field.to_owned())],
    )
}
