//! Error statuses in the standard gRPC error model: a `google.rpc.Status` in
//! `grpc-status-details-bin` holding a `google.rpc.ErrorInfo` (reason, domain, metadata), so
//! grpcurl and every gRPC library decode what a client needs to act on an error without
//! parsing its message.
//!
//! Reasons are stable lowercase snake_case words (`stale_sequence`, `breaker_open`); each
//! service names its domain (`dmsg-discovery`); metadata carries the facts (`stored_sequence`).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use tonic_types::ErrorInfo;

/// Domain of errors that are not one service's own (the codec, the shared middleware).
pub const ERROR_DOMAIN: &str = "skywire";

/// A status with `code`, `message` and an `ErrorInfo` of `reason` in `domain`.
pub fn status_with_info(
    code: Code,
    message: impl Into<String>,
    domain: &str,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, metadata),
    )
}

/// The `ErrorInfo` in `status`'s details, if it has one.
pub fn error_info(status: &Status) -> Option<ErrorInfo> {
    status.get_details_error_info()
}

/// The reason of `status`'s `ErrorInfo` if it is from `domain`.
pub fn reason_in(status: &Status, domain: &str) -> Option<String> {
    error_info(status)
        .filter(|info| info.domain == domain)
        .map(|info| info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server attaches is what any client decodes, through the standard
    /// `google.rpc.Status` encoding.
    #[test]
    fn error_info_round_trips_through_the_standard_details() {
        let status = status_with_info(
            Code::FailedPrecondition,
            "stale",
            "dmsg-discovery",
            "stale_sequence",
            HashMap::from([("stored_sequence".to_owned(), "5".to_owned())]),
        );
        let info = error_info(&status).unwrap();
        assert_eq!(info.reason, "stale_sequence");
        assert_eq!(info.metadata["stored_sequence"], "5");
        assert_eq!(
            reason_in(&status, "dmsg-discovery").as_deref(),
            Some("stale_sequence")
        );
        assert_eq!(reason_in(&status, "other"), None);
        let plain = Status::internal("no details");
        assert!(error_info(&plain).is_none());
    }
}
