//! Topic creation and validation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use tracing::info;

use crate::{ClientConfig, Error, Result};

/// A topic the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configs (`cleanup.policy`, `retention.ms`...).
    pub configs: Vec<(String, String)>,
}

/// Creates the topics that do not exist and checks the partition count of
/// those that do (a mismatch is an error naming the topic).
pub async fn ensure_topics(cfg: &ClientConfig, specs: &[TopicSpec]) -> Result<()> {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = c
        .create()
        .map_err(|e| Error::kafka("create admin client", e))?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication),
            );
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| Error::kafka("create topics", e))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Topic {
                    topic: name,
                    problem: format!("cannot create: {code}"),
                });
            }
        }
    }
    for s in specs {
        let mut found = 0;
        for _ in 0..50 {
            let md = admin
                .inner()
                .fetch_metadata(Some(&s.name), Duration::from_secs(5))
                .map_err(|e| Error::kafka(format!("metadata of {}", s.name), e))?;
            found = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
            if found > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if found != s.partitions {
            return Err(Error::Topic {
                topic: s.name.clone(),
                problem: format!(
                    "has {found} partitions, the configuration expects {}",
                    s.partitions
                ),
            });
        }
    }
    Ok(())
}
