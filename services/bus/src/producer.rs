//! [`ChangeProducer`]: publishes change events to the change topic (the provisioning API with
//! `--kafka`, the storm simulator's `--via kafka`, tests).

use async_trait::async_trait;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use uaprof_api::Change;

use crate::KafkaConfig;
use crate::context::KafkaContext;

/// A producer of `uaprof.events.v1.ProfileChange` records. Cheap to clone.
#[derive(Clone)]
pub struct ChangeProducer {
    producer: FutureProducer<KafkaContext>,
    topic: String,
    /// Signs the events of producers this tier holds a key for.
    signatures: std::sync::Arc<crate::signature::EventKeys>,
}

impl std::fmt::Debug for ChangeProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ChangeProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, String> {
        let producer = cfg
            .producer()
            .create_with_context(KafkaContext::new("-"))
            .map_err(|e| format!("kafka producer: {e}"))?;
        Ok(Self {
            producer,
            topic: cfg.topics.changes.clone(),
            signatures: std::sync::Arc::new(crate::signature::EventKeys::load(cfg)?),
        })
    }

    /// Publishes one change and waits until the broker has it; returns (partition, offset).
    /// Without headers of its own, the record carries the current span's trace context.
    #[tracing::instrument(name = "kafka.produce", skip_all, fields(key = %change.key))]
    pub async fn send(
        &self,
        change: &Change,
        headers: Option<OwnedHeaders>,
    ) -> Result<(i32, i64), String> {
        let (key, value) = events::encode_change(change).map_err(|e| e.to_string())?;
        let mut record = FutureRecord::to(&self.topic).key(&key).payload(&value);
        let mut headers = headers.unwrap_or_else(|| crate::trace::current_or(OwnedHeaders::new()));
        let signature = self.signatures.sign(&change.producer, &value);
        if let Some(sig) = &signature {
            headers = headers.insert(rdkafka::message::Header {
                key: crate::signature::SIGNATURE_HEADER,
                value: Some(sig.as_str()),
            });
        }
        record = record.headers(headers);
        match self.producer.send(record, Timeout::Never).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(format!("kafka: change not delivered: {e}")),
        }
    }

    /// Waits until every record handed to the producer is delivered (or fails).
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), String> {
        use rdkafka::producer::Producer;
        self.producer.flush(timeout).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl content::ChangeLog for ChangeProducer {
    async fn append(&self, change: &Change) -> Result<(), String> {
        self.send(change, None).await.map(|_| ())
    }
}
