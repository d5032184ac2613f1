//! Metric names and their descriptions, in one place so dashboards can rely on them.

use metrics::{describe_counter, describe_gauge};

/// Labels: `method` (`resolve`, `document_bytes`, `changes`) and `outcome` (see
/// [`describe_metrics`]).
pub const RPC_REQUESTS: &str = "content_rpc_requests_total";
pub const RPC_CHANGES_WAITING: &str = "content_rpc_changes_waiting";

pub const METHOD_RESOLVE: &str = "resolve";
pub const METHOD_DOCUMENT_BYTES: &str = "document_bytes";
pub const METHOD_CHANGES: &str = "changes";
pub const METHOD_CREDITS: &str = "credits";
pub const METHOD_PREWARM: &str = "prewarm";
pub const CREDIT_STREAMS: &str = "content_rpc_credit_streams";
pub const CREDIT_RECONNECTS: &str = "content_rpc_credit_reconnects_total";

/// Answered with data (a resolution, document bytes, or a non-empty batch of changes).
pub const OUTCOME_OK: &str = "ok";
/// `DocumentBytes` for a document that does not exist.
pub const OUTCOME_NOT_FOUND: &str = "not_found";
/// A long-poll that ended with no change (wait elapsed, or the server is shutting down).
pub const OUTCOME_EMPTY: &str = "empty";
/// A long-poll from a position that is no longer retained.
pub const OUTCOME_GAP: &str = "gap";
/// A request with an unparsable or non-canonical key or an unknown profile type.
pub const OUTCOME_INVALID_ARGUMENT: &str = "invalid_argument";
/// A long-poll refused because too many are already waiting.
pub const OUTCOME_OVERLOADED: &str = "overloaded";
/// Anything else (the content service went away under the request).
pub const OUTCOME_ERROR: &str = "error";

pub(crate) fn count(method: &'static str, outcome: &'static str) {
    metrics::counter!(RPC_REQUESTS, "method" => method, "outcome" => outcome).increment(1);
}

/// Registers descriptions for every metric this crate emits. Call once at start-up, after
/// installing the recorder.
pub fn describe_metrics() {
    describe_counter!(
        RPC_REQUESTS,
        "gRPC requests answered by the content tier, by method (resolve, document_bytes, \
         changes, credits) and outcome (ok, not_found, empty, gap, invalid_argument, \
         overloaded, error)"
    );
    describe_gauge!(
        CREDIT_STREAMS,
        "Notifier nodes drawing fetch credits from this content node"
    );
    describe_counter!(
        CREDIT_RECONNECTS,
        "Fetch credit streams a notifier node re-opened (it used its static rate meanwhile)"
    );
    describe_gauge!(
        RPC_CHANGES_WAITING,
        "Changes long-polls currently waiting for a change"
    );
}
