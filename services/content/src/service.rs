//! [`ContentService`]: the document store API, the resolver and the change notification.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use journal::{Journal, JournalOptions};
use sha1::{Digest, Sha1};
use tokio::sync::watch;
use uaprof_api::{
    ContentResolver, DocumentRef, FeedError, ProfileChange, ProfileKey, ProfileType, Resolution,
    ResolveError, ResolveRequest,
};

use crate::config::ContentConfig;
use crate::error::ContentError;
use crate::store::{Applied, ApplyError, KeyEntry, Op, Store, StoredDoc};
use crate::telemetry as m;
use crate::validate;

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteReceipt {
    pub key: ProfileKey,
    /// The document written or deleted; `None` for key-level writes.
    pub name: Option<String>,
    /// Position of this write in the change feed.
    pub seq: u64,
    /// The key's version after the write.
    pub version: u64,
    /// The document (or, for attributes, the key) did not exist before.
    pub created: bool,
    /// For document uploads: hash, size and Content-ID of the stored bytes.
    pub sha1_hex: Option<String>,
    pub size: Option<u64>,
    pub content_id: Option<String>,
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
}

/// The content tier: owns documents and their versions, composes what a subscriber gets, and
/// feeds changes to in-process consumers.
pub struct ContentService {
    journal: Journal<Store>,
    config: ContentConfig,
    base_url: String,
    /// Highest seq whose write is durable and applied; feeds wait on it.
    last_seq: watch::Sender<u64>,
}

impl std::fmt::Debug for ContentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentService")
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

