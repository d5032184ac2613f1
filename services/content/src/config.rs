//! Configuration of the content tier.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ContentError;
use crate::fetch_auth::FetchAuthConfig;

/// Largest document size an operator may configure: documents live in memory and in the
/// journal, and a profile document is a few KiB to a few hundred KiB in practice.
pub const MAX_DOCUMENT_BYTES_CEILING: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    /// Scheme, host and optional path prefix of the document URLs put into NOTIFYs, as the
    /// phones reach this tier (e.g. `https://profiles.example.net`). No trailing slash needed.
    pub public_base_url: String,
    /// How long a URL handed out by a resolve is promised to keep serving the content
    /// (RFC 4483 `expiration`), e.g. `7d`.
    #[serde(with = "humantime_serde")]
    pub url_lifetime: Duration,
    /// Files holding the secrets that sign document URLs (one secret a file, at least 32
    /// bytes). With any, every URL carries its expiry (`url_lifetime`) and an HMAC, and a
    /// fetch without a valid, unexpired signature gets 403. The first signs; all verify, so a
    /// new key goes first while the old one stays for `url_lifetime`. Empty: URLs unsigned.
    pub url_signing_key_files: Vec<PathBuf>,
    /// Largest accepted document body; larger uploads get 413.
    pub max_document_bytes: usize,
    /// Documents one key may hold; a PUT of one more is refused (409) and changes nothing,
    /// so a runaway provisioner cannot grow a key (and every NOTIFY for it) without end.
    pub max_documents_per_key: usize,
    /// Keys (devices, users, classes, ...) holding a document or a default user that the
    /// embedded store accepts; a write that would add one more is refused (507) and changes
    /// nothing. Documents live in the node's memory. The Redis store is bounded by Redis
    /// (`maxmemory`; a write it refuses is a 507 too).
    pub max_keys: u64,
    /// Document bytes the embedded store holds at most, across all keys; a PUT that would
    /// pass it is refused (507) and changes nothing.
    pub max_stored_bytes: u64,
    /// Redis store: how long a deleted key's tombstone (its version and recent change ids)
    /// is kept. The embedded store keeps a tombstone while its deleting change is among the
    /// `change_log_retention` retained changes. In both, versions stay increasing after a
    /// tombstone is forgotten (see "How a change flows" in the README).
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// How many changes the in-process change feed retains for consumers to resume from; a
    /// consumer further behind gets a gap and reconciles.
    pub change_log_retention: usize,
    /// Concurrent HTTP connections; connections beyond it are closed at once and counted.
    pub max_connections: usize,
    /// Right-hand side of every `Content-ID` (RFC 2392 wants it globally unique, so use a
    /// domain this deployment owns).
    pub host_for_content_id: String,
    /// Where documents live: `journal` (this node's data directory; one content node),
    /// `redis` (shared by every content node of a tier; needs `[redis]` and `[kafka]`), or
    /// `auto`: `redis` when both are configured, else `journal`.
    pub store: StoreKind,
    /// With Kafka, how long a provisioning API write waits for the tier to apply its change
    /// before answering `202 Accepted` instead of `200`/`201`.
    #[serde(with = "humantime_serde")]
    pub apply_timeout: Duration,
    /// Document fetches per second this node admits at most; beyond it phones get 503 with
    /// a randomised Retry-After. The notifiers are granted fetch credits at this rate (less
    /// while fetches are slower than `fetch_latency_target`), so NOTIFYs that cause fetches
    /// are paced to it. Unset: no ceiling and no pacing.
    pub max_fetch_rate: Option<u32>,
    /// Average fetch latency above which the grant rate is lowered.
    #[serde(with = "humantime_serde")]
    pub fetch_latency_target: Duration,
    /// Memory for document bytes cached on a node whose documents live in Redis (fetches
    /// then read only the small metadata from Redis; prewarm fills it ahead of a fan-out).
    /// 0 turns the cache off.
    pub cache_bytes: usize,
    /// Client authentication of document fetches (certificates, Digest); off by default.
    pub fetch_auth: FetchAuthConfig,
}

