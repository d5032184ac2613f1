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
use std::time::Duration;

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
    /// Not a subscription: a phone remembered from its plug-and-play SUBSCRIBE, which a
    /// change to its documents makes re-fetch by an out-of-dialog NOTIFY with its vendor's
    /// resync Event (check-sync). Indexed, partitioned, walked and paced like a subscription;
    /// `confirmed_etag` is the state it last fetched, `expires_at_ms` when it is forgotten,
    /// and `instance` is `check-sync:<device key>`, so the next plug-and-play SUBSCRIBE of
    /// the device replaces it. A failed NOTIFY never removes it.
    CheckSync,
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
    /// Entity tag the subscriber has: the one a SUBSCRIBE's own NOTIFY carries (or its
    /// matching Suppress-If-Match), then the one of each change NOTIFY it answers 2xx. Change
    /// walks and redelivered changes that resolve to this tag send nothing. (A NOTIFY that
    /// never arrives removes the subscription, so this never claims what the phone lacks
    /// for long.)
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
    /// The subscription's source host holds as many subscriptions as it may (policy: the
    /// caller refuses the SUBSCRIBE, nothing was stored).
    #[error("source {0} holds the most subscriptions it may")]
    SourceLimit(std::net::IpAddr),
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// Pending fan-out work: the subscriptions depending on `target` in one partition must be
/// brought to the content tier's current state (each is re-resolved and notified if what it
/// would be told differs from what it confirmed).
///
/// Work is recorded durably before the change feed is committed, so a node that dies
/// mid-fan-out leaves it to whoever owns the partition next (design invariant 2). Work for
/// one target coalesces: a later change raises `version`, and the walk in progress, on
/// finishing, leaves the job pending so it runs once more.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FanoutJob {
    /// The changed key; `None`: every subscription (the feed lost track, e.g. a gap).
    pub target: Option<ProfileKey>,
    /// The highest version (or, for `None`, feed position) this work covers.
    pub version: u64,
    /// `effective-by` for the NOTIFYs, from the change with the highest version.
    pub effective_by: Option<u32>,
    /// Seconds to spread the NOTIFYs over, from the same change.
    pub rollout_window: Option<u32>,
    /// W3C `traceparent` of the fan-out batch that recorded the job, so its walks and their
    /// NOTIFYs join the change's trace. Redis keeps it beside the job; the embedded store in
    /// memory only (a job replayed after a restart walks in a trace of its own). Its serde
    /// form leaves it out, so journals written before it still replay.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

/// Largest CSeq we hand out: RFC 3261 §8.1.1.5 requires CSeq < 2**31.
pub const MAX_CSEQ: u32 = (1 << 31) - 1;

/// 2025-01-01T00:00:00Z in Unix seconds: where the CSeq floor starts counting.
const CSEQ_EPOCH_UNIX_S: u64 = 1_735_689_600;

/// The lowest CSeq a NOTIFY may carry at wall-clock `now_ms`: the seconds since 2025-01-01
/// (below 2**31 until 2093).
///
/// A Redis failover can lose an acknowledged but unreplicated write, so the stored last CSeq
/// of a dialog may be older than the last one the phone saw; counting on from it would make
/// the phone reject the next NOTIFY as out of order (RFC 3261 §12.2.2). Every CSeq is at
/// least this floor, so after a loss the next one is still larger than any sent before, as
/// long as the clocks of the tier are roughly right and a dialog did not average more than
/// one NOTIFY a second (at most one is in flight per dialog, and a failover takes seconds).
pub fn cseq_floor(now_ms: u64) -> u32 {
    let secs = (now_ms / 1000).saturating_sub(CSEQ_EPOCH_UNIX_S);
    u32::try_from(secs).unwrap_or(MAX_CSEQ).min(MAX_CSEQ)
}

/// The CSeq after `last` at `now_ms`: larger than `last` and at least [`cseq_floor`].
pub fn next_cseq(last: u32, now_ms: u64) -> u32 {
    last.saturating_add(1).max(cseq_floor(now_ms)).min(MAX_CSEQ)
}

/// How long a node may hold a dialog's NOTIFY turn without ending it: longer than a NOTIFY
/// transaction lasts (Timer F, 32 s at the default T1), so it only lapses when the holder
/// died with the NOTIFY in flight.
pub const TURN_HOLD: Duration = Duration::from_secs(40);

/// What a node may do about sending a NOTIFY in a dialog (RFC 6665 §4.2.2 allows one
/// outstanding NOTIFY per dialog; the store makes that hold across the tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Send it now with this CSeq, then [`SubscriptionStore::end_notify`].
    Granted(u32),
    /// Another NOTIFY of the dialog is in flight. A refresh's wish is recorded (the holder
    /// sends the dialog's newest state when its NOTIFY ends); a pipeline want tries again.
    Busy,
    /// The subscription is gone.
    Gone,
}

