//! [`AppliedFeed`]: the notifier's change feed from the applied topic, in the notifier
//! consumer group.
//!
//! Each node of the tier receives the partitions the group assigns it. Records become
//! [`ProfileChange`]s with a feed-local `seq`; [`ChangeSource::commit`] commits the Kafka
//! offsets of everything up to that seq. The fan-out commits only after it has recorded the
//! batch's work durably in the subscription store, where the owners of the subscriptions'
//! partitions finish it, so a node that dies mid-batch loses nothing: its partitions'
//! records are delivered again to the node that takes them over.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use metrics::{counter, histogram};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;
use uaprof_api::{ChangeSource, FeedError, ProfileChange};

use crate::context::KafkaContext;
use crate::{KafkaConfig, telemetry as m};

/// After the first record of a batch, how long to keep collecting what follows it. Zero:
/// take what librdkafka has already fetched and no more, so an idle change is not delayed;
/// a burst still arrives in fetched batches, and the fan-out coalesces the rest.
const BATCH_LINGER: Duration = Duration::ZERO;

pub struct AppliedFeed {
    consumer: StreamConsumer<KafkaContext>,
    topic: String,
    next_seq: u64,
    /// Delivered, not yet committed: (seq, partition, offset), in delivery order.
    pending: VecDeque<(u64, i32, i64)>,
}

impl std::fmt::Debug for AppliedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppliedFeed")
            .field("topic", &self.topic)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl AppliedFeed {
    /// Joins the notifier group on the applied topic.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, String> {
        let consumer: StreamConsumer<KafkaContext> = cfg
            .consumer(&cfg.groups.notifier)
            .set("statistics.interval.ms", "5000")
            .create_with_context(KafkaContext::new(&cfg.groups.notifier))
            .map_err(|e| format!("kafka consumer: {e}"))?;
        consumer
            .subscribe(&[&cfg.topics.applied])
            .map_err(|e| format!("kafka subscribe {}: {e}", cfg.topics.applied))?;
        Ok(Self {
            consumer,
            topic: cfg.topics.applied.clone(),
            next_seq: 1,
            pending: VecDeque::new(),
        })
    }
}

/// Decodes one record; a record that is not an applied change is skipped (and counted): only
/// the content tier writes this topic, so it is a fault, not a change to act on.
fn decode(msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<events::Applied> {
    match events::decode_applied(msg.payload().unwrap_or_default()) {
        Ok(a) => {
            counter!(m::APPLIED_RECEIVED).increment(1);
            if a.occurred_unix_ms > 0 {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                histogram!(m::APPLIED_DELAY)
                    .record(now.saturating_sub(a.occurred_unix_ms) as f64 / 1000.0);
            }
            Some(a)
        }
        Err(e) => {
            counter!(m::APPLIED_MALFORMED).increment(1);
            warn!(%e, partition = msg.partition(), offset = msg.offset(), "applied record skipped");
            None
        }
    }
}

#[async_trait]
impl ChangeSource for AppliedFeed {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ProfileChange>, FeedError> {
        let mut out = Vec::new();
        let mut records = 0;
        let mut linger_until = None;
        while records < max {
            let timeout = match linger_until {
                None => wait,
                Some(t) => {
                    tokio::time::Instant::saturating_duration_since(&t, tokio::time::Instant::now())
                }
            };
            let msg = match tokio::time::timeout(timeout, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(e)) if records == 0 => {
                    return Err(FeedError::Unavailable(format!("kafka: {e}")));
                }
                Ok(Err(_)) => break,
                Ok(Ok(msg)) => msg,
            };
            let (partition, offset) = (msg.partition(), msg.offset());
            let traceparent = crate::trace::traceparent(msg.headers());
            let applied = decode(&msg);
            drop(msg);
            let seq = self.next_seq;
            self.next_seq += 1;
            records += 1;
            self.pending.push_back((seq, partition, offset));
            out.extend(applied.map(|a| ProfileChange {
                traceparent,
                ..a.to_feed(seq)
            }));
            linger_until.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_LINGER);
        }
        Ok(out)
    }

    async fn commit(&mut self, seq: u64) -> Result<(), FeedError> {
        let mut upto: BTreeMap<i32, i64> = BTreeMap::new();
        while let Some(&(s, p, o)) = self.pending.front() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            upto.insert(p, o + 1);
        }
        if upto.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in upto {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(next))
                .map_err(|e| FeedError::Unavailable(e.to_string()))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| FeedError::Unavailable(format!("kafka commit: {e}")))
    }

    fn keeps_positions(&self) -> bool {
        true
    }
}
