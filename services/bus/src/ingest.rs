//! The content tier's consumer of the change topic.
//!
//! For each record, in partition order: decode it, check the producer, apply it to the
//! document store (durable on return, idempotent by change id and version), then publish a
//! `ProfileApplied` record, or copy a refused record to the dead-letter topic with the
//! reason. A partition's offset is committed only once every record before it has its
//! applied or dead-letter record acknowledged by the broker, so a node that dies at any
//! point leaves the rest to the next owner, which re-applies nothing (the change ids are
//! in the store) but does re-publish the applied records, which is harmless: notifiers
//! notify only subscribers whose content differs.
//!
//! A record that cannot be used never blocks its partition: it is dead-lettered and the
//! consumer moves on. A store that is down does block it (retrying with back-off), since
//! skipping would reorder the key's changes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use content::{Access, ContentError, ContentService, Intent, PROVISIONING_API, WriteStatus};
use metrics::counter;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};
use uaprof_api::Change;

use crate::context::{KafkaContext, TRACE_HEADERS};
use crate::{KafkaConfig, telemetry as m};

/// Records published but not yet acknowledged, across partitions. Bounds memory and lets
/// the store and the broker overlap; at a few hundred bytes each this is well under 1 MiB.
const MAX_UNACKED: usize = 1024;
/// How often processed offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// Most records of one partition consumed since its last commit. Whatever a crash leaves
/// uncommitted is delivered again, and a redelivered change is recognised by its id only
/// while the key still remembers it (the last `RECENT_CHANGE_IDS` = 64 changes of a key);
/// keeping the window at half that makes redelivery idempotent even for a burst of
/// "next version" changes to one key, which carry no version to compare.
const MAX_UNCOMMITTED_PER_PARTITION: usize = 32;
/// Back-off while the document store is unavailable (the record is retried, not skipped).
const STORE_BACKOFF: Duration = Duration::from_millis(250);
/// Back-off before re-publishing a record the broker did not take.
const PUBLISH_BACKOFF: Duration = Duration::from_millis(500);

/// One record whose outcome is on its way to the broker.
struct Unacked {
    partition: i32,
    offset: i64,
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
    delivery: DeliveryFuture,
}

/// What to publish for one change record.
struct Outcome {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Copies the trace context of `msg` onto `out`.
fn trace_headers(msg: &BorrowedMessage<'_>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = rdkafka::Message::headers(msg) {
        for header in h.iter() {
            if TRACE_HEADERS.contains(&header.key) {
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    out
}

/// The content tier's consumer of the change topic, in the content group.
pub struct ContentConsumer {
    consumer: StreamConsumer<KafkaContext>,
    ingest: Ingest,
}

impl ContentConsumer {
    /// Creates the clients and joins the group; fails at once on a bad configuration.
    pub fn new(
        cfg: KafkaConfig,
        service: Arc<ContentService>,
        access: Arc<Access>,
        node: String,
    ) -> Result<Self, String> {
        let consumer: StreamConsumer<KafkaContext> = cfg
            .consumer(&cfg.groups.content)
            .set("statistics.interval.ms", "5000")
            .create_with_context(KafkaContext::new(&cfg.groups.content))
            .map_err(|e| format!("kafka consumer: {e}"))?;
        consumer
            .subscribe(&[&cfg.topics.changes])
            .map_err(|e| format!("kafka subscribe {}: {e}", cfg.topics.changes))?;
        let producer: FutureProducer<KafkaContext> = cfg
            .producer()
            .create_with_context(KafkaContext::new("-"))
            .map_err(|e| format!("kafka producer: {e}"))?;
        let signatures = crate::signature::EventKeys::load(&cfg)?;
        Ok(Self {
            consumer,
            ingest: Ingest {
                cfg,
                service,
                access,
                signatures,
                node,
                producer,
                unacked: VecDeque::new(),
                committable: BTreeMap::new(),
                uncommitted: BTreeMap::new(),
            },
        })
    }

    /// Consumes until `shutdown`; then finishes what was published and commits.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            consumer,
            mut ingest,
        } = self;
        info!(
            topic = ingest.cfg.topics.changes,
            group = ingest.cfg.groups.content,
            "content tier consuming changes"
        );
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    ingest.reap(false).await;
                    // Synchronous, so that what is counted as committed is: the bound on
                    // redelivery below depends on it.
                    ingest.commit(&consumer, CommitMode::Sync);
                }
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        let span = tracing::info_span!(
                            "kafka.change",
                            partition = rdkafka::Message::partition(&msg),
                            offset = rdkafka::Message::offset(&msg),
                        );
                        crate::trace::continue_from(&span, rdkafka::Message::headers(&msg));
                        let processed = ingest.process(&msg, &shutdown).instrument(span).await;
                        let Some(outcome) = processed else { break };
                        ingest.publish(&msg, outcome, &shutdown).await;
                        let p = rdkafka::Message::partition(&msg);
                        let n = ingest.uncommitted.entry(p).or_default();
                        *n += 1;
                        if *n >= MAX_UNCOMMITTED_PER_PARTITION {
                            // Everything consumed so far is acknowledged, then committed.
                            ingest.drain().await;
                            ingest.commit(&consumer, CommitMode::Sync);
                        } else if ingest.unacked.len() >= MAX_UNACKED {
                            ingest.reap(true).await;
                        }
                    }
                    Err(e) => {
                        warn!(%e, "kafka consumer error");
                        tokio::time::sleep(STORE_BACKOFF).await;
                    }
                }
            }
        }
        // Finish what is on its way (bounded by the delivery timeout), then commit.
        ingest.drain().await;
        ingest.commit(&consumer, CommitMode::Sync);
        info!("content change consumer stopped");
    }
}

