//! Topic creation at start-up (`kafka.create_topics`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaConfig;
use crate::context::KafkaContext;

/// How long the broker gets to create the topics.
const CREATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates the change, applied and dead-letter topics that do not exist yet.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<KafkaContext> = cfg
        .client(&[])
        .create_with_context(KafkaContext::new("-"))
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let names = [
        &cfg.topics.changes,
        &cfg.topics.applied,
        &cfg.topics.dead_letter,
    ];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n.as_str(),
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|e| format!("kafka create topics: {e}"))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = name, partitions = cfg.partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("kafka create topic {name}: {code}")),
        }
    }
    Ok(())
}