impl ContentService {
    /// Opens (or creates) the store in `dir`. Blocks while the journal replays.
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
        let base_url = config.public_base_url.trim_end_matches('/').to_owned();
        Ok(Arc::new(Self {
            journal,
            config,
            base_url,
            last_seq: watch::Sender::new(last_seq),
        }))
    }

    pub fn config(&self) -> &ContentConfig {
        &self.config
    }

    pub fn journal_stats(&self) -> journal::JournalStats {
        self.journal.stats()
    }

    /// Writes a snapshot (call on clean shutdown so the next start replays little).
    pub fn snapshot(&self) -> Result<(), ContentError> {
        Ok(self.journal.snapshot_now()?)
    }

    /// Creates or replaces a document. Durable and visible to resolves and feeds on return.
    pub async fn put_document(
        &self,
        key: &ProfileKey,
        name: &str,
        content_type: &str,
        bytes: Bytes,
        effective_by: Option<u32>,
    ) -> Result<WriteReceipt, ContentError> {
        let prepared = self.prepare_put(key, name, content_type, &bytes);
        let (content_type, sha1_hex, content_id) = self.rejected(prepared)?;
        let size = bytes.len() as u64;
        let applied = self
            .commit(Op::Put {
                key: key.clone(),
                name: name.to_owned(),
                content_type,
                bytes,
                sha1_hex: sha1_hex.clone(),
                content_id: content_id.clone(),
                now_unix: unix_now(),
                effective_by,
            })
            .await?;
        metrics::counter!(m::DOCUMENTS_WRITTEN).increment(1);
        tracing::info!(%key, name, seq = applied.seq, version = applied.version, size, "document written");
        Ok(WriteReceipt {
            key: key.clone(),
            name: Some(name.to_owned()),
            seq: applied.seq,
            version: applied.version,
            created: applied.created,
            sha1_hex: Some(sha1_hex),
            size: Some(size),
            content_id: Some(content_id),
        })
    }

    fn prepare_put(
        &self,
        key: &ProfileKey,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(String, String, String), ContentError> {
        validate::validate_key(key)?;
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

    /// Deletes one document; `NotFound` if it does not exist.
    pub async fn delete_document(
        &self,
        key: &ProfileKey,
        name: &str,
        effective_by: Option<u32>,
    ) -> Result<WriteReceipt, ContentError> {
        self.rejected(validate::validate_key(key).and_then(|()| validate::validate_name(name)))?;
        let applied = self
            .commit(Op::DeleteDoc {
                key: key.clone(),
                name: name.to_owned(),
                effective_by,
            })
            .await?;
        metrics::counter!(m::DOCUMENTS_DELETED).increment(1);
        tracing::info!(%key, name, seq = applied.seq, "document deleted");
        Ok(receipt(key, Some(name), applied))
    }

    /// Sets (or clears, with `None`) the default user of a device. The user's documents are
    /// part of the device's profile, so this bumps the device version and emits a change.
    pub async fn set_device_attributes(
        &self,
        key: &ProfileKey,
        default_user: Option<&str>,
        effective_by: Option<u32>,
    ) -> Result<WriteReceipt, ContentError> {
        let checked = validate::validate_key(key).and_then(|()| {
            if !matches!(key, ProfileKey::Device(_)) {
                return Err(ContentError::WrongKind(format!(
                    "attributes are only defined for device keys, not {}",
                    key.kind()
                )));
            }
            default_user
                .map(uaprof_api::key::normalize_aor)
                .transpose()
                .map_err(ContentError::BadDefaultUser)
        });
        let default_user = self.rejected(checked)?;
        let applied = self
            .commit(Op::SetAttributes {
                key: key.clone(),
                default_user,
                effective_by,
            })
            .await?;
        metrics::counter!(m::ATTRIBUTES_WRITTEN).increment(1);
        tracing::info!(%key, seq = applied.seq, "device attributes written");
        Ok(receipt(key, None, applied))
    }

    /// Removes every document and attribute of a key as one change.
    pub async fn delete_key(
        &self,
        key: &ProfileKey,
        effective_by: Option<u32>,
    ) -> Result<WriteReceipt, ContentError> {
        self.rejected(validate::validate_key(key))?;
        let applied = self
            .commit(Op::DeleteKey {
                key: key.clone(),
                effective_by,
            })
            .await?;
        metrics::counter!(m::KEYS_DELETED).increment(1);
        tracing::info!(%key, seq = applied.seq, "key deleted");
        Ok(receipt(key, None, applied))
    }

    pub fn get_document(&self, key: &ProfileKey, name: &str) -> Option<StoredDocument> {
        self.journal.read(|s| {
            let entry = s.entry(key)?;
            let doc = entry.docs.get(name)?;
            Some(StoredDocument {
                owner: key.clone(),
                name: name.to_owned(),
                content_type: doc.content_type.clone(),
                bytes: doc.bytes.clone(),
                sha1_hex: doc.sha1_hex.clone(),
                version: doc.version,
                content_id: doc.content_id.clone(),
                updated_unix: doc.updated_unix,
            })
        })
    }

    /// Documents and attributes of a key; `None` if it has neither.
    pub fn list_key(&self, key: &ProfileKey) -> Option<KeyListing> {
        self.journal.read(|s| {
            let entry = s.entry(key).filter(|e| e.is_live())?;
            Some(KeyListing {
                key: key.to_string(),
                kind: key.kind(),
                id: key.id(),
                version: entry.version,
                documents: entry
                    .docs
                    .iter()
                    .map(|(name, d)| DocumentInfo {
                        name: name.clone(),
                        content_type: d.content_type.clone(),
                        size: d.bytes.len() as u64,
                        sha1: d.sha1_hex.clone(),
                        version: d.version,
                        content_id: d.content_id.clone(),
                        url: self.document_url(key, name),
                        updated_unix: d.updated_unix,
                    })
                    .collect(),
                default_user: entry.default_user.clone(),
            })
        })
    }

    /// The current version of a key (0 if it was never written).
    pub fn key_version(&self, key: &ProfileKey) -> u64 {
        self.journal
            .read(|s| s.entry(key).map(|e| e.version).unwrap_or(0))
    }

    /// Every key that currently has documents or attributes, e.g. for a notifier
    /// reconciling after a feed gap.
    pub fn live_keys(&self) -> Vec<ProfileKey> {
        self.journal
            .read(|s| s.live_keys().map(|e| e.key.clone()).collect())
    }

    /// The URL phones fetch a document from.
    pub fn document_url(&self, key: &ProfileKey, name: &str) -> String {
        format!(
            "{}/profiles/{}/{}/{}",
            self.base_url,
            key.kind(),
            validate::url_encode(&key.id()),
            name
        )
    }

    /// Seq of the newest durable change.
    pub fn last_seq(&self) -> u64 {
        *self.last_seq.borrow()
    }

    /// A receiver that is notified whenever [`Self::last_seq`] grows.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Up to `max` retained changes after seq `after`; a gap if `after` is no longer
    /// retained.
    pub fn changes_after(&self, after: u64, max: usize) -> Result<Vec<ProfileChange>, FeedError> {
        self.journal.read(|s| s.changes_after(after, max))
    }

    /// The resolver with time as a parameter (the trait impl passes the wall clock).
    pub fn resolve_at(&self, request: &ResolveRequest, now_unix: u64) -> Resolution {
        let subject = &request.subject;
        let subject_matches = matches!(
            (request.profile_type, subject),
            (ProfileType::Device, ProfileKey::Device(_))
                | (ProfileType::User, ProfileKey::User(_))
                | (ProfileType::LocalNetwork, ProfileKey::LocalNetwork(_))
        );
        let expires_unix = now_unix.saturating_add(self.config.url_lifetime.as_secs());
        self.journal.read(|s| {
            let subject_entry = s.entry(subject);
            let mut depends_on = vec![subject.clone()];
            if subject_matches && request.profile_type == ProfileType::Device {
                if let (Some(vendor), Some(model)) = (&request.vendor, &request.model)
                    && let Ok(class) = ProfileKey::class(vendor, model)
                {
                    depends_on.push(class);
                }
                if let Some(user) = subject_entry.and_then(|e| e.default_user.as_ref()) {
                    depends_on.push(ProfileKey::User(user.clone()));
                }
            }
            let mut documents = Vec::new();
            if subject_matches {
                for key in &depends_on {
                    if let Some(entry) = s.entry(key) {
                        documents.extend(self.refs(entry, expires_unix));
                    }
                }
            }
            documents.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
            Resolution {
                documents,
                depends_on,
                known: subject_entry.is_some_and(KeyEntry::is_live),
            }
        })
    }

    fn refs<'a>(
        &'a self,
        entry: &'a KeyEntry,
        expires_unix: u64,
    ) -> impl Iterator<Item = DocumentRef> + 'a {
        entry
            .docs
            .iter()
            .map(move |(name, d): (&String, &StoredDoc)| DocumentRef {
                owner: entry.key.clone(),
                name: name.clone(),
                url: self.document_url(&entry.key, name),
                content_type: d.content_type.clone(),
                size: d.bytes.len() as u64,
                sha1_hex: d.sha1_hex.clone(),
                version: d.version,
                content_id: d.content_id.clone(),
                expires_unix,
            })
    }

    /// Counts a rejection and passes the result through.
    fn rejected<T>(&self, r: Result<T, ContentError>) -> Result<T, ContentError> {
        if let Err(e) = &r {
            metrics::counter!(m::WRITES_REJECTED, "reason" => e.reason()).increment(1);
            tracing::debug!(error = %e, "write rejected");
        }
        r
    }

    async fn commit(&self, op: Op) -> Result<Applied, ContentError> {
        let outcome = self
            .journal
            .commit(vec![op])
            .await?
            .pop()
            .ok_or(ContentError::Journal(journal::JournalError::Closed))?;
        match outcome {
            Ok(applied) => {
                self.last_seq.send_if_modified(|v| {
                    // Concurrent committers may publish out of order; the value only grows.
                    let grew = applied.seq > *v;
                    if grew {
                        *v = applied.seq;
                    }
                    grew
                });
                Ok(applied)
            }
            Err(ApplyError::NotFound) => Err(ContentError::NotFound),
            Err(ApplyError::TooManyKeys) => {
                Err(ContentError::Config("key table full (2^32 keys)".into()))
            }
        }
    }
}

fn receipt(key: &ProfileKey, name: Option<&str>, applied: Applied) -> WriteReceipt {
    WriteReceipt {
        key: key.clone(),
        name: name.map(str::to_owned),
        seq: applied.seq,
        version: applied.version,
        created: applied.created,
        sha1_hex: None,
        size: None,
        content_id: None,
    }
}

#[async_trait]
impl ContentResolver for ContentService {
    async fn resolve(&self, request: &ResolveRequest) -> Result<Resolution, ResolveError> {
        Ok(self.resolve_at(request, unix_now()))
    }

    async fn document_bytes(
        &self,
        owner: &ProfileKey,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        Ok(self.get_document(owner, name).map(|d| d.bytes.to_vec()))
    }
}
