//! Which call outcomes count as failures of the destination.

use std::fmt;
use std::sync::Arc;

use observability::rpc::RpcOutcome;
use tonic::Code;

/// Decides whether an outcome counts against the destination.
///
/// The default counts transport errors, non-gRPC HTTP errors that mean "unavailable" (429,
/// 502–504) and the codes UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED. Codes that
/// describe the request or the caller (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
/// FAILED_PRECONDITION, …) never count: a destination that answers them is up.
/// Cancellations are never passed to a policy.
#[derive(Clone)]
pub struct FailurePolicy {
    is_failure: Arc<dyn Fn(&RpcOutcome) -> bool + Send + Sync>,
}

/// The codes the default policy counts.
pub const DEFAULT_FAILURE_CODES: &[Code] = &[
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::ResourceExhausted,
];

impl Default for FailurePolicy {
    fn default() -> Self {
        Self::counting(DEFAULT_FAILURE_CODES)
    }
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FailurePolicy")
    }
}

impl FailurePolicy {
    /// Counts transport errors, unavailable-style HTTP errors and exactly these gRPC codes.
    pub fn counting(codes: &[Code]) -> Self {
        let codes = codes.to_vec();
        Self::custom(move |outcome| match outcome {
            RpcOutcome::Transport => true,
            RpcOutcome::Status(code) => codes.contains(code),
            RpcOutcome::Http(_) | RpcOutcome::MissingStatus => codes.contains(&outcome.code()),
            RpcOutcome::Cancelled => false,
        })
    }

    /// Any classification.
    pub fn custom(is_failure: impl Fn(&RpcOutcome) -> bool + Send + Sync + 'static) -> Self {
        Self {
            is_failure: Arc::new(is_failure),
        }
    }

    /// True if `outcome` counts against the destination.
    pub fn is_failure(&self, outcome: &RpcOutcome) -> bool {
        (self.is_failure)(outcome)
    }
}
