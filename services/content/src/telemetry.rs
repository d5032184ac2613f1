//! Metric names and their descriptions, in one place so dashboards can rely on them.

use metrics::{Unit, describe_counter, describe_gauge};

pub const HTTP_REQUESTS: &str = "content_http_requests_total";
pub const HTTP_CONNECTIONS_REFUSED: &str = "content_http_connections_refused_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "content_http_connections_open";
pub const TLS_HANDSHAKE_FAILURES: &str = "content_tls_handshake_failures_total";
pub const CHANGES_APPLIED: &str = "content_changes_applied_total";
pub const CHANGES_DUPLICATE: &str = "content_changes_duplicate_total";
pub const CHANGES_AWAIT_TIMEOUT: &str = "content_changes_await_timeout_total";
pub const STORE_CAS_RETRIES: &str = "content_store_cas_retries_total";
pub const WRITES_REJECTED: &str = "content_writes_rejected_total";
pub const DOCUMENT_BYTES_SERVED: &str = "content_document_bytes_served_total";
pub const FETCHES_ADMITTED: &str = "content_fetches_admitted_total";
pub const FETCHES_REFUSED: &str = "content_fetches_refused_total";
pub const FETCHES_FORBIDDEN: &str = "content_fetches_forbidden_total";
pub const FETCH_AUTH: &str = "content_fetch_auth_total";
pub const HTTP3_CONNECTIONS: &str = "content_http3_connections_total";
pub const FETCHES_IN_FLIGHT: &str = "content_fetches_in_flight";
pub const FETCHES_IN_FLIGHT_PEAK: &str = "content_fetches_in_flight_peak";
pub const FETCH_SECONDS: &str = "content_fetch_seconds";
pub const FETCH_LATENCY_AVERAGE: &str = "content_fetch_latency_average_seconds";
pub const CREDIT_RATE: &str = "content_credit_rate";
pub const CREDITS_GRANTED: &str = "content_credits_granted_total";
pub const CACHE_LOOKUPS: &str = "content_cache_lookups_total";
pub const CACHE_BYTES: &str = "content_cache_bytes";
pub const PREWARMED: &str = "content_prewarmed_documents_total";
pub const STORE_KEYS: &str = "content_store_keys";
pub const PROVISION_AUDIT: &str = "content_provision_audit_total";
pub const STORE_TOMBSTONES: &str = "content_store_tombstones";
pub const STORE_DOCUMENT_BYTES: &str = "content_store_document_bytes";

/// Registers descriptions for every metric this crate emits. Call once at start-up, after
/// installing the recorder.
pub fn describe_metrics() {
    describe_counter!(
        CACHE_LOOKUPS,
        "Document fetches looked up in the in-memory cache (Redis backend), by outcome"
    );
    describe_gauge!(
        CACHE_BYTES,
        Unit::Bytes,
        "Document bytes held in the in-memory cache"
    );
    describe_counter!(
        PREWARMED,
        "Documents loaded into the cache because a notifier announced a fan-out"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered by the content tier, by route and status"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "HTTP connections closed on accept because max_connections were open"
    );
    describe_gauge!(HTTP_CONNECTIONS_OPEN, "HTTP connections currently open");
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "HTTPS connections closed because the TLS handshake failed or timed out"
    );
    describe_counter!(
        CHANGES_APPLIED,
        "Changes applied to the document store (durable), by operation"
    );
    describe_counter!(
        CHANGES_DUPLICATE,
        "Changes whose change id was applied before (replays, redeliveries); nothing changed"
    );
    describe_counter!(
        CHANGES_AWAIT_TIMEOUT,
        "Provisioning API writes answered 202 because the change log had not applied them \
         within apply_timeout"
    );
    describe_counter!(
        STORE_CAS_RETRIES,
        "Compare-and-set retries of a Redis document write (another node wrote the key)"
    );
    describe_counter!(
        WRITES_REJECTED,
        "Changes rejected before anything was stored, by reason"
    );
    describe_counter!(
        DOCUMENT_BYTES_SERVED,
        Unit::Bytes,
        "Document body bytes sent to phones"
    );
    describe_counter!(
        FETCHES_ADMITTED,
        "Document fetches admitted under max_fetch_rate"
    );
    describe_counter!(
        FETCHES_REFUSED,
        "Document fetches refused with 503 because max_fetch_rate was reached"
    );
    describe_counter!(
        FETCHES_FORBIDDEN,
        "Document fetches refused with 403 because the URL's signature was missing, wrong or \
         expired, by reason"
    );
    describe_counter!(
        FETCH_AUTH,
        "Client authentication of document fetches (content.fetch_auth), by result: ok, \
         forbidden, no_certificate, or why Digest credentials did not pass"
    );
    describe_counter!(
        HTTP3_CONNECTIONS,
        "HTTP/3 (QUIC) connections, by outcome: accepted, refused (max_connections), failed"
    );
    describe_gauge!(FETCHES_IN_FLIGHT, "Document fetches being served");
    describe_gauge!(
        FETCHES_IN_FLIGHT_PEAK,
        "Most document fetches served at once since the node started"
    );
    metrics::describe_histogram!(
        FETCH_SECONDS,
        Unit::Seconds,
        "Time to serve one document fetch"
    );
    describe_gauge!(
        FETCH_LATENCY_AVERAGE,
        Unit::Seconds,
        "Moving average of the fetch latency the grant rate adapts to"
    );
    describe_gauge!(
        CREDIT_RATE,
        "Fetch credits per second granted to the notifiers"
    );
    describe_counter!(CREDITS_GRANTED, "Fetch credits granted to the notifiers");
    describe_counter!(
        PROVISION_AUDIT,
        "Provisioning API writes and refusals, by provisioner (token name) and outcome \
         (written, rejected, unauthenticated, forbidden, read_failed)"
    );
    describe_gauge!(
        STORE_KEYS,
        "Keys with a document or default user in the embedded store (limit content.max_keys)"
    );
    describe_gauge!(
        STORE_TOMBSTONES,
        "Deleted keys the embedded store still remembers (until their delete leaves the \
         retained change log)"
    );
    describe_gauge!(
        STORE_DOCUMENT_BYTES,
        Unit::Bytes,
        "Document bytes held by the embedded store (limit content.max_stored_bytes)"
    );
}
