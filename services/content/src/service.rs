//! [`ContentService`]: validation, the write path (direct, or through the change log), reads,
//! URL building and the [`uaprof_api::ContentResolver`] impl, over either backend.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use journal::{Journal, JournalOptions};
use redis_conn::{Conn, RedisConfig};
use sha1::{Digest, Sha1};
use tokio::sync::watch;
use uaprof_api::change::valid_change_id;
use uaprof_api::resync::ShownResyncTarget;
use uaprof_api::{
    Change, ChangeOp, ContentResolver, DocumentRef, FeedError, ProfileChange, ProfileKey,
    ProfileType, Resolution, ResolveError, ResolveRequest, ResyncTarget, Timing,
};

use crate::admission::FetchAdmission;
use crate::config::ContentConfig;
use crate::doc_cache::DocCache;
use crate::error::ContentError;
use crate::fetch_auth::FetchAuth;
use crate::model::{Decision, DocMeta, KeyMeta, Prepared, PreparedOp};
use crate::redis_docs::RedisDocs;
use crate::signing::UrlSigner;
use crate::store::{ApplyError, Op, Store};
use crate::telemetry as m;
use crate::validate;

/// The producer name of changes made through the provisioning API.
pub const PROVISIONING_API: &str = "provisioning-api";

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WriteStatus {
    /// Durable and visible to resolves and fetches on every content node.
    Applied,
    /// The change id was applied before; nothing changed this time.
    Duplicate,
    /// Handed to the change log, but not applied within `apply_timeout`; it will be.
    Accepted,
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteReceipt {
    pub change_id: String,
    pub status: WriteStatus,
    pub key: ProfileKey,
    /// The document written or deleted; `None` for key-level writes.
    pub name: Option<String>,
    /// Position of this write in the embedded change feed (the journal backend only).
    pub seq: Option<u64>,
    /// The key's version after the write (unknown while only accepted).
    pub version: Option<u64>,
    /// The document (or, for attributes, the key) did not exist before.
    pub created: bool,
    /// For document uploads: hash, size and Content-ID of the stored bytes.
    pub sha1_hex: Option<String>,
    pub size: Option<u64>,
    pub content_id: Option<String>,
    /// `effective-by` the NOTIFYs of this change carry, and the window they are spread over.
    pub effective_by: Option<u32>,
    pub rollout_window: Option<u32>,
}

/// A stored document as served over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredDocument {
    pub owner: ProfileKey,
    pub name: String,
    pub content_type: String,
    pub bytes: Bytes,
    pub sha1_hex: String,
    /// The owner's version when this document was last written.
    pub version: u64,
    pub content_id: String,
    pub updated_unix: u64,
}

/// Metadata of one document in a key listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DocumentInfo {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha1: String,
    pub version: u64,
    pub content_id: String,
    pub url: String,
    pub updated_unix: u64,
}

/// Everything stored under one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct KeyListing {
    pub key: String,
    pub kind: &'static str,
    pub id: String,
    pub version: u64,
    pub documents: Vec<DocumentInfo>,
    pub default_user: Option<String>,
    /// The device's resync target, without its password.
    pub resync: Option<ShownResyncTarget>,
}

/// Where changes go instead of being applied in this process: the change topic. The content
/// tier's consumer of that topic applies them (on whichever node owns the partition) and
/// [`ContentService::submit`] waits for the outcome in the shared store.
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// Appends the change durably (the broker acknowledged it).
    async fn append(&self, change: &Change) -> Result<(), String>;
}

enum Backend {
    /// The embedded journal: this process owns every document.
    Journal(Journal<Store>),
    /// Redis: every content node of a tier shares the documents.
    Redis(RedisDocs),
}

/// The content tier: owns documents and their versions and composes what a subscriber gets.
pub struct ContentService {
    backend: Backend,
    config: ContentConfig,
    base_url: String,
    /// Highest seq whose write is durable and applied (journal backend); feeds wait on it.
    last_seq: watch::Sender<u64>,
    /// Set when writes go through the change topic instead of straight to the backend.
    log: OnceLock<Arc<dyn ChangeLog>>,
    admission: Arc<FetchAdmission>,
    /// Document bytes in memory (Redis backend with `cache_bytes` > 0).
    cache: Option<DocCache>,
    /// Signs document URLs (`url_signing_key_files`).
    signer: Option<UrlSigner>,
    fetch_auth: Option<FetchAuth>,
}

