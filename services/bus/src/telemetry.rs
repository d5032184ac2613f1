//! Metric names of the Kafka path.

use metrics::{describe_counter, describe_gauge, describe_histogram};

pub const EVENTS: &str = "kafka_change_events_total";
pub const DEAD_LETTERS: &str = "kafka_dead_letters_total";
pub const STORE_RETRIES: &str = "kafka_change_store_retries_total";
pub const PUBLISH_RETRIES: &str = "kafka_publish_retries_total";
pub const CONSUMER_LAG: &str = "kafka_consumer_lag";
pub const APPLIED_RECEIVED: &str = "kafka_applied_received_total";
pub const APPLIED_MALFORMED: &str = "kafka_applied_malformed_total";
pub const APPLIED_DELAY: &str = "kafka_applied_delay_seconds";

pub const OUTCOME_APPLIED: &str = "applied";
pub const OUTCOME_DUPLICATE: &str = "duplicate";
pub const OUTCOME_DEAD_LETTER: &str = "dead_letter";

pub fn describe_metrics() {
    describe_counter!(
        EVENTS,
        "Change records handled by the content tier, by outcome (applied, duplicate, dead_letter)"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Change records refused and copied to the dead-letter topic, by reason"
    );
    describe_counter!(
        STORE_RETRIES,
        "Change records retried because the document store was unavailable"
    );
    describe_counter!(
        PUBLISH_RETRIES,
        "Applied or dead-letter records published again after the broker did not take them"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records between a consumer group's position and the partition's end, per partition \
         this consumer is assigned (0 once the partition is assigned elsewhere)"
    );
    describe_counter!(
        APPLIED_RECEIVED,
        "Applied records received by the notifier tier"
    );
    describe_counter!(
        APPLIED_MALFORMED,
        "Applied records the notifier tier could not decode (skipped)"
    );
    describe_histogram!(
        APPLIED_DELAY,
        "Time from the producer's change (occurred_unix_ms) to its applied record reaching a \
         notifier node"
    );
}