struct Ingest {
    cfg: KafkaConfig,
    service: Arc<ContentService>,
    /// The provisioning policy: a producer named in it may change only its keys.
    access: Arc<Access>,
    /// Producers' signing secrets (`kafka.event_signing_key_files`).
    signatures: crate::signature::EventKeys,
    node: String,
    producer: FutureProducer<KafkaContext>,
    unacked: VecDeque<Unacked>,
    /// Per partition of the change topic: the next offset to commit.
    committable: BTreeMap<i32, i64>,
    /// Per partition: records consumed since its offset was last committed.
    uncommitted: BTreeMap<i32, usize>,
}

impl Ingest {
    /// Decides what to publish for one record. `None` when shutdown interrupted a retry.
    async fn process(
        &self,
        msg: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        use rdkafka::Message;
        let payload = msg.payload().unwrap_or_default();
        let change = match events::decode_change(msg.key(), payload) {
            Ok(c) => c,
            Err(e) => return Some(self.dead_letter(msg, e.reason(), &e.to_string())),
        };
        // Checked before anything else the event says is believed.
        let sig = msg.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == crate::signature::SIGNATURE_HEADER)
                .and_then(|h| h.value)
        });
        if let Err(refused) = self.signatures.verify(&change.producer, payload, sig) {
            let why = format!("producer {:?}: {}", change.producer, refused.detail());
            return Some(self.dead_letter(msg, refused.reason(), &why));
        }
        if !self.producer_allowed(&change) {
            let why = format!(
                "producer {:?} is not in kafka.allowed_producers",
                change.producer
            );
            return Some(self.dead_letter(msg, "producer_not_allowed", &why));
        }
        if let Err(refusal) =
            self.access
                .authorize_producer(&change.producer, &change.key, Intent::Write)
        {
            let why = refusal.reason();
            return Some(self.dead_letter(msg, "producer_forbidden", &why));
        }
        loop {
            match self.service.apply(&change).await {
                Ok(receipt) => {
                    let outcome = match receipt.status {
                        WriteStatus::Duplicate => m::OUTCOME_DUPLICATE,
                        _ => m::OUTCOME_APPLIED,
                    };
                    counter!(m::EVENTS, "outcome" => outcome).increment(1);
                    let Some(version) = receipt.version else {
                        // Applied and duplicate receipts always carry the version.
                        return Some(self.dead_letter(msg, "internal", "no version after apply"));
                    };
                    return Some(self.applied(msg, &change, version));
                }
                Err(e) if e.is_retryable() => {
                    counter!(m::STORE_RETRIES).increment(1);
                    warn!(%e, key = %change.key, "document store unavailable; retrying the change");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(STORE_BACKOFF) => {}
                    }
                }
                Err(e) => return Some(self.rejected(msg, &e)),
            }
        }
    }

    /// A producer named in `kafka.allowed_producers`, the provisioning API, or a provisioner
    /// of `[provisioning]` (whose key patterns are checked next).
    fn producer_allowed(&self, change: &Change) -> bool {
        let allowed = &self.cfg.allowed_producers;
        allowed.is_empty()
            || change.producer == PROVISIONING_API
            || allowed.contains(&change.producer)
            || self.access.is_provisioner(&change.producer)
    }

    fn rejected(&self, msg: &BorrowedMessage<'_>, e: &ContentError) -> Outcome {
        self.dead_letter(msg, e.reason(), &e.to_string())
    }

    fn applied(&self, msg: &BorrowedMessage<'_>, change: &Change, version: u64) -> Outcome {
        let applied = events::Applied {
            change_id: change.change_id.clone(),
            key: change.key.clone(),
            version,
            timing: change.timing,
            occurred_unix_ms: change.occurred_unix_ms,
            applied_unix_ms: unix_ms(),
            applied_by: self.node.clone(),
            resync: change.op.touches_resync(),
        };
        Outcome {
            topic: self.cfg.topics.applied.clone(),
            key: events::record_key(&change.key).into_bytes(),
            payload: events::encode_applied(&applied),
            // The applied record continues the change's trace from this node's span.
            headers: crate::trace::current_or(trace_headers(msg)),
        }
    }

    /// The record, bytes and headers unchanged, plus why it was refused.
    fn dead_letter(&self, msg: &BorrowedMessage<'_>, reason: &str, detail: &str) -> Outcome {
        use rdkafka::Message;
        counter!(m::EVENTS, "outcome" => m::OUTCOME_DEAD_LETTER).increment(1);
        counter!(m::DEAD_LETTERS, "reason" => reason.to_owned()).increment(1);
        warn!(
            reason,
            detail,
            partition = msg.partition(),
            offset = msg.offset(),
            "change refused; dead-lettered"
        );
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        for (k, v) in [
            ("uaprof-reason", reason),
            ("uaprof-error", detail),
            ("uaprof-source", source.as_str()),
            ("uaprof-rejected-by", self.node.as_str()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        Outcome {
            topic: self.cfg.topics.dead_letter.clone(),
            key: msg.key().unwrap_or_default().to_vec(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }

    /// Hands the outcome of `msg` to the producer; its offset becomes committable once the
    /// broker acknowledged it.
    async fn publish(&mut self, msg: &BorrowedMessage<'_>, o: Outcome, stop: &CancellationToken) {
        use rdkafka::Message;
        let (partition, offset) = (msg.partition(), msg.offset());
        loop {
            let record = FutureRecord::to(&o.topic)
                .key(&o.key)
                .payload(&o.payload)
                .headers(o.headers.clone());
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.unacked.push_back(Unacked {
                        partition,
                        offset,
                        topic: o.topic,
                        key: o.key,
                        payload: o.payload,
                        headers: o.headers,
                        delivery,
                    });
                    return;
                }
                Err((e, _)) => {
                    // The producer's queue is full: wait for the oldest, then try again.
                    warn!(%e, "kafka producer queue full");
                    if self.unacked.is_empty() {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(PUBLISH_BACKOFF) => {}
                        }
                    }
                    self.reap(true).await;
                }
            }
        }
    }

    /// Pops acknowledged records off the front (waiting for the front one when `wait`),
    /// re-publishing any the broker refused. Order is kept: an offset becomes committable
    /// only after everything consumed before it.
    async fn reap(&mut self, wait: bool) {
        let mut waited = false;
        while let Some(front) = self.unacked.front_mut() {
            let result = if wait && !waited {
                waited = true;
                Some((&mut front.delivery).await)
            } else {
                futures_now(&mut front.delivery)
            };
            let Some(result) = result else { return };
            let Some(done) = self.unacked.pop_front() else {
                return;
            };
            match result {
                Ok(Ok(_)) => {
                    self.committable.insert(done.partition, done.offset + 1);
                }
                failed => {
                    let why = match failed {
                        Ok(Err((e, _))) => e.to_string(),
                        _ => "delivery cancelled".into(),
                    };
                    counter!(m::PUBLISH_RETRIES).increment(1);
                    warn!(
                        why,
                        topic = done.topic,
                        "record not delivered; publishing it again"
                    );
                    tokio::time::sleep(PUBLISH_BACKOFF).await;
                    let record = FutureRecord::to(&done.topic)
                        .key(&done.key)
                        .payload(&done.payload)
                        .headers(done.headers.clone());
                    match self.producer.send_result(record) {
                        Ok(delivery) => self.unacked.push_front(Unacked { delivery, ..done }),
                        Err(_) => self.unacked.push_front(done),
                    }
                    return;
                }
            }
        }
    }

    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.cfg.delivery_timeout;
        while !self.unacked.is_empty() && tokio::time::Instant::now() < deadline {
            self.reap(true).await;
        }
    }

    fn commit(&mut self, consumer: &StreamConsumer<KafkaContext>, mode: CommitMode) {
        if self.committable.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.committable {
            if let Err(e) =
                tpl.add_partition_offset(&self.cfg.topics.changes, *p, Offset::Offset(*next))
            {
                warn!(%e, "cannot build commit list");
                return;
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                for p in self.committable.keys() {
                    self.uncommitted.remove(p);
                }
                self.committable.clear();
            }
            // A revoked partition cannot be committed here (its next owner re-applies
            // nothing and re-publishes the applied records, which is harmless), and a broker
            // that is down cannot take commits or give records.
            Err(e) => {
                warn!(%e, "offset commit failed; records after the last commit may be redelivered");
                for p in self.committable.keys() {
                    self.uncommitted.remove(p);
                }
                self.committable.clear();
            }
        }
    }
}

/// Polls a future once without blocking.
fn futures_now<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
