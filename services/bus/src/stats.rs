//! A consumer context that turns librdkafka's statistics into lag gauges.

use rdkafka::Statistics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;

use crate::telemetry as m;

/// Headers copied from a change record onto the records it causes (W3C trace context).
pub(crate) const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Publishes `kafka_consumer_lag{group, topic, partition}` from the statistics librdkafka
/// emits every `statistics.interval.ms`.
pub struct StatsContext {
    group: String,
}

impl StatsContext {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
        }
    }
}

impl ClientContext for StatsContext {
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

impl ConsumerContext for StatsContext {}
