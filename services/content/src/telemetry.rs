//! Metric names and their descriptions, in one place so dashboards can rely on them.

use metrics::{Unit, describe_counter, describe_gauge};

pub const HTTP_REQUESTS: &str = "content_http_requests_total";
pub const HTTP_CONNECTIONS_REFUSED: &str = "content_http_connections_refused_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "content_http_connections_open";
pub const DOCUMENTS_WRITTEN: &str = "content_documents_written_total";
pub const DOCUMENTS_DELETED: &str = "content_documents_deleted_total";
pub const KEYS_DELETED: &str = "content_keys_deleted_total";
pub const ATTRIBUTES_WRITTEN: &str = "content_device_attributes_written_total";
pub const WRITES_REJECTED: &str = "content_writes_rejected_total";
pub const DOCUMENT_BYTES_SERVED: &str = "content_document_bytes_served_total";

/// Registers descriptions for every metric this crate emits. Call once at start-up, after
/// installing the recorder.
pub fn describe_metrics() {
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
        DOCUMENTS_WRITTEN,
        "Profile documents created or replaced (durable)"
    );
    describe_counter!(DOCUMENTS_DELETED, "Profile documents deleted (durable)");
    describe_counter!(
        KEYS_DELETED,
        "Profile keys emptied by a key delete (durable)"
    );
    describe_counter!(
        ATTRIBUTES_WRITTEN,
        "Device attribute writes (default user), durable"
    );
    describe_counter!(
        WRITES_REJECTED,
        "Provisioning writes rejected before anything was stored, by reason"
    );
    describe_counter!(
        DOCUMENT_BYTES_SERVED,
        Unit::Bytes,
        "Document body bytes sent to phones"
    );
}
