//! The change feed: document writes on one side, notifier fan-out on the other.
//!
//! Delivery is at-least-once with explicit commit, the semantics Kafka gives: a consumer
//! commits a sequence number only after the NOTIFYs it caused are durable work, and after a
//! restart it sees every change after its last commit again. Consumers must therefore be
//! idempotent per (subscription, entity tag), which the notifier is.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::key::ProfileKey;

/// One change to the documents of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChange {
    /// Position in the feed; strictly increasing per source.
    pub seq: u64,
    pub key: ProfileKey,
    /// The key's version after the change (a delete also bumps it).
    pub version: u64,
    /// `effective-by` for the NOTIFYs this change causes (seconds), if the provisioner set one.
    pub effective_by: Option<u32>,
    /// Seconds over which the change's NOTIFYs should be spread, if the provisioner set it.
    #[serde(default)]
    pub rollout_window: Option<u32>,
    /// W3C `traceparent` of the change's trace, when its record carried one (Kafka), so the
    /// fan-out batch it causes joins that trace.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The change set or cleared the device's resync target (or deleted the device): the
    /// notifier brings its check-sync record in line with the target.
    #[serde(default)]
    pub resync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The consumer's position is older than what the source retains: the consumer must
    /// reconcile every subscription against current content, then continue from `resume_after`.
    #[error(
        "change feed gap: changes after {after} are no longer retained; resume after {resume_after}"
    )]
    Gap { after: u64, resume_after: u64 },
    #[error("change feed unavailable: {0}")]
    Unavailable(String),
    #[error("change feed closed")]
    Closed,
}

/// A consumer's view of the feed.
#[async_trait]
pub trait ChangeSource: Send + 'static {
    /// Up to `max` changes after the consumer's position, waiting at most `wait` for the
    /// first one (an empty batch means none arrived in time).
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ProfileChange>, FeedError>;

    /// Marks every change up to and including `seq` as done; after a restart the source
    /// resumes after the last committed position.
    async fn commit(&mut self, seq: u64) -> Result<(), FeedError>;

    /// Whether the source keeps committed positions itself (a Kafka consumer group does).
    /// When it does not, the consumer records its position in its own store and passes it
    /// back when the source is created again.
    fn keeps_positions(&self) -> bool {
        false
    }
}
