//! The `[kafka]` table.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Change events from the OSS (and the provisioning API), `uaprof.events.v1.ProfileChange`.
    pub changes: String,
    /// What the content tier applied, `uaprof.events.v1.ProfileApplied`; notifiers read it.
    pub applied: String,
    /// Refused change records, bytes unchanged, with the reason in headers.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            changes: "uaprof.changes".into(),
            applied: "uaprof.applied".into(),
            dead_letter: "uaprof.changes.dlq".into(),
        }
    }
}

/// Consumer group ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Groups {
    /// The content tier's group on the change topic: each change is applied by one node.
    pub content: String,
    /// The notifier tier's group on the applied topic: each applied change is fanned out
    /// (recorded as pending work in the subscription store) by one node.
    pub notifier: String,
}

impl Default for Groups {
    fn default() -> Self {
        Self {
            content: "uaprof-content".into(),
            notifier: "uaprof-notifier".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    pub topics: Topics,
    pub groups: Groups,
    /// librdkafka properties applied to every client (producer and consumers) after this
    /// crate's defaults, so they can override them: `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`, `session.timeout.ms`, ...
    pub properties: BTreeMap<String, String>,
    /// Producer identities accepted in change events; empty accepts any. Changes made
    /// through the provisioning API (producer `provisioning-api`) are always accepted.
    pub allowed_producers: Vec<String>,
    /// Create missing topics at start with `partitions` partitions (needs the broker's
    /// permission; turn off where topics are managed separately).
    pub create_topics: bool,
    /// Partitions of topics this node creates. One key's changes stay in one partition;
    /// more partitions let more content and notifier nodes share the work.
    pub partitions: i32,
    /// Replication factor of topics this node creates.
    pub replication_factor: i32,
    /// How long a producer keeps retrying one record before reporting failure.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Producers whose events must be signed, each with the file of its shared secret (at
    /// least 32 bytes): an event names its producer, and its record must carry header
    /// `uaprof-signature` = hex HMAC-SHA256 of the record value under that secret, or it is
    /// dead-lettered (`bad_signature`). A key for `provisioning-api` makes this tier sign
    /// the provisioning API's own events.
    pub event_signing_key_files: BTreeMap<String, std::path::PathBuf>,
    /// Refuse events from producers without a signing key (`unsigned`).
    pub require_signed_events: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topics: Topics::default(),
            groups: Groups::default(),
            properties: BTreeMap::new(),
            allowed_producers: Vec::new(),
            create_topics: true,
            // Twelve divides evenly among 1, 2, 3, 4 and 6 nodes of either tier.
            partitions: 12,
            replication_factor: 1,
            // Long enough to ride out a broker restart or a leader election.
            delivery_timeout: Duration::from_secs(30),
            event_signing_key_files: BTreeMap::new(),
            require_signed_events: false,
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        crate::signature::EventKeys::load(self)?;
        let t = &self.topics;
        for (name, v) in [
            ("kafka.topics.changes", &t.changes),
            ("kafka.topics.applied", &t.applied),
            ("kafka.topics.dead_letter", &t.dead_letter),
            ("kafka.groups.content", &self.groups.content),
            ("kafka.groups.notifier", &self.groups.notifier),
        ] {
            if v.is_empty() {
                return Err(format!("{name} is empty"));
            }
        }
        if t.changes == t.applied || t.changes == t.dead_letter || t.applied == t.dead_letter {
            return Err("kafka.topics: changes, applied and dead_letter must differ".into());
        }
        if self.groups.content == self.groups.notifier {
            return Err("kafka.groups: content and notifier must differ".into());
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err("kafka.partitions and kafka.replication_factor must be positive".into());
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return Err("kafka.delivery_timeout must be at least 1s".into());
        }
        // librdkafka checks property names and values when a client is created.
        self.client(&[])
            .create::<rdkafka::producer::BaseProducer>()
            .map(|_| ())
            .map_err(|e| format!("kafka.properties: {e}"))
    }

    /// A producer's configuration.
    pub(crate) fn producer(&self) -> ClientConfig {
        let timeout = self.delivery_timeout.as_millis().to_string();
        self.client(&[
            // One key's changes in one partition, placed as the Java client places them, so
            // OSS producers in any language agree with ours.
            ("partitioner", "murmur2_random"),
            // Retries never reorder or duplicate a partition's records.
            ("enable.idempotence", "true"),
            ("message.timeout.ms", &timeout),
            // Latency first: a change should reach the notifiers in milliseconds. Records
            // still batch while a request is in flight.
            ("linger.ms", "0"),
        ])
    }

    /// A consumer's configuration in `group`; offsets are committed explicitly, only after
    /// the work they cover is durable.
    pub(crate) fn consumer(&self, group: &str) -> ClientConfig {
        self.client(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            // A dead node's partitions move within seconds, not librdkafka's 45 s.
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "2000"),
        ])
    }

    /// A client configuration: our defaults, then `extra`, then the operator's properties.
    pub(crate) fn client(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("log_level", "4");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
