//! Entry refusals as gRPC statuses (PROTOCOL.md §14.3): the code for each refusal and, for a
//! stale sequence or timestamp, the stored values a client resyncs from.

use std::collections::HashMap;

use dmsg::discovery::{
    ERROR_DOMAIN, REASON_STALE_SEQUENCE, REASON_TIMESTAMP_BACKWARDS, STORED_SEQUENCE,
    STORED_TIMESTAMP,
};
use dmsg::entry::Rejected;
use prost::Message;
use skywire_proto::skywire::common::v1::ErrorDetail;
use tonic::Code;

/// Builds the status for a refused entry, with the stored sequence in its details when that
/// is what the client needs to resync (PROTOCOL.md §14.3).
pub fn rejected_status(rejected: &Rejected) -> tonic::Status {
    let message = rejected.to_string();
    match rejected {
        Rejected::Malformed(_) | Rejected::TooLarge { .. } => {
            tonic::Status::invalid_argument(message)
        }
        Rejected::BadSignature { .. } => tonic::Status::unauthenticated(message),
        Rejected::NotOwner(_) => tonic::Status::permission_denied(message),
        Rejected::ClockSkew { .. } => tonic::Status::failed_precondition(message),
        Rejected::StaleSequence {
            stored_sequence,
            stored_timestamp,
            ..
        }
        | Rejected::TimestampBackwards {
            stored_sequence,
            stored_timestamp,
            ..
        } => {
            let reason = if matches!(rejected, Rejected::StaleSequence { .. }) {
                REASON_STALE_SEQUENCE
            } else {
                REASON_TIMESTAMP_BACKWARDS
            };
            let detail = ErrorDetail {
                reason: reason.into(),
                domain: ERROR_DOMAIN.into(),
                metadata: HashMap::from([
                    (STORED_SEQUENCE.to_owned(), stored_sequence.to_string()),
                    (STORED_TIMESTAMP.to_owned(), stored_timestamp.to_string()),
                ]),
            };
            tonic::Status::with_details(
                Code::FailedPrecondition,
                message,
                detail.encode_to_vec().into(),
            )
        }
        // A refusal added later: the request is at fault until it gets its own code.
        _ => tonic::Status::invalid_argument(message),
    }
}
