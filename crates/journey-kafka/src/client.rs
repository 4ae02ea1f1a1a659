//! Blocking consumer and (transactional) producer over librdkafka.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig as RdConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as RdHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::{Error, Result};

/// A topic partition.
pub type Partition = (String, i32);

/// Connection settings: bootstrap servers plus librdkafka properties passed
/// through unchanged (TLS, SASL, tuning...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Any librdkafka property, applied last.
    pub properties: BTreeMap<String, String>,
}

impl ClientConfig {
    pub(crate) fn build(&self, defaults: &[(&str, &str)]) -> RdConfig {
        let mut c = RdConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set_log_level(RDKafkaLogLevel::Warning);
        c
    }
}

/// A record read from Kafka, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp, if any.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers as UTF-8 (lossy).
    pub headers: Vec<Header>,
}

/// A record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Topic.
    pub topic: String,
    /// Key bytes, sent as they are (partitioning uses them). Not
    /// necessarily text: state records' keys hold binary times.
    pub key: Vec<u8>,
    /// Value bytes; none is a tombstone (compacted topics).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Explicit partition; none: librdkafka's partitioner on the key.
    pub partition: Option<i32>,
}

/// The partition of a key among `partitions`, the same in every worker and
/// release (FNV-1a 64 of the key's bytes): used for the repartition topic and
/// the changelog partitions, so that a customer's events and state meet in
/// one place.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// An offset for [`Consumer::assign`]: the start of the partition.
pub const BEGINNING: i64 = -2;

/// Routes librdkafka logs into `tracing` and records rebalances.
#[derive(Default)]
pub struct Ctx {
    failed_deliveries: AtomicU64,
    /// Next offset after the last delivered record, per topic and partition.
    delivered: std::sync::Mutex<BTreeMap<String, BTreeMap<i32, i64>>>,
    rebalances: AtomicU64,
    lag: std::sync::Mutex<BTreeMap<Partition, i64>>,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // Last stable offset (the end for read_committed); -1: unknown.
                if partition >= 0 && p.ls_offset >= 0 {
                    lag.insert((topic.clone(), partition), p.ls_offset);
                }
            }
        }
        if let Ok(mut l) = self.lag.lock() {
            *l = lag;
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how a restore knows it is done, not an error.
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            error!(error = %error, "librdkafka: {reason}");
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => warn!(facility = fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => info!(partitions = tpl.count(), "partitions assigned"),
            Rebalance::Revoke(tpl) => info!(partitions = tpl.count(), "partitions revoked"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.failed_deliveries.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "delivery failed");
            }
            Ok(m) => {
                let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
                let next = m.offset() + 1;
                match delivered.get_mut(m.topic()) {
                    Some(parts) => {
                        let end = parts.entry(m.partition()).or_insert(next);
                        *end = (*end).max(next);
                    }
                    None => {
                        delivered.insert(
                            m.topic().to_string(),
                            BTreeMap::from([(m.partition(), next)]),
                        );
                    }
                }
            }
        }
    }
}

fn input_record(m: &rdkafka::message::BorrowedMessage<'_>) -> InputRecord {
    InputRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| Header {
                        name: h.key.to_string(),
                        value: String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A consumer (blocking API; call from a dedicated thread).
pub struct Consumer {
    inner: BaseConsumer<Ctx>,
}

fn tpl(offsets: &BTreeMap<Partition, i64>) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        let offset = if *offset == BEGINNING {
            Offset::Beginning
        } else {
            Offset::Offset(*offset)
        };
        list.add_partition_offset(topic, *partition, offset)
            .map_err(|e| Error::kafka("build offset list", e))?;
    }
    Ok(list)
}

impl Consumer {
    /// A consumer in `group`, reading committed records only, offsets stored by us.
    pub fn new(cfg: &ClientConfig, group: &str) -> Result<Self> {
        let inner: BaseConsumer<Ctx> = cfg
            .build(&[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("queued.max.messages.kbytes", "65536"),
                // A broker that does not answer a waiting fetch as soon as
                // records arrive (the local one) would otherwise add up to
                // librdkafka's 500 ms default to every event's latency.
                ("fetch.wait.max.ms", "20"),
                ("statistics.interval.ms", "5000"),
            ])
            .create_with_context(Ctx::default())
            .map_err(|e| Error::kafka("create consumer", e))?;
        Ok(Consumer { inner })
    }