impl std::fmt::Debug for ContentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Journal(_) => "journal",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("ContentService")
            .field("backend", &backend)
            .field("config", &self.config)
            .field("last_seq", &*self.last_seq.borrow())
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh change id (a random UUID, version 4) for writes made through the API.
pub fn new_change_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(
        [
            &b[..6],
            &[(b[6] & 0x0f) | 0x40],
            &b[7..8],
            &[(b[8] & 0x3f) | 0x80],
            &b[9..],
        ]
        .concat(),
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The embedded store's size gauges.
fn record_store_size(j: &Journal<Store>) {
    let (keys, tombstones, bytes) = j.read(|s| (s.live_keys(), s.tombstones(), s.doc_bytes()));
    metrics::gauge!(m::STORE_KEYS).set(keys as f64);
    metrics::gauge!(m::STORE_TOMBSTONES).set(tombstones as f64);
    metrics::gauge!(m::STORE_DOCUMENT_BYTES).set(bytes as f64);
}

impl ContentService {
    /// Opens (or creates) the embedded store in `dir`. Blocks while the journal replays.
    pub fn open(
        dir: &Path,
        config: ContentConfig,
        journal_opts: JournalOptions,
    ) -> Result<Arc<Self>, ContentError> {
        config.validate()?;
        let journal = Journal::<Store>::open(dir, journal_opts)?;
        let retention = config.change_log_retention as u64;
        if journal.read(|s| s.retention()) != retention {
            journal.commit_blocking(vec![Op::SetRetention(retention)])?;
        }
        let last_seq = journal.read(|s| s.last_seq());
        record_store_size(&journal);
        Ok(Arc::new(Self::with_backend(
            Backend::Journal(journal),
            config,
            last_seq,
        )?))
    }

    /// Connects to the documents every content node of a tier shares in Redis.
    pub async fn open_redis(
        redis: &RedisConfig,
        config: ContentConfig,
    ) -> Result<Arc<Self>, ContentError> {
        config.validate()?;
        redis.validate().map_err(ContentError::Config)?;
        let conn = Conn::connect(redis)
            .await
            .map_err(|e| ContentError::Unavailable(format!("redis: {e}")))?;
        let docs = RedisDocs::new(conn, &redis.prefix, config.tombstone_ttl);
        Ok(Arc::new(Self::with_backend(
            Backend::Redis(docs),
            config,
            0,
        )?))
    }

    fn with_backend(
        backend: Backend,
        config: ContentConfig,
        last_seq: u64,
    ) -> Result<Self, ContentError> {
        let signer =
            UrlSigner::load(&config.url_signing_key_files).map_err(ContentError::Config)?;
        let fetch_auth = FetchAuth::load(&config.fetch_auth).map_err(ContentError::Config)?;
        let base_url = config.public_base_url.trim_end_matches('/').to_owned();
        let admission = Arc::new(FetchAdmission::new(
            config.max_fetch_rate,
            config.fetch_latency_target,
        ));
        let cache = (matches!(backend, Backend::Redis(_)) && config.cache_bytes > 0)
            .then(|| DocCache::new(config.cache_bytes));
        Ok(Self {
            backend,
            config,
            base_url,
            last_seq: watch::Sender::new(last_seq),
            log: OnceLock::new(),
            admission,
            cache,
            signer,
            fetch_auth,
        })
    }

    /// Authenticates fetches, when `content.fetch_auth` asks for it.
    pub(crate) fn fetch_auth(&self) -> Option<&FetchAuth> {
        self.fetch_auth.as_ref()
    }

    /// The default user of a device, if it has one.
    pub async fn default_user(&self, key: &ProfileKey) -> Result<Option<String>, ContentError> {
        Ok(self.meta(key).await?.and_then(|m| m.default_user))
    }

    /// Signs URLs, when keys are configured.
    pub(crate) fn signer(&self) -> Option<&UrlSigner> {
        self.signer.as_ref()
    }

    /// The fetch ceiling and the credits it grants (the in-process notifier's source).
    pub fn admission(&self) -> &Arc<FetchAdmission> {
        &self.admission
    }

    pub fn config(&self) -> &ContentConfig {
        &self.config
    }

    /// Whether the documents live in a store shared by several content nodes.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Routes every later [`Self::submit`] through `log` (the change topic). Returns false if
    /// a log was set already.
    pub fn set_change_log(&self, log: Arc<dyn ChangeLog>) -> bool {
        self.log.set(log).is_ok()
    }

    pub fn journal_stats(&self) -> Option<journal::JournalStats> {
        match &self.backend {
            Backend::Journal(j) => Some(j.stats()),
            Backend::Redis(_) => None,
        }
    }

    /// Writes a snapshot (call on clean shutdown so the next start replays little).
    pub fn snapshot(&self) -> Result<(), ContentError> {
        match &self.backend {
            Backend::Journal(j) => Ok(j.snapshot_now()?),
            Backend::Redis(_) => Ok(()),
        }
    }

    /// Checks a change and computes everything applying it needs (hashes, Content-ID), so
    /// that applying is deterministic. Nothing is written.
    fn prepare(&self, change: &Change) -> Result<Prepared, ContentError> {
        let key = &change.key;
        if !valid_change_id(&change.change_id) {
            return Err(ContentError::BadChangeId(change.change_id.clone()));
        }
        validate::validate_key(key)?;
        let op = match &change.op {
            ChangeOp::PutDocument {
                name,
                content_type,
                bytes,
            } => {
                let (content_type, sha1_hex, content_id) =
                    self.check_document(key, name, content_type, bytes)?;
                PreparedOp::Put {
                    name: name.clone(),
                    content_type,
                    bytes: bytes.clone(),
                    sha1_hex,
                    content_id,
                }
            }
            ChangeOp::DeleteDocument { name } => {
                validate::validate_name(name)?;
                PreparedOp::DeleteDoc { name: name.clone() }
            }
            ChangeOp::DeleteKey => PreparedOp::DeleteKey,
            ChangeOp::SetDefaultUser(user) => {
                device_only(key, "a default user")?;
                PreparedOp::SetDefaultUser(default_user(user.as_deref())?)
            }
            ChangeOp::SetResync(target) => {
                device_only(key, "a resync target")?;
                PreparedOp::SetResync(resync_target(target.as_ref())?)
            }
            ChangeOp::SetAttributes {
                default_user: user,
                resync,
            } => {
                device_only(key, "device attributes")?;
                PreparedOp::SetAttributes {
                    default_user: default_user(user.as_deref())?,
                    resync: resync_target(resync.as_ref())?,
                }
            }
        };
        let now_unix = match change.occurred_unix_ms {
            0 => unix_now(),
            ms => ms / 1000,
        };
        Ok(Prepared {
            change_id: change.change_id.clone(),
            key: key.clone(),
            version: change.version,
            op,
            effective_by: change.timing.effective_by,
            rollout_window: change.timing.rollout_window,
            now_unix,
        })
    }

    fn check_document(
        &self,
        key: &ProfileKey,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(String, String, String), ContentError> {
        validate::validate_name(name)?;
        let content_type = validate::normalize_content_type(content_type)?;
        if bytes.len() > self.config.max_document_bytes {
            return Err(ContentError::TooLarge {
                size: bytes.len(),
                max: self.config.max_document_bytes,
            });
        }
        validate::check_policy_document(key, &content_type, bytes)?;
        let sha1_hex = hex::encode(Sha1::digest(bytes));
        // Stable while the bytes are unchanged (re-uploads keep it), new when they change;
        // the owner/name part keeps two documents with identical bytes (a device and its
        // class, say) from sharing one Content-ID inside one multipart NOTIFY.
        let mut h = Sha1::new();
        h.update(key.to_string().as_bytes());
        h.update([0u8]);
        h.update(name.as_bytes());
        let owner_tag = hex::encode(&h.finalize()[..4]);
        let content_id = format!(
            "{}.{}@{}",
            &sha1_hex[..16],
            owner_tag,
            self.config.host_for_content_id
        );
        Ok((content_type, sha1_hex, content_id))
    }

    /// Validates and applies one change to the backend: durable and visible to resolves and
    /// fetches on return. This is what the change topic's consumer calls.
    pub async fn apply(&self, change: &Change) -> Result<WriteReceipt, ContentError> {
        let prepared = self.rejected(self.prepare(change))?;
        self.rejected(self.check_room(&prepared).await)?;
        self.apply_prepared(prepared).await
    }

    async fn apply_prepared(&self, p: Prepared) -> Result<WriteReceipt, ContentError> {
        let mut receipt = receipt_for(&p);
        let (decision, seq) = match &self.backend {
            Backend::Journal(j) => {
                let outcome = j
                    .commit(vec![Op::Apply(Box::new(p.clone()))])
                    .await?
                    .pop()
                    .ok_or(ContentError::Journal(journal::JournalError::Closed))?
                    .map_err(|ApplyError::TooManyKeys| {
                        ContentError::Config("key table full (2^32 keys)".into())
                    })?;
                record_store_size(j);
                (outcome.decision, Some(outcome.seq))
            }
            Backend::Redis(r) => (r.apply(&p).await?, None),
        };
        match decision {
            Decision::Applied {
                version, created, ..
            } => {
                if let Some(seq) = seq {
                    self.publish(seq);
                }
                metrics::counter!(m::CHANGES_APPLIED, "op" => op_label(&p.op)).increment(1);
                tracing::info!(key = %p.key, change_id = p.change_id, version, ?seq, op = op_label(&p.op), "change applied");
                receipt.status = WriteStatus::Applied;
                receipt.seq = seq;
                receipt.version = Some(version);
                receipt.created = created;
                Ok(receipt)
            }
            Decision::Duplicate { version } => {
                metrics::counter!(m::CHANGES_DUPLICATE).increment(1);
                tracing::debug!(key = %p.key, change_id = p.change_id, version, "change applied before");
                receipt.status = WriteStatus::Duplicate;
                receipt.version = Some(version);
                Ok(receipt)
            }
            Decision::Stale { current, requested } => {
                self.rejected(Err(ContentError::Stale { current, requested }))
            }
            Decision::NotFound => self.rejected(Err(ContentError::NotFound)),
        }
    }

    /// Refuses a new document on a key that holds `max_documents_per_key` already, and (on
    /// the embedded store) a write past `max_keys` or `max_stored_bytes`. Checked against the
    /// current state before the write rather than inside `model::apply`, so a journal written
    /// before a limit (or under a higher one) still replays as it was acknowledged;
    /// concurrent writers may overshoot by their number.
    async fn check_room(&self, p: &Prepared) -> Result<(), ContentError> {
        let (name, size) = match &p.op {
            PreparedOp::Put { name, bytes, .. } => (Some(name), bytes.len() as u64),
            PreparedOp::SetDefaultUser(Some(_)) | PreparedOp::SetResync(Some(_)) => (None, 0),
            PreparedOp::SetAttributes {
                default_user,
                resync,
            } if default_user.is_some() || resync.is_some() => (None, 0),
            _ => return Ok(()),
        };
        let meta = self.meta(&p.key).await?;
        let max = self.config.max_documents_per_key;
        if let (Some(name), Some(m)) = (name, &meta)
            && m.docs.len() >= max
            && !m.docs.contains_key(name)
        {
            return Err(ContentError::TooManyDocuments { max });
        }
        let Backend::Journal(j) = &self.backend else {
            return Ok(());
        };
        let (keys, held) = j.read(|s| (s.live_keys(), s.doc_bytes()));
        let adds_key = !meta.as_ref().is_some_and(KeyMeta::is_live);
        if adds_key && keys >= self.config.max_keys {
            return Err(ContentError::StoreFull(format!(
                "{keys} keys held, content.max_keys is {}",
                self.config.max_keys
            )));
        }
        let replaced = name
            .and_then(|n| meta.as_ref()?.docs.get(n))
            .map_or(0, |d| d.size);
        let after = (held - replaced.min(held)).saturating_add(size);
        if after > self.config.max_stored_bytes {
            return Err(ContentError::StoreFull(format!(
                "{held} document bytes held, {size} more would pass content.max_stored_bytes {}",
                self.config.max_stored_bytes
            )));
        }
        Ok(())
    }

    fn publish(&self, seq: u64) {
        self.last_seq.send_if_modified(|v| {
            // Concurrent committers may publish out of order; the value only grows.
            let grew = seq > *v;
            if grew {
                *v = seq;
            }
            grew
        });
    }

    /// The provisioning API's write: validated here, then applied directly, or — when a
    /// change log is set — appended to it and awaited until the tier has applied it (at most
    /// `apply_timeout`, after which the receipt says [`WriteStatus::Accepted`]).
    pub async fn submit(&self, change: Change) -> Result<WriteReceipt, ContentError> {
        let prepared = self.rejected(self.prepare(&change))?;
        self.rejected(self.check_room(&prepared).await)?;
        let Some(log) = self.log.get() else {
            return self.apply_prepared(prepared).await;
        };
        // Refuse what cannot apply now (deleting what is not there) before it enters the log.
        let current = self.meta(&prepared.key).await?;
        let exists = |name: &str| current.as_ref().is_some_and(|m| m.docs.contains_key(name));
        let created = match &prepared.op {
            PreparedOp::DeleteDoc { name } if !exists(name) => {
                return self.rejected(Err(ContentError::NotFound));
            }
            PreparedOp::DeleteKey if !current.as_ref().is_some_and(KeyMeta::is_live) => {
                return self.rejected(Err(ContentError::NotFound));
            }
            PreparedOp::Put { name, .. } => !exists(name),
            PreparedOp::SetDefaultUser(_)
            | PreparedOp::SetResync(_)
            | PreparedOp::SetAttributes { .. } => !current.as_ref().is_some_and(KeyMeta::is_live),
            _ => false,
        };
        if let Err(e) = log.append(&change).await {
            return self.rejected(Err(ContentError::Unavailable(e)));
        }
        let mut receipt = receipt_for(&prepared);
        receipt.created = created;
        receipt.status = WriteStatus::Accepted;
        let deadline = tokio::time::Instant::now() + self.config.apply_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(version) = self
                .applied_version(&prepared.key, &prepared.change_id)
                .await?
            {
                receipt.status = WriteStatus::Applied;
                receipt.version = Some(version);
                return Ok(receipt);
            }
            if tokio::time::Instant::now() + pause > deadline {
                metrics::counter!(m::CHANGES_AWAIT_TIMEOUT).increment(1);
                return Ok(receipt);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn applied_version(
        &self,
        key: &ProfileKey,
        change_id: &str,
    ) -> Result<Option<u64>, ContentError> {
        match &self.backend {
            Backend::Journal(j) => Ok(j.read(|s| {
                s.entry(key)
                    .and_then(|e| e.recent.applied_version(change_id))
            })),
            Backend::Redis(r) => r.applied_version(key, change_id).await,
        }
    }

    /// A change made through the provisioning API.
    fn api_change(key: &ProfileKey, op: ChangeOp, timing: Timing) -> Change {
        Change {
            change_id: new_change_id(),
            key: key.clone(),
            version: None,
            op,
            timing,
            producer: PROVISIONING_API.into(),
            occurred_unix_ms: 0,
        }
    }

    /// Creates or replaces a document.
    pub async fn put_document(
        &self,
        key: &ProfileKey,
        name: &str,
        content_type: &str,
        bytes: Bytes,
        timing: impl Into<Timing>,
    ) -> Result<WriteReceipt, ContentError> {
        let op = ChangeOp::PutDocument {
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            bytes,
        };
        self.submit(Self::api_change(key, op, timing.into())).await
    }

    /// Deletes one document; `NotFound` if it does not exist.
    pub async fn delete_document(
        &self,
        key: &ProfileKey,
        name: &str,
        timing: impl Into<Timing>,
    ) -> Result<WriteReceipt, ContentError> {
        let op = ChangeOp::DeleteDocument {
            name: name.to_owned(),
        };
        self.submit(Self::api_change(key, op, timing.into())).await
    }

    /// Sets (or clears, with `None`) the default user of a device. The user's documents are
    /// part of the device's profile, so this bumps the device version and emits a change.
    pub async fn set_default_user(
        &self,
        key: &ProfileKey,
        default_user: Option<&str>,
        timing: impl Into<Timing>,
    ) -> Result<WriteReceipt, ContentError> {
        let op = ChangeOp::SetDefaultUser(default_user.map(str::to_owned));
        self.submit(Self::api_change(key, op, timing.into())).await
    }

    /// Replaces a device's attributes, its default user and its resync target (`None`
    /// clears), as one change.
    pub async fn set_device_attributes(
        &self,
        key: &ProfileKey,
        default_user: Option<&str>,
        resync: Option<ResyncTarget>,
        timing: impl Into<Timing>,
    ) -> Result<WriteReceipt, ContentError> {
        let op = ChangeOp::SetAttributes {
            default_user: default_user.map(str::to_owned),
            resync,
        };
        self.submit(Self::api_change(key, op, timing.into())).await
    }

    /// Removes every document and attribute of a key as one change.
    pub async fn delete_key(
        &self,
        key: &ProfileKey,
        timing: impl Into<Timing>,
    ) -> Result<WriteReceipt, ContentError> {
        self.submit(Self::api_change(key, ChangeOp::DeleteKey, timing.into()))
            .await
    }

    async fn meta(&self, key: &ProfileKey) -> Result<Option<KeyMeta>, ContentError> {
        match &self.backend {
            Backend::Journal(j) => Ok(j.read(|s| s.entry(key).map(|e| e.meta.clone()))),
            Backend::Redis(r) => Ok(r.metas(&[key]).await?.pop().flatten()),
        }
    }

    pub async fn get_document(
        &self,
        key: &ProfileKey,
        name: &str,
    ) -> Result<Option<StoredDocument>, ContentError> {
        let found = match &self.backend {
            Backend::Journal(j) => j.read(|s| {
                let e = s.entry(key)?;
                Some((e.meta.docs.get(name)?.clone(), e.bytes.get(name)?.clone()))
            }),
            Backend::Redis(r) => match &self.cache {
                Some(cache) => self.cached_document(r, cache, key, name).await?,
                None => r.document(key, name).await?,
            },
        };
        Ok(found.map(|(d, bytes)| StoredDocument {
            owner: key.clone(),
            name: name.to_owned(),
            content_type: d.content_type,
            bytes,
            sha1_hex: d.sha1_hex,
            version: d.version,
            content_id: d.content_id,
            updated_unix: d.updated_unix,
        }))
    }

    /// A document from Redis, its bytes from the cache when the cached copy has the hash the
    /// key's metadata names now.
    async fn cached_document(
        &self,
        r: &RedisDocs,
        cache: &DocCache,
        key: &ProfileKey,
        name: &str,
    ) -> Result<Option<(DocMeta, Bytes)>, ContentError> {
        let meta = r.metas(&[key]).await?.pop().flatten();
        let Some(doc) = meta.and_then(|m| m.docs.get(name).cloned()) else {
            return Ok(None);
        };
        if let Some(bytes) = cache.get(key, name, &doc.sha1_hex) {
            return Ok(Some((doc, bytes)));
        }
        let found = r.document(key, name).await?;
        if let Some((d, bytes)) = &found {
            cache.put(key, name, &d.sha1_hex, bytes.clone());
        }
        Ok(found)
    }

    /// Loads the documents of `keys` into the cache ahead of the fetches a fan-out is about
    /// to cause; returns how many were loaded. Nothing to do without a cache (the journal
    /// backend serves from memory anyway).
    pub async fn prewarm(&self, keys: &[ProfileKey]) -> Result<usize, ContentError> {
        let (Backend::Redis(r), Some(cache)) = (&self.backend, &self.cache) else {
            return Ok(0);
        };
        let refs: Vec<&ProfileKey> = keys.iter().collect();
        let metas = r.metas(&refs).await?;
        let mut loaded = 0;
        for (key, meta) in keys.iter().zip(metas) {
            let Some(meta) = meta.filter(KeyMeta::is_live) else {
                continue;
            };
            for (name, doc) in &meta.docs {
                if cache.has(key, name, &doc.sha1_hex) {
                    continue;
                }
                if let Some((d, bytes)) = r.document(key, name).await? {
                    cache.put(key, name, &d.sha1_hex, bytes);
                    loaded += 1;
                }
            }
        }
        metrics::counter!(m::PREWARMED).increment(loaded as u64);
        Ok(loaded)
    }

    /// Documents and attributes of a key; `None` if it has neither.
    pub async fn list_key(&self, key: &ProfileKey) -> Result<Option<KeyListing>, ContentError> {
        let Some(meta) = self.meta(key).await?.filter(KeyMeta::is_live) else {
            return Ok(None);
        };
        Ok(Some(KeyListing {
            key: key.to_string(),
            kind: key.kind(),
            id: key.id(),
            version: meta.version,
            documents: meta
                .docs
                .iter()
                .map(|(name, d)| DocumentInfo {
                    name: name.clone(),
                    content_type: d.content_type.clone(),
                    size: d.size,
                    sha1: d.sha1_hex.clone(),
                    version: d.version,
                    content_id: d.content_id.clone(),
                    url: self.document_url(key, name),
                    updated_unix: d.updated_unix,
                })
                .collect(),
            default_user: meta.default_user,
            resync: meta.resync.as_ref().map(ResyncTarget::shown),
        }))
    }

    /// The current version of a key (0 if it was never written).
    pub async fn key_version(&self, key: &ProfileKey) -> Result<u64, ContentError> {
        Ok(self.meta(key).await?.map_or(0, |m| m.version))
    }

    /// The URL phones fetch a document from, signed for `url_lifetime` from now when URLs
    /// are signed.
    pub fn document_url(&self, key: &ProfileKey, name: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.document_url_until(
            key,
            name,
            now.saturating_add(self.config.url_lifetime.as_secs()),
        )
    }

    /// The URL of a document, signed until `expires_unix` when URLs are signed.
    fn document_url_until(&self, key: &ProfileKey, name: &str, expires_unix: u64) -> String {
        let mut url = format!(
            "{}/profiles/{}/{}/{}",
            self.base_url,
            key.kind(),
            validate::url_encode(&key.id()),
            name
        );
        if let Some(s) = &self.signer {
            url.push('?');
            url.push_str(&s.query(key, name, expires_unix));
        }
        url
    }

    /// The provisioning folder of `device` (its class's documents too when `class` is known),
    /// signed until `expires_unix` when URLs are signed: `{base}/profiles/set/{token}/
    /// {device}/{class or -}/`, the token in the path (`-` unsigned), since phones append
    /// their file names to the URL.
    fn folder_url_until(
        &self,
        device: &ProfileKey,
        class: Option<&ProfileKey>,
        expires_unix: u64,
    ) -> String {
        let class_segment = class.map_or_else(|| "-".to_owned(), |c| validate::url_encode(&c.id()));
        let token = match &self.signer {
            Some(s) => s.query(device, &folder_name(&class_segment), expires_unix),
            None => "-".to_owned(),
        };
        format!(
            "{}/profiles/set/{token}/{}/{class_segment}/",
            self.base_url,
            validate::url_encode(&device.id()),
        )
    }

    /// Seq of the newest durable change (journal backend; 0 for Redis).
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    /// A receiver that is notified whenever [`Self::last_seq`] grows.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Up to `max` retained changes after seq `after`; a gap if `after` is no longer
    /// retained. Only the journal backend keeps a change log: with Redis, applied changes
    /// reach the notifiers through the Kafka applied topic.
    pub fn changes_after(&self, after: u64, max: usize) -> Result<Vec<ProfileChange>, FeedError> {
        match &self.backend {
            Backend::Journal(j) => j.read(|s| s.changes_after(after, max)),
            Backend::Redis(_) => Err(FeedError::Unavailable(
                "this content tier keeps its documents in Redis; changes reach the notifiers \
                 through the Kafka applied topic"
                    .into(),
            )),
        }
    }

    /// The resolver with time as a parameter (the trait impl passes the wall clock).
    pub async fn resolve_at(
        &self,
        request: &ResolveRequest,
        now_unix: u64,
    ) -> Result<Resolution, ContentError> {
        let subject = &request.subject;
        let device = request.profile_type == ProfileType::Device;
        let class = if device && subject_matches(request) {
            match (&request.vendor, &request.model) {
                (Some(vendor), Some(model)) => ProfileKey::class(vendor, model).ok(),
                _ => None,
            }
        } else {
            None
        };
        match &self.backend {
            Backend::Journal(j) => Ok(j.read(|s| {
                self.compose(request, class, now_unix, &|k| s.entry(k).map(|e| &e.meta))
            })),
            Backend::Redis(r) => {
                let mut wanted = vec![subject];
                wanted.extend(class.as_ref());
                let mut metas: HashMap<&ProfileKey, KeyMeta> = HashMap::new();
                for (k, m) in wanted.iter().zip(r.metas(&wanted).await?) {
                    metas.extend(m.map(|m| (*k, m)));
                }
                let user = metas
                    .get(subject)
                    .filter(|_| device)
                    .and_then(|m| m.default_user.clone())
                    .map(ProfileKey::User);
                if let Some(user) = &user
                    && let Some(m) = r.metas(&[user]).await?.pop().flatten()
                {
                    metas.insert(user, m);
                }
                Ok(self.compose(request, class.clone(), now_unix, &|k| metas.get(k)))
            }
        }
    }

    /// Composes the answer for `request` from the keys' metadata.
    fn compose<'a>(
        &self,
        request: &ResolveRequest,
        class: Option<ProfileKey>,
        now_unix: u64,
        lookup: &dyn Fn(&ProfileKey) -> Option<&'a KeyMeta>,
    ) -> Resolution {
        let subject = &request.subject;
        let matches = subject_matches(request);
        let expires_unix = now_unix.saturating_add(self.config.url_lifetime.as_secs());
        let subject_meta = lookup(subject);
        let folder_url = (matches && matches!(subject, ProfileKey::Device(_)))
            .then(|| self.folder_url_until(subject, class.as_ref(), expires_unix));
        let mut depends_on = vec![subject.clone()];
        // A device that named no identity subscribes to its class itself.
        depends_on.extend(class.filter(|c| c != subject));
        if matches
            && request.profile_type == ProfileType::Device
            && let Some(user) = subject_meta.and_then(|m| m.default_user.as_ref())
        {
            depends_on.push(ProfileKey::User(user.clone()));
        }
        let mut documents = Vec::new();
        if matches {
            for key in &depends_on {
                if let Some(meta) = lookup(key) {
                    documents.extend(
                        meta.docs
                            .iter()
                            .map(|(name, d)| self.doc_ref(key, name, d, expires_unix)),
                    );
                }
            }
        }
        documents.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        Resolution {
            documents,
            depends_on,
            known: subject_meta.is_some_and(KeyMeta::is_live),
            folder_url,
            resync: subject_meta
                .filter(|_| matches!(subject, ProfileKey::Device(_)))
                .and_then(|m| m.resync.clone()),
        }
    }

    fn doc_ref(
        &self,
        owner: &ProfileKey,
        name: &str,
        d: &DocMeta,
        expires_unix: u64,
    ) -> DocumentRef {
        DocumentRef {
            owner: owner.clone(),
            name: name.to_owned(),
            url: self.document_url_until(owner, name, expires_unix),
            content_type: d.content_type.clone(),
            size: d.size,
            sha1_hex: d.sha1_hex.clone(),
            version: d.version,
            content_id: d.content_id.clone(),
            expires_unix,
        }
    }

    /// Counts a rejection and passes the result through.
    fn rejected<T>(&self, r: Result<T, ContentError>) -> Result<T, ContentError> {
        if let Err(e) = &r {
            metrics::counter!(m::WRITES_REJECTED, "reason" => e.reason()).increment(1);
            tracing::debug!(error = %e, "write rejected");
        }
        r
    }
}

/// What a folder URL's signature covers besides the device: its class segment (no document
/// name holds a `:` after `set`, so no document URL signs the same).
pub(crate) fn folder_name(class_segment: &str) -> String {
    format!("set:{class_segment}")
}

/// Whether the subject is one the profile type can name: a device subscription names a
/// device, or, for a device that sends no identity, its class or its network.
fn subject_matches(request: &ResolveRequest) -> bool {
    matches!(
        (request.profile_type, &request.subject),
        (
            ProfileType::Device,
            ProfileKey::Device(_) | ProfileKey::Class { .. } | ProfileKey::LocalNetwork(_)
        ) | (ProfileType::User, ProfileKey::User(_))
            | (ProfileType::LocalNetwork, ProfileKey::LocalNetwork(_))
    )
}

fn op_label(op: &PreparedOp) -> &'static str {
    match op {
        PreparedOp::Put { .. } => "put_document",
        PreparedOp::DeleteDoc { .. } => "delete_document",
        PreparedOp::SetDefaultUser(_) => "set_default_user",
        PreparedOp::DeleteKey => "delete_key",
        PreparedOp::SetResync(_) => "set_resync",
        PreparedOp::SetAttributes { .. } => "set_attributes",
    }
}

/// Refuses a device attribute (`what`) on any other kind of key.
fn device_only(key: &ProfileKey, what: &str) -> Result<(), ContentError> {
    if matches!(key, ProfileKey::Device(_)) {
        return Ok(());
    }
    Err(ContentError::WrongKind(format!(
        "{what} is only defined for device keys, not {}",
        key.kind()
    )))
}

/// A default user's AoR, normalised.
fn default_user(user: Option<&str>) -> Result<Option<String>, ContentError> {
    user.map(uaprof_api::key::normalize_aor)
        .transpose()
        .map_err(ContentError::BadDefaultUser)
}

/// A resync target, checked.
fn resync_target(target: Option<&ResyncTarget>) -> Result<Option<ResyncTarget>, ContentError> {
    if let Some(t) = target {
        t.validate().map_err(ContentError::BadResync)?;
    }
    Ok(target.cloned())
}

fn receipt_for(p: &Prepared) -> WriteReceipt {
    let (name, sha1_hex, size, content_id) = match &p.op {
        PreparedOp::Put {
            name,
            bytes,
            sha1_hex,
            content_id,
            ..
        } => (
            Some(name.clone()),
            Some(sha1_hex.clone()),
            Some(bytes.len() as u64),
            Some(content_id.clone()),
        ),
        PreparedOp::DeleteDoc { name } => (Some(name.clone()), None, None, None),
        PreparedOp::SetDefaultUser(_)
        | PreparedOp::DeleteKey
        | PreparedOp::SetResync(_)
        | PreparedOp::SetAttributes { .. } => (None, None, None, None),
    };
    WriteReceipt {
        change_id: p.change_id.clone(),
        status: WriteStatus::Accepted,
        key: p.key.clone(),
        name,
        seq: None,
        version: None,
        created: false,
        sha1_hex,
        size,
        content_id,
        effective_by: p.effective_by,
        rollout_window: p.rollout_window,
    }
}

#[async_trait]
impl ContentResolver for ContentService {
    async fn resolve(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        self.resolve_at(request, unix_now())
            .await
            .map_err(|e| ResolveError::Unavailable(e.to_string()))
    }

    async fn document_bytes(
        &self,
        owner: &ProfileKey,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        self.get_document(owner, name)
            .await
            .map(|d| d.map(|d| d.bytes.to_vec()))
            .map_err(|e| ResolveError::Unavailable(e.to_string()))
    }

    async fn prewarm(&self, keys: &[ProfileKey]) -> Result<usize, ResolveError> {
        ContentService::prewarm(self, keys)
            .await
            .map_err(|e| ResolveError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_are_uuid_v4() {
        let id = new_change_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, new_change_id());
    }
}
