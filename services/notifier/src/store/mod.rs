//! The subscription store: the only place subscription state lives.
//!
//! [`SubscriptionStore`] is the seam between the notifier's protocol logic and its persistence.
//! The embedded implementation ([`embedded::EmbeddedStore`]) keeps everything in a local
//! journal; a Redis implementation plugs in behind the same trait. Both must pass
//! [`contract::run_all`], which is the written contract of this trait.

pub mod contract;
pub mod embedded;
pub mod redis;

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sip_core::dialog::Dialog;
use sip_core::transport::Transport;
use uaprof_api::{ProfileKey, ProfileType};

/// A subscription's identity: the notifier-chosen local (To) tag, 64 random bits.
///
/// The local tag alone names the dialog on this server (we choose it, collisions are
/// checked on insert), so indexes hold 8 bytes per entry instead of three strings. In-dialog
/// requests are still matched against the full dialog id (Call-ID and both tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubId(pub u64);

impl SubId {
    pub fn tag(self) -> String {
        format!("{:016x}", self.0)
    }

    pub fn from_tag(tag: &str) -> Option<Self> {
        (tag.len() == 16)
            .then(|| u64::from_str_radix(tag, 16).ok())
            .flatten()
            .map(SubId)
    }
}

impl fmt::Display for SubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which event package name the subscriber used; NOTIFYs echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageName {
    UaProfile,
    SipProfile,
}

/// Everything needed to send a NOTIFY for a subscription from any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubId,
    pub dialog: Dialog,
    /// Transport and source of the SUBSCRIBE that created or last refreshed the dialog:
    /// NOTIFYs reuse the flow when the remote target is not directly reachable.
    pub transport: Transport,
    pub source: SocketAddr,
    pub package: PackageName,
    pub profile_type: ProfileType,
    /// The subject named by the Request-URI (device, user or local network key).
    pub subject: ProfileKey,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub version: Option<String>,
    /// `+sip.instance` of the subscriber, if given: a new subscription with the same instance
    /// and profile type replaces this one (a rebooted phone uses a new Call-ID).
    pub instance: Option<String>,
    /// The subscriber's Accept header values, as received (decides external-body vs inline).
    pub accept: Option<Vec<String>>,
    /// The Event `id` parameter, echoed in NOTIFYs.
    pub event_id: Option<String>,
    /// Absolute expiry, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Last CSeq used for a NOTIFY in this dialog; the next NOTIFY uses a larger one.
    pub local_cseq: u32,
    /// Entity tag the subscriber confirmed (2xx to a NOTIFY carrying it, or a matching
    /// Suppress-If-Match). Redelivered changes that resolve to this tag are not re-sent.
    pub confirmed_etag: Option<String>,
    /// Keys whose change can change what this subscriber is told (index entries).
    pub depends_on: Vec<ProfileKey>,
}

/// Result of an insert: which older subscriptions it displaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upserted {
    /// Subscriptions removed because they had the same `+sip.instance` and profile type.
    pub replaced: Vec<Subscription>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot take writes or answer now; the caller answers 503 and retries later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local tag collision; the caller picks a new id.
    #[error("subscription id {0} already exists")]
    Conflict(SubId),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// A page of an index walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<SubId>,
    /// Pass back to continue after the last id; `None` at the end.
    pub next: Option<SubId>,
}

/// The contract (exercised by [`contract::run_all`]):
///
/// * every method's effect is durable when it returns `Ok`;
/// * `insert` rejects an existing id, and displaces any other subscription with the same
///   (`instance`, `profile_type`), removing it from every index;
/// * the key index holds exactly the live subscriptions' `depends_on` keys;
/// * `next_cseq` is strictly increasing per subscription, across restarts;
/// * `take_due` removes and returns expired subscriptions exactly once.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// The id of a new subscription to `subject`, from 64 random bits. A shared store
    /// places the subscription by its id and uses this to put it next to its subject.
    fn allocate_id(&self, subject: &ProfileKey, random: u64) -> SubId {
        let _ = subject;
        SubId(random)
    }

    /// Stores a new subscription (its `local_cseq` is the CSeq of the first NOTIFY).
    async fn insert(&self, sub: Subscription) -> Result<Upserted, StoreError>;

    /// Replaces an existing subscription's record (a refresh) and allocates the CSeq of the
    /// NOTIFY that answers it: the larger of the stored and the given `local_cseq`, plus one.
    /// `Ok(None)` if the subscription is gone.
    async fn refresh(&self, sub: Subscription) -> Result<Option<u32>, StoreError>;

    async fn get(&self, id: SubId) -> Result<Option<Subscription>, StoreError>;

    async fn remove(&self, id: SubId) -> Result<Option<Subscription>, StoreError>;

    /// Allocates the next NOTIFY CSeq and, if given, replaces the dependency keys (the
    /// answer of a new resolve). `Ok(None)` if the subscription is gone.
    async fn next_cseq(
        &self,
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
    ) -> Result<Option<u32>, StoreError>;

    /// Records that the subscriber has the content with this entity tag.
    async fn confirm_etag(&self, id: SubId, etag: String) -> Result<(), StoreError>;

    /// Up to `limit` subscriptions depending on `key`, in id order, starting after `after`.
    async fn by_key(
        &self,
        key: &ProfileKey,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Removes and returns up to `limit` subscriptions whose expiry is at or before `now_ms`.
    async fn take_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Subscription>, StoreError>;

    /// Earliest expiry of any subscription, for scheduling the next sweep.
    async fn next_expiry(&self) -> Result<Option<u64>, StoreError>;

    async fn count(&self) -> Result<u64, StoreError>;

    /// Every subscription id, in pages (reconciliation after a change-feed gap).
    async fn scan(&self, after: Option<SubId>, limit: usize) -> Result<Page, StoreError>;

    /// The change-feed position this notifier has fully processed.
    async fn feed_offset(&self) -> Result<u64, StoreError>;

    async fn set_feed_offset(&self, seq: u64) -> Result<(), StoreError>;

    /// Shards this node became responsible for since the last call, each with the feed
    /// position recorded for it. A shard whose position is behind the fan-out's is
    /// reconciled ([`Self::scan_shard`]) before the fan-out counts it as current. A store
    /// that one node owns entirely has nothing to hand over.
    async fn take_acquired(&self) -> Result<Vec<(u16, u64)>, StoreError> {
        Ok(Vec::new())
    }

    /// [`Self::scan`] restricted to one shard.
    async fn scan_shard(
        &self,
        shard: u16,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let _ = shard;
        self.scan(after, limit).await
    }

    /// [`Self::set_feed_offset`] for one shard.
    async fn set_shard_offset(&self, shard: u16, seq: u64) -> Result<(), StoreError> {
        let _ = shard;
        self.set_feed_offset(seq).await
    }
}