    /// Subscribes to topics (group-managed assignment).
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner
            .subscribe(topics)
            .map_err(|e| Error::kafka("subscribe", e))
    }

    /// Assigns partitions explicitly, starting at the given offsets
    /// ([`BEGINNING`] for the start), without group management.
    pub fn assign(&self, offsets: &BTreeMap<Partition, i64>) -> Result<()> {
        self.inner
            .assign(&tpl(offsets)?)
            .map_err(|e| Error::kafka("assign", e))
    }

    /// Number of partitions of a topic (from metadata).
    pub fn partition_count(&self, topic: &str, timeout: Duration) -> Result<usize> {
        let md = self
            .inner
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("metadata of {topic}"), e))?;
        Ok(md.topics().first().map_or(0, |t| t.partitions().len()))
    }

    /// Low and high watermarks of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64)> {
        self.inner
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))
    }

    /// Polls up to `max` records, waiting at most `timeout` for the first one.
    /// Partition EOF and transient broker errors are logged, not returned.
    pub fn poll_batch(&self, max: usize, timeout: Duration) -> Result<Vec<InputRecord>> {
        let mut out = Vec::new();
        let mut wait = timeout;
        while out.len() < max {
            match self.inner.poll(wait) {
                None => break,
                Some(Ok(m)) => out.push(input_record(&m)),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
                        return Err(Error::kafka("poll", e));
                    }
                    warn!(error = %e, "consumer error");
                }
            }
            wait = Duration::ZERO;
        }
        Ok(out)
    }

    /// Reads one partition from its start to its end (committed records only),
    /// for restoring state from a changelog. Uses its own short-lived client.
    pub fn read_to_end(
        cfg: &ClientConfig,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<Vec<InputRecord>> {
        Self::read_from(cfg, topic, partition, BEGINNING, timeout)
    }

    /// Reads one partition from `from` ([`BEGINNING`]: its start) to its end.
    pub fn read_from(
        cfg: &ClientConfig,
        topic: &str,
        partition: i32,
        from: i64,
        timeout: Duration,
    ) -> Result<Vec<InputRecord>> {
        let group = format!("journey-restore-{}", std::process::id());
        let c = Consumer {
            inner: cfg
                .build(&[
                    ("group.id", &group),
                    ("enable.auto.commit", "false"),
                    ("isolation.level", "read_committed"),
                    ("enable.partition.eof", "true"),
                ])
                .create_with_context(Ctx::default())
                .map_err(|e| Error::kafka("create restore consumer", e))?,
        };
        // The reported high watermark is only a hint (the local broker's can
        // lag behind acknowledged records): the end is the partition-EOF
        // event, or, failing that, two quiet seconds.
        let (low, high) = c.watermarks(topic, partition, timeout)?;
        let start = if from == BEGINNING {
            low
        } else {
            from.max(low)
        };
        c.assign(&BTreeMap::from([((topic.to_string(), partition), start)]))?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        let mut quiet_since = std::time::Instant::now();
        loop {
            match c.inner.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push(input_record(&m));
                    quiet_since = std::time::Instant::now();
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(out),
                Some(Err(e)) => warn!(error = %e, "restore consumer error"),
                None => {
                    if quiet_since.elapsed() >= Duration::from_secs(2) {
                        return Ok(out);
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Topic {
                    topic: topic.into(),
                    problem: format!(
                        "restore did not reach the end (offset {high}) within {timeout:?}"
                    ),
                });
            }
        }
    }

    /// The group's committed offsets for the given partitions (none when never committed).
    pub fn committed_for(
        &self,
        partitions: &[Partition],
        timeout: Duration,
    ) -> Result<BTreeMap<Partition, i64>> {
        let mut list = TopicPartitionList::new();
        for (t, p) in partitions {
            list.add_partition(t, *p);
        }
        let got = self
            .inner
            .committed_offsets(list, timeout)
            .map_err(|e| Error::kafka("committed offsets", e))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }

    /// Partitions currently assigned.
    pub fn assignment(&self) -> Result<Vec<Partition>> {
        let list = self
            .inner
            .assignment()
            .map_err(|e| Error::kafka("assignment", e))?;
        Ok(list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect())
    }

    /// Moves the read position of a partition (after an aborted transaction).
    pub fn seek(&self, partition: &Partition, offset: i64, timeout: Duration) -> Result<()> {
        self.inner
            .seek(&partition.0, partition.1, Offset::Offset(offset), timeout)
            .map_err(|e| Error::kafka(format!("seek {}/{}", partition.0, partition.1), e))
    }

    /// Commits offsets synchronously (at-least-once mode).
    pub fn commit(&self, offsets: &BTreeMap<Partition, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.inner
            .commit(&tpl(offsets)?, CommitMode::Sync)
            .map_err(|e| Error::kafka("commit offsets", e))
    }

    /// End (last stable offset) of each partition the consumer fetches, from
    /// librdkafka statistics (every 5 s). Lag is this minus the position.
    pub fn partition_ends(&self) -> BTreeMap<Partition, i64> {
        self.inner
            .context()
            .lag
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Rebalances seen so far.
    pub fn rebalances(&self) -> u64 {
        self.inner.context().rebalances.load(Ordering::Relaxed)
    }

    /// Leaves the group cleanly.
    pub fn close(&self) {
        self.inner.unsubscribe();
    }
}

/// A producer; transactional when built with a transactional id.
pub struct Producer {
    inner: BaseProducer<Ctx>,
    transactional: bool,
}

impl Producer {
    /// A producer. With `transactional_id`, transactions are initialised (fencing
    /// any older instance with the same id).
    pub fn new(
        cfg: &ClientConfig,
        transactional_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut defaults = vec![
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "100000"),
        ];
        if let Some(id) = transactional_id {
            defaults.push(("transactional.id", id));
            defaults.push(("transaction.timeout.ms", "60000"));
        }
        let inner: BaseProducer<Ctx> = cfg
            .build(&defaults)
            .create_with_context(Ctx::default())
            .map_err(|e| Error::kafka("create producer", e))?;
        if transactional_id.is_some() {
            inner
                .init_transactions(timeout)
                .map_err(|e| Error::kafka("init transactions", e))?;
        }
        Ok(Producer {
            inner,
            transactional: transactional_id.is_some(),
        })
    }

    /// Starts a transaction.
    pub fn begin(&self) -> Result<()> {
        self.inner
            .begin_transaction()
            .map_err(|e| Error::kafka("begin transaction", e))
    }

    /// Queues a record; when the local queue is full, serves delivery reports
    /// until there is room (backpressure instead of memory growth).
    pub fn send(&self, rec: &OutputRecord) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
        for h in &rec.headers {
            headers = headers.insert(RdHeader {
                key: &h.name,
                value: Some(h.value.as_bytes()),
            });
        }
        let mut record: BaseRecord<'_, Vec<u8>, Vec<u8>, ()> =
            BaseRecord::to(&rec.topic).key(&rec.key).headers(headers);
        if let Some(v) = &rec.value {
            record = record.payload(v);
        }
        if let Some(p) = rec.partition {
            record = record.partition(p);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.inner.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(Error::kafka(format!("produce to {}", rec.topic), e)),
            }
        }
    }

    /// Serves delivery callbacks without blocking.
    pub fn poll(&self) {
        self.inner.poll(Duration::ZERO);
    }

    /// Adds the consumer's offsets to the transaction and commits it.
    pub fn commit_transaction(
        &self,
        consumer: &Consumer,
        offsets: &BTreeMap<Partition, i64>,
        timeout: Duration,
    ) -> Result<()> {
        // Wait for every delivery report in 1 ms polls: rdkafka's flush
        // waited in 100 ms steps here, so every commit took ~103 ms (against
        // ~4 ms for the same transaction from Python's client).
        self.drain(timeout)?;
        if !offsets.is_empty() {
            let meta = consumer
                .inner
                .group_metadata()
                .ok_or_else(|| Error::Topic {
                    topic: "-".into(),
                    problem: "consumer has no group metadata".into(),
                })?;
            self.inner
                .send_offsets_to_transaction(&tpl(offsets)?, &meta, timeout)
                .map_err(|e| Error::kafka("send offsets to transaction", e))?;
        }
        self.inner
            .commit_transaction(timeout)
            .map_err(|e| Error::kafka("commit transaction", e))
    }

    /// Serves delivery reports until nothing is in flight.
    fn drain(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while self.inner.in_flight_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(Error::Topic {
                    topic: "-".into(),
                    problem: format!(
                        "{} records not delivered within {timeout:?}",
                        self.inner.in_flight_count()
                    ),
                });
            }
            self.inner.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Aborts the open transaction.
    pub fn abort_transaction(&self, timeout: Duration) -> Result<()> {
        self.inner
            .abort_transaction(timeout)
            .map_err(|e| Error::kafka("abort transaction", e))
    }

    /// Waits until every queued record is acknowledged; fails if any delivery failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.drain(timeout)?;
        let failed = self
            .inner
            .context()
            .failed_deliveries
            .swap(0, Ordering::Relaxed);
        if failed > 0 {
            return Err(Error::Topic {
                topic: "-".into(),
                problem: format!("{failed} deliveries failed"),
            });
        }
        Ok(())
    }

    /// For each partition of `topic`, the offset after the last record this
    /// producer has had acknowledged.
    pub fn delivered_ends(&self, topic: &str) -> BTreeMap<i32, i64> {
        let delivered = self
            .inner
            .context()
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        delivered.get(topic).cloned().unwrap_or_default()
    }

    /// Whether this producer uses transactions.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }
}
