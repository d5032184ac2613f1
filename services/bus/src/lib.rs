//! The Kafka path (librdkafka through `rdkafka`, events from the `events` crate).
//!
//! ```text
//!  OSS / provisioning API ──ProfileChange──► changes topic ──(group: content)──► content tier
//!        content tier ──ProfileApplied (after the change is durable)──► applied topic
//!        applied topic ──(group: notifier)──► notifier nodes ──► fan-out work in the store
//!        refused change records ──► dead-letter topic (reason in headers)
//! ```
//!
//! * [`config`]: the `[kafka]` table ([`KafkaConfig`]) and the client defaults.
//! * [`admin`]: [`ensure_topics`], creating missing topics at start.
//! * [`producer`]: [`ChangeProducer`], which appends changes to the change topic (and is the
//!   content tier's [`content::ChangeLog`] when the provisioning API goes through Kafka).
//! * [`ingest`]: [`ContentConsumer`], the content tier's consumer of the change topic.
//! * [`feed`]: [`AppliedFeed`], the notifiers' [`uaprof_api::ChangeSource`].
//! * `context`: the client context: librdkafka logs through tracing, consumer lag gauges.
//! * `trace`: W3C trace context in record headers, so a change's trace crosses the tiers.

pub mod admin;
pub mod config;
mod context;
pub mod feed;
pub mod ingest;
pub mod producer;
pub mod signature;
pub mod telemetry;
mod trace;

pub use admin::ensure_topics;
pub use config::KafkaConfig;
pub use feed::AppliedFeed;
pub use ingest::ContentConsumer;
pub use producer::ChangeProducer;
pub use rdkafka::message::OwnedHeaders;
pub use telemetry::describe_metrics;
