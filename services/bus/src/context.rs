//! The client context every Kafka client of this crate uses: librdkafka's logs through
//! `tracing`, and its statistics as consumer lag gauges.

use rdkafka::Statistics;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use crate::telemetry as m;

/// Headers copied from a change record onto the records it causes (W3C trace context).
pub(crate) const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Publishes `kafka_consumer_lag{group, topic, partition}` from the statistics librdkafka
/// emits every `statistics.interval.ms` (consumers), and logs librdkafka's messages.
pub struct KafkaContext {
    group: String,
}

impl KafkaContext {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
        }
    }
}

/// librdkafka reports a broker it cannot reach as an error, then retries by itself; for an
/// operator that is a warning (the metrics and the retries tell whether it lasts).
fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => {
            tracing::info!(target: "librdkafka", facility, "{message}");
        }
        _ => tracing::warn!(target: "librdkafka", facility, "{message}"),
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error; retrying");
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; a lag of -1
                // means "unknown" (not assigned to us, or no committed offset yet).
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    m::CONSUMER_LAG,
                    "group" => self.group.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for KafkaContext {}
