//! The content tier: profile documents, their versions, HTTP serving and provisioning.
//!
//! * `config`: [`ContentConfig`] (serde, validated at open).
//! * `error`: [`ContentError`], classified by HTTP status and retryability.
//! * `store`: the journaled state (documents, device attributes, per-key versions, the
//!   retained change log) and its ops; deterministic so replay rebuilds it exactly.
//! * `validate`: upload checks (names, content types, media-policy documents).
//! * `service`: [`ContentService`]: the write API (one journal commit per write, durable
//!   before it returns), reads, URL building, and the [`uaprof_api::ContentResolver`] impl.
//! * `feed`: [`InProcessFeed`], the embedded [`uaprof_api::ChangeSource`].
//! * `http`: [`serve`]: document GETs for phones and the provisioning API, on hyper.
//! * `telemetry`: metric names and [`describe_metrics`].

mod config;
mod error;
mod feed;
mod http;
mod service;
mod store;
mod telemetry;
mod validate;

pub use crate::config::{ContentConfig, MAX_DOCUMENT_BYTES_CEILING};
pub use crate::error::ContentError;
pub use crate::feed::InProcessFeed;
pub use crate::http::serve;
pub use crate::service::{ContentService, DocumentInfo, KeyListing, StoredDocument, WriteReceipt};
pub use crate::telemetry::describe_metrics;
pub use crate::validate::{MAX_NAME_LEN, POLICY_TYPES};
pub use journal::JournalOptions;
