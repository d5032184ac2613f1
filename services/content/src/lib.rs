//! The content tier: profile documents, their versions, HTTP serving and provisioning.
//!
//! * `config`: [`ContentConfig`] (serde, validated at open).
//! * `error`: [`ContentError`], classified by HTTP status and retryability.
//! * `model`: a key's metadata and [`model::apply`], the one rule by which a change alters
//!   it (idempotent by change id, versions only go up); shared by both backends.
//! * `store`: the embedded backend's journaled state (metadata, bytes, the retained change
//!   log) and its ops; deterministic so replay rebuilds it exactly.
//! * `redis_docs`: the Redis backend, shared by every content node of a tier.
//! * `doc_cache`: document bytes in memory on Redis-backed nodes, validated by hash; prewarm.
//! * `admission`: [`FetchAdmission`]: the fetch ceiling, fetch measurements, and the rate
//!   of fetch credits granted to the notifiers.
//! * `validate`: upload checks (names, content types, media-policy documents).
//! * `service`: [`ContentService`]: validation, the write path (applied directly, or
//!   through a [`ChangeLog`] such as the Kafka change topic and awaited), reads, URL
//!   building, and the [`uaprof_api::ContentResolver`] impl.
//! * `feed`: [`InProcessFeed`], the embedded [`uaprof_api::ChangeSource`].
//! * `http`: [`serve`]: document GETs for phones; [`serve_provisioning`]: the provisioning
//!   API on a listener of its own, on hyper.
//! * `signing`: signed, expiring document URLs (HMAC-SHA256, key rotation).
//! * `access`: [`Access`]: the provisioning API's bearer tokens and key patterns.
//! * `telemetry`: metric names and [`describe_metrics`].

mod access;
mod admission;
mod config;
mod doc_cache;
mod error;
mod feed;
mod fetch_auth;
mod http;
mod http3;
mod model;
mod redis_docs;
mod service;
mod signing;
mod store;
mod telemetry;
mod tls;
mod validate;

pub use crate::access::{Access, Intent, ProvisioningConfig, Refusal, TokenConfig};
pub use crate::admission::{FetchAdmission, FetchGuard};
pub use crate::config::{ContentConfig, MAX_DOCUMENT_BYTES_CEILING, StoreKind};
pub use crate::error::ContentError;
pub use crate::feed::InProcessFeed;
pub use crate::fetch_auth::{FetchAuthConfig, FetchDigestConfig, PeerCert};
pub use crate::http::{
    DeviceAttributes, HttpListener, parse_device_attributes, serve, serve_provisioning,
};
pub use crate::http3::{Http3Listener, serve_http3};
pub use crate::service::{
    ChangeLog, ContentService, DocumentInfo, KeyListing, PROVISIONING_API, StoredDocument,
    WriteReceipt, WriteStatus, new_change_id,
};
pub use crate::signing::read_secret;
pub use crate::telemetry::describe_metrics;
pub use crate::tls::TlsConfig;
pub use crate::validate::{MAX_NAME_LEN, POLICY_TYPES};
pub use journal::JournalOptions;
pub use redis_conn::RedisConfig;

/// Serialises `Bytes` as one byte string (postcard: length + raw bytes) instead of serde's
/// default of a sequence of individually encoded integers.
pub(crate) mod bytes_serde {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Bytes::from(v))
        }
    }
}