/// What one node is responsible for: the gauges an SRE reads first
/// (`notifier_subscriptions_held`, `notifier_partitions_owned`; the tier's are their sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Partitions whose timed duties (expiry, fan-out) this node has.
    pub partitions: u64,
    /// Subscriptions in those partitions.
    pub subscriptions: u64,
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
/// * `insert` rejects an existing id (and, capped, a source holding its cap), and displaces any other subscription with the same
///   (`instance`, `profile_type`), removing it from every index;
/// * the key index holds exactly the live subscriptions' `depends_on` keys;
/// * CSeqs handed out (by `insert`, `refresh` and `begin_notify`) are strictly increasing per
///   subscription, across restarts, and those of `refresh` and `begin_notify` are at least
///   [`cseq_floor`] of the store's clock (so a write lost in a failover is not reused);
/// * a dialog has at most one NOTIFY turn at a time across every node sharing the store
///   (`insert` gives the inserting node the first one; a turn ends with `end_notify`,
///   the subscription's removal, or after [`TURN_HOLD`]);
/// * `take_due` removes and returns expired subscriptions exactly once.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// The id of a new subscription to `subject`, from 64 random bits. A shared store
    /// places the subscription by its id and uses this to put it next to its subject.
    fn allocate_id(&self, subject: &ProfileKey, random: u64) -> SubId {
        let _ = subject;
        SubId(random)
    }

    /// Stores a new subscription (its `local_cseq` is the CSeq of the first NOTIFY) and
    /// gives this node the turn for that NOTIFY.
    async fn insert(&self, sub: Subscription) -> Result<Upserted, StoreError> {
        self.insert_capped(sub, 0).await
    }

    /// [`Self::insert`], refused with [`StoreError::SourceLimit`] (storing nothing) when the
    /// host of `sub.source` holds `per_source` live subscriptions already across the whole
    /// store, not counting the one this insert replaces; `0`: no cap.
    async fn insert_capped(
        &self,
        sub: Subscription,
        per_source: u32,
    ) -> Result<Upserted, StoreError>;

    /// Replaces an existing subscription's record (a refresh). If the dialog's turn is free,
    /// takes it and allocates the CSeq of the NOTIFY that answers the refresh ([`next_cseq`]
    /// of the larger of the stored and the given `local_cseq`); if not, records that the dialog
    /// wants a NOTIFY ([`Turn::Busy`]).
    async fn refresh(&self, sub: Subscription) -> Result<Turn, StoreError>;

    async fn get(&self, id: SubId) -> Result<Option<Subscription>, StoreError>;

    async fn remove(&self, id: SubId) -> Result<Option<Subscription>, StoreError>;

    /// Takes the dialog's NOTIFY turn for this node and allocates the next CSeq, replacing
    /// the dependency keys if given (the answer of the resolve the NOTIFY carries). A busy
    /// turn is left as it is: the caller tries again.
    async fn begin_notify(
        &self,
        id: SubId,
        depends_on: Option<Vec<ProfileKey>>,
    ) -> Result<Turn, StoreError>;

    /// Ends this node's turn in the dialog (a NOTIFY transaction ended), recording that the
    /// subscriber has the content with entity tag `confirmed` when given. `Ok(true)` when a
    /// NOTIFY was wanted meanwhile: the caller sends the dialog's newest state.
    async fn end_notify(&self, id: SubId, confirmed: Option<String>) -> Result<bool, StoreError>;

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

    /// The partitions this node owns and the subscriptions in them. A store nobody else
    /// shares is one partition holding everything.
    async fn held(&self) -> Result<Held, StoreError> {
        Ok(Held {
            partitions: 1,
            subscriptions: self.count().await?,
        })
    }

    /// Every subscription id, in pages (reconciliation after a change-feed gap).
    async fn scan(&self, after: Option<SubId>, limit: usize) -> Result<Page, StoreError>;

    /// The position of a change feed that does not keep its own (the in-process feed, the
    /// content tier's gRPC long-poll): every change up to it has its fan-out recorded.
    async fn feed_offset(&self) -> Result<u64, StoreError>;

    /// Raises [`Self::feed_offset`] to `seq` (it never goes down).
    async fn set_feed_offset(&self, seq: u64) -> Result<(), StoreError>;

    /// Records fan-out work durably in every partition that may hold subscribers of each
    /// job's target, coalescing with work already pending there (the higher version wins,
    /// with its effective-by).
    async fn enqueue_fanout(&self, jobs: &[FanoutJob]) -> Result<(), StoreError>;

    /// Pending work in partitions this node owns, up to `limit` (partition, job) pairs.
    /// `recheck` names partitions to read even if nothing new was announced for them.
    async fn pending_fanout(
        &self,
        recheck: &[u16],
        limit: usize,
    ) -> Result<Vec<(u16, FanoutJob)>, StoreError>;

    /// Marks `job` done in `partition` unless newer work for its target arrived meanwhile;
    /// `Ok(false)` when it stays pending.
    async fn finish_fanout(&self, partition: u16, job: &FanoutJob) -> Result<bool, StoreError>;

    /// Returns when fan-out work may have been announced for this node, or after `timeout`.
    async fn fanout_wakeup(&self, timeout: Duration);

    /// Whether this node owns `partition` now (fan-out stops walking one it lost).
    fn owns_partition(&self, partition: u16) -> bool {
        let _ = partition;
        true
    }

    /// [`Self::by_key`] restricted to one partition.
    async fn by_key_in(
        &self,
        partition: u16,
        key: &ProfileKey,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let _ = partition;
        self.by_key(key, after, limit).await
    }

    /// [`Self::scan`] restricted to one partition.
    async fn scan_partition(
        &self,
        partition: u16,
        after: Option<SubId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let _ = partition;
        self.scan(after, limit).await
    }
}