/// The document store a content node uses (`content.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    #[default]
    Auto,
    Journal,
    Redis,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".into(),
            // A week outlives any realistic gap between a NOTIFY and the phone's fetch, even
            // for a phone that was powered off over a weekend.
            url_lifetime: Duration::from_secs(7 * 24 * 3600),
            url_signing_key_files: Vec::new(),
            // 1 MiB: an order of magnitude above the largest phone configuration files.
            max_document_bytes: 1 << 20,
            max_documents_per_key: 64,
            // A metro-sized fleet (ten million phones with a user each) on one node.
            max_keys: 20_000_000,
            // 4 GiB: a few hundred thousand class documents of 10 KiB plus a profile per
            // device, well within the memory of a content node.
            max_stored_bytes: 4 << 30,
            // A month: far longer than Kafka redelivers a change or an OSS retries one.
            tombstone_ttl: Duration::from_secs(30 * 24 * 3600),
            // About 16 bytes per entry, so 16 MiB of memory for hours of heavy provisioning.
            change_log_retention: 1_000_000,
            // Each connection costs a task and buffers; 4096 keeps memory bounded while a
            // power-up avalanche is paced by admission credits, not by this limit.
            max_connections: 4096,
            host_for_content_id: "profiles.invalid".into(),
            store: StoreKind::Auto,
            // A change normally applies within milliseconds; seconds mean a broker or the
            // content tier is struggling, and the caller should learn that it is queued.
            apply_timeout: Duration::from_secs(10),
            max_fetch_rate: None,
            // Phones wait seconds for a document without complaint; a quarter second keeps
            // a margin before queues form at the servers.
            fetch_latency_target: Duration::from_millis(250),
            // Hundreds of class and firmware documents; a city's device documents are
            // fetched once each and gain nothing from it.
            cache_bytes: 64 << 20,
            fetch_auth: FetchAuthConfig::default(),
        }
    }
}

impl ContentConfig {
    /// Checks values serde cannot express; called by [`crate::ContentService::open`].
    pub fn validate(&self) -> Result<(), ContentError> {
        let bad = |m: String| Err(ContentError::Config(m));
        let base = self.public_base_url.trim_end_matches('/');
        let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
        if !scheme_ok || base.contains(['?', '#', ' ']) {
            return bad(format!(
                "public_base_url {:?} must be an http(s) URL without query",
                self.public_base_url
            ));
        }
        if self.url_lifetime.as_secs() == 0 {
            return bad("url_lifetime must be at least 1s".into());
        }
        crate::signing::UrlSigner::load(&self.url_signing_key_files)
            .map_err(ContentError::Config)?;
        crate::fetch_auth::FetchAuth::load(&self.fetch_auth).map_err(ContentError::Config)?;
        if self.max_document_bytes == 0 || self.max_document_bytes > MAX_DOCUMENT_BYTES_CEILING {
            return bad(format!(
                "max_document_bytes must be 1..={MAX_DOCUMENT_BYTES_CEILING}"
            ));
        }
        if self.max_documents_per_key == 0 {
            return bad("max_documents_per_key must be at least 1".into());
        }
        if self.max_keys == 0 || self.max_stored_bytes == 0 {
            return bad("max_keys and max_stored_bytes must be at least 1".into());
        }
        if self.tombstone_ttl.as_secs() == 0 {
            return bad("tombstone_ttl must be at least 1s".into());
        }
        if self.change_log_retention == 0 {
            return bad("change_log_retention must be at least 1".into());
        }
        if self.max_fetch_rate == Some(0) {
            return bad("max_fetch_rate must be positive (leave it unset for no ceiling)".into());
        }
        if self.apply_timeout.is_zero() {
            return bad("apply_timeout must be positive".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        let host_ok = !self.host_for_content_id.is_empty()
            && self
                .host_for_content_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
        if !host_ok {
            return bad(format!(
                "host_for_content_id {:?} must be a domain name",
                self.host_for_content_id
            ));
        }
        Ok(())
    }
}
