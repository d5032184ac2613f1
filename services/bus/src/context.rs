//! The client context every Kafka client of this crate uses: librdkafka's logs through
//! `tracing`, and its statistics as consumer lag gauges.

use std::collections::BTreeSet;
use std::sync::Mutex;

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
    /// (topic, partition) whose lag the last statistics reported: a partition that leaves
    /// them (revoked in a rebalance) is set to 0 rather than left at its last value, which
    /// a dashboard's `max by (partition)` would otherwise show for ever.
    reported: Mutex<BTreeSet<(String, i32)>>,
}

impl KafkaContext {
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    /// The lags to publish from one round of statistics: each partition assigned to this
    /// consumer, and 0 for each one the previous round had and this one lacks.
    fn lags(&self, statistics: Statistics) -> Vec<(String, i32, f64)> {
        let mut out = Vec::new();
        let mut now = BTreeSet::new();
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; a lag of -1
                // means "unknown" (not assigned to us, or no committed offset yet).
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                out.push((topic.clone(), partition, p.consumer_lag as f64));
                now.insert((topic.clone(), partition));
            }
        }
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in reported.difference(&now) {
            out.push((topic.clone(), *partition, 0.0));
        }
        *reported = now;
        out
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
        for (topic, partition, lag) in self.lags(statistics) {
            metrics::gauge!(
                m::CONSUMER_LAG,
                "group" => self.group.clone(),
                "topic" => topic,
                "partition" => partition.to_string()
            )
            .set(lag);
        }
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use rdkafka::statistics::{Partition, Topic};

    use super::*;

    fn stats(lags: &[(i32, i64)]) -> Statistics {
        let partitions = lags
            .iter()
            .map(|&(p, consumer_lag)| {
                let partition = Partition {
                    partition: p,
                    consumer_lag,
                    ..Partition::default()
                };
                (p, partition)
            })
            .collect();
        let topic = Topic {
            topic: "changes".into(),
            partitions,
            ..Topic::default()
        };
        Statistics {
            topics: [("changes".to_owned(), topic)].into(),
            ..Statistics::default()
        }
    }

    #[test]
    fn a_partition_assigned_elsewhere_reads_zero_instead_of_its_last_lag() {
        let ctx = KafkaContext::new("g");
        let mut first = ctx.lags(stats(&[(-1, 0), (0, 500), (1, 7), (2, -1)]));
        first.sort_by_key(|l| l.1);
        let c = |p, lag| ("changes".to_owned(), p, lag);
        assert_eq!(first, [c(0, 500.0), c(1, 7.0)]);
        // Partition 0 revoked (librdkafka reports -1), 2 assigned.
        let mut second = ctx.lags(stats(&[(0, -1), (1, 9), (2, 3)]));
        second.sort_by_key(|l| l.1);
        assert_eq!(second, [c(0, 0.0), c(1, 9.0), c(2, 3.0)]);
        // Zeroed once, then no longer published.
        assert_eq!(ctx.lags(stats(&[(1, 9), (2, 3)])).len(), 2);
    }
}
