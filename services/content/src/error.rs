//! The content tier's error type, classified by HTTP status and retryability.

use journal::JournalError;
use uaprof_api::KeyError;

/// Why a content operation failed.
///
/// Rejections (everything but the store failures `Journal`, `Unavailable` and `Fault`) happen
/// before anything is written: a rejected change alters nothing (design invariant 6).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("{0}")]
    WrongKind(String),
    #[error("invalid document name {0:?} (1-128 of A-Z a-z 0-9 . _ -, not starting with '.')")]
    BadName(String),
    #[error("invalid content type {0:?} (expected type/subtype)")]
    BadContentType(String),
    #[error("document of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("{content_type} documents are only served for user and local-network keys, not {kind}")]
    TypeNotAllowed {
        content_type: String,
        kind: &'static str,
    },
    #[error(
        "the key already holds {max} documents (content.max_documents_per_key); delete one first"
    )]
    TooManyDocuments { max: usize },
    /// The store is at a configured or physical limit (`content.max_keys`,
    /// `content.max_stored_bytes`, Redis `maxmemory`); nothing was written.
    #[error("content store full: {0}")]
    StoreFull(String),
    #[error("malformed document: {0}")]
    Malformed(String),
    #[error("invalid default user: {0}")]
    BadDefaultUser(KeyError),
    #[error("invalid resync target: {0}")]
    BadResync(String),
    #[error("not found")]
    NotFound,
    /// The change names a version at or below the key's current one.
    #[error("version {requested} does not exceed the key's current version {current}")]
    Stale { current: u64, requested: u64 },
    #[error("invalid change id {0:?} (1-128 visible ASCII characters)")]
    BadChangeId(String),
    #[error("invalid content configuration: {0}")]
    Config(String),
    /// The store could not persist or read; retry later (another node may serve meanwhile).
    #[error("content store unavailable: {0}")]
    Journal(#[from] JournalError),
    /// The shared store (Redis) or the change log (Kafka) cannot be reached now; retry.
    #[error("content store unavailable: {0}")]
    Unavailable(String),
    /// The shared store answered something this build cannot use.
    #[error("content store fault: {0}")]
    Fault(String),
    /// This backend does not offer the operation (e.g. the change log of a Redis store).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ContentError {
    /// The HTTP status the provisioning API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadKey(_)
            | Self::WrongKind(_)
            | Self::BadName(_)
            | Self::BadDefaultUser(_)
            | Self::BadResync(_)
            | Self::BadChangeId(_) => 400,
            Self::BadContentType(_) => 415,
            Self::TooLarge { .. } => 413,
            Self::TypeNotAllowed { .. } | Self::Malformed(_) => 422,
            Self::NotFound => 404,
            Self::Stale { .. } | Self::TooManyDocuments { .. } => 409,
            Self::Config(_) | Self::Fault(_) => 500,
            Self::Unsupported(_) => 501,
            Self::StoreFull(_) => 507,
            Self::Journal(_) | Self::Unavailable(_) => 503,
        }
    }

    /// Whether repeating the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Journal(_) | Self::Unavailable(_))
    }

    /// Short label for the rejection metric and the dead-letter reason header.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadKey(_) | Self::WrongKind(_) => "bad_key",
            Self::BadName(_) => "bad_name",
            Self::BadContentType(_) => "bad_content_type",
            Self::TooLarge { .. } => "too_large",
            Self::TooManyDocuments { .. } => "too_many_documents",
            Self::StoreFull(_) => "store_full",
            Self::TypeNotAllowed { .. } => "type_not_allowed",
            Self::Malformed(_) => "malformed",
            Self::BadDefaultUser(_) => "bad_default_user",
            Self::BadResync(_) => "bad_resync",
            Self::NotFound => "not_found",
            Self::Stale { .. } => "version_not_increasing",
            Self::BadChangeId(_) => "bad_change_id",
            Self::Config(_) => "config",
            Self::Journal(_) | Self::Unavailable(_) | Self::Fault(_) => "store",
            Self::Unsupported(_) => "unsupported",
        }
    }
}
