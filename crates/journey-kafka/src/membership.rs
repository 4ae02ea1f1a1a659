//! Group membership that hands out *shares* of the work: the partitions of a
//! coordination topic, each the unit of state a worker process runs, moved
//! between processes by the consumer group's (cooperative-sticky) rebalancing.
//!
//! The coordination topic carries no records; the group only decides who
//! holds which share. A share is released (its owner stops and commits) inside
//! the revoke callback, before the group hands it to another member.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use crate::client::{ClientConfig, Ctx};
use crate::{Error, Result};

/// What runs the shares a member is given.
pub trait ShareOwner: Send + Sync + 'static {
    /// The group gave these shares to this member: start them.
    fn assigned(&self, shares: Vec<i32>);
    /// The group takes these shares away (rebalance, or lost after a session
    /// timeout): return only once they are stopped and their work committed
    /// or abandoned.
    fn revoked(&self, shares: Vec<i32>);
}

struct MemberCtx {
    logs: Ctx,
    topic: String,
    owner: Arc<dyn ShareOwner>,
    rebalances: AtomicU64,
}

impl MemberCtx {
    fn shares(&self, list: &TopicPartitionList) -> Vec<i32> {
        let mut v: Vec<i32> = list
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        v.sort_unstable();
        v
    }
}

impl ClientContext for MemberCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason)
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logs.log(level, fac, log_message)
    }
}

impl ConsumerContext for MemberCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let shares = self.shares(list);
            info!(?shares, "shares revoked: stopping them");
            self.owner.revoked(shares);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(list) => {
                let shares = self.shares(list);
                info!(?shares, "shares assigned");
                self.owner.assigned(shares);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "share rebalance error"),
        }
    }
}

/// A member of the share group (blocking API; poll it from one thread).
pub struct Membership {
    inner: BaseConsumer<MemberCtx>,
}

impl Membership {
    /// Joins `group` as a member for the partitions of `topic`, with a static
    /// identity when `instance_id` is given. Shares arrive through `owner`
    /// while [`Membership::poll`] runs.
    pub fn join(
        cfg: &ClientConfig,
        group: &str,
        topic: &str,
        instance_id: Option<&str>,
        owner: Arc<dyn ShareOwner>,
    ) -> Result<Self> {
        let mut defaults = vec![
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("partition.assignment.strategy", "cooperative-sticky"),
        ];
        if let Some(id) = instance_id {
            defaults.push(("group.instance.id", id));
        }
        let inner: BaseConsumer<MemberCtx> = cfg
            .build(&defaults)
            .create_with_context(MemberCtx {
                logs: Ctx::default(),
                topic: topic.to_string(),
                owner,
                rebalances: AtomicU64::new(0),
            })
            .map_err(|e| Error::kafka("create the share group member", e))?;
        inner
            .subscribe(&[topic])
            .map_err(|e| Error::kafka("subscribe to the share topic", e))?;
        Ok(Membership { inner })
    }

    /// Serves the group (heartbeats, rebalance callbacks) for up to `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<()> {
        match self.inner.poll(timeout) {
            Some(Err(e)) if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) => {
                Err(Error::kafka("share group", e))
            }
            Some(Err(e)) if !matches!(e, KafkaError::PartitionEOF(_)) => {
                warn!(error = %e, "share group member error");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Rebalances of the share group seen by this member.
    pub fn rebalances(&self) -> u64 {
        self.inner.context().rebalances.load(Ordering::Relaxed)
    }

    /// The shares held now.
    pub fn shares(&self) -> Result<Vec<i32>> {
        let list = self
            .inner
            .assignment()
            .map_err(|e| Error::kafka("share assignment", e))?;
        Ok(self.inner.context().shares(&list))
    }
}
