//! The processing loop: consume, decode, run the engine, produce, commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use journey_core::{Engine, Output, Transition};
use journey_kafka::{
    BEGINNING, ClientConfig, Codec, Consumer, DeadLetter, Header, InputRecord, OutputRecord,
    Partition, Producer, TopicSpec,
};
use journey_store::{ChangelogRecord, Opened, Store, StoreBacking, StoreOptions};
use tracing::{info, warn};

use crate::config::{Config, Mode};
use crate::lineage::{self, Lineage};
use crate::metrics::{Contribution, Counted, Held, Metrics, now_ms};
use crate::topology::Topology;

/// The topics the worker needs, with their layout.
pub fn topic_specs(cfg: &Config) -> Vec<TopicSpec> {
    let t = &cfg.topics;
    let spec = |name: &str, partitions: i32, compact: bool, retention: &str| TopicSpec {
        name: name.to_string(),
        partitions,
        replication: t.replication,
        configs: vec![
            (
                "cleanup.policy".into(),
                if compact { "compact" } else { "delete" }.into(),
            ),
            ("retention.ms".into(), retention.into()),
        ],
    };
    let week = "604800000";
    let mut specs = vec![
        spec(&t.input, t.input_partitions, false, week),
        spec(&t.transitions, t.output_partitions, false, week),
        spec(&t.dead_letters, t.output_partitions, false, week),
        spec(&t.merges, t.output_partitions, false, week),
        spec(&t.identity_links, t.output_partitions, false, week),
    ];
    if let Ok(models) = cfg.stage_models() {
        for name in t.all_routed(&models) {
            specs.push(spec(&name, t.output_partitions, false, week));
        }
    }
    if cfg.processing.instances > 1 {
        specs.push(spec(&t.changelog, t.input_partitions, true, week));
        // One partition per share, no records: the share group divides them.
        specs.push(spec(
            &t.shares,
            cfg.processing.instances as i32,
            false,
            week,
        ));
        specs.push(spec(&t.repartition, t.input_partitions, false, week));
        // Links are the identity graph: kept forever.
        specs.push(spec(&t.identity_log, 1, false, "-1"));
    } else {
        specs.push(spec(&t.changelog, 1, true, week));
    }
    specs
}

struct Batch {
    records: Vec<OutputRecord>,
    /// Kafka timestamps of the events behind each transition (for latency).
    latencies: Vec<(String, i64)>,
}

/// Turns engine outputs into Kafka records.
struct Router<'a> {
    cfg: &'a Config,
    codec: &'a Codec,
    metrics: &'a Metrics,
}

impl Router<'_> {
    fn transition(&self, t: &Transition, source_ts: Option<i64>, batch: &mut Batch) -> Result<()> {
        let now = now_ms();
        let value = self.codec.encode_transition(t, now)?;
        let from = t.from.as_deref().unwrap_or("none");
        self.metrics
            .transitions
            .with_label_values(&[&*t.model, from, &*t.to, t.cause.as_str()])
            .inc();
        if let Some(ts) = source_ts {
            batch.latencies.push((t.model.to_string(), ts));
        }
        let record = OutputRecord {
            topic: self.cfg.topics.transitions.clone(),
            key: t.customer_key.as_bytes().to_vec(),
            value: Some(value),
            headers: vec![
                Header {
                    name: "model".into(),
                    value: t.model.to_string(),
                },
                Header {
                    name: "from".into(),
                    value: from.to_string(),
                },
                Header {
                    name: "to".into(),
                    value: t.to.to_string(),
                },
                Header {
                    name: "cause".into(),
                    value: t.cause.as_str().into(),
                },
                Header {
                    name: "transition-id".into(),
                    value: t.id(),
                },
            ],
            partition: None,
        };
        for topic in self.cfg.topics.routed(&t.model, t.from.as_deref(), &t.to) {
            batch.records.push(OutputRecord {
                topic,
                ..record.clone()
            });
        }
        batch.records.push(record);
        Ok(())
    }

    fn output(&self, o: Output, source_ts: Option<i64>, batch: &mut Batch) -> Result<()> {
        let topics = &self.cfg.topics;
        match o {
            Output::Transition(t) => self.transition(&t, source_ts, batch)?,
            Output::Merge(m) => {
                self.metrics.merges.inc();
                batch.records.push(OutputRecord {
                    topic: topics.merges.clone(),
                    key: m.surviving_key.as_bytes().to_vec(),
                    value: Some(self.codec.encode_merge(&m, now_ms())?),
                    headers: vec![],
                    partition: None,
                });
            }
            Output::Link {
                event_id,
                time,
                a,
                b,
            } => {
                self.metrics.links.with_label_values(&["accepted"]).inc();
                batch.records.push(OutputRecord {
                    topic: topics.identity_links.clone(),
                    key: a.key().into_bytes(),
                    value: Some(self.codec.encode_link(&a, &b, &event_id, time, None)?),
                    headers: vec![],
                    partition: None,
                });
            }
            Output::Rejected {
                event_id,
                time,
                rejection,
            } => {
                let reason = rejection.reason.as_str();
                self.metrics.links.with_label_values(&[reason]).inc();
                warn!(event_id = %event_id, a = %rejection.anchor, b = %rejection.other, reason, "identity link refused by guard");
                batch.records.push(OutputRecord {
                    topic: topics.identity_links.clone(),
                    key: rejection.anchor.key().into_bytes(),
                    value: Some(self.codec.encode_link(
                        &rejection.anchor,
                        &rejection.other,
                        &event_id,
                        time,
                        Some(reason),
                    )?),
                    headers: vec![],
                    partition: None,
                });
            }
            Output::Blocked { .. } => {
                self.metrics
                    .links
                    .with_label_values(&["blocked_value"])
                    .inc();
            }
            Output::Expired {
                customer_key,
                last_touch,
                identifiers,
            } => {
                self.metrics.expired.inc();
                tracing::debug!(customer = %customer_key, last_touch, identifiers, "customer expired");
            }
            Output::Duplicate { .. } => {}
        }
        Ok(())
    }

    fn dead_letter(
        &self,
        rec: &InputRecord,
        reason: &str,
        stage: &str,
        detail: String,
        batch: &mut Batch,
    ) -> Result<()> {
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        warn!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, detail = %detail, "dead-lettering input record");
        let d = DeadLetter {
            reason: reason.into(),
            detail,
            stage: stage.into(),
            topic: rec.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key.clone(),
            value: rec.value.clone(),
            failed_at: now_ms(),
        };
        batch.records.push(OutputRecord {
            topic: self.cfg.topics.dead_letters.clone(),
            key: format!("{}/{}/{}", rec.topic, rec.partition, rec.offset).into_bytes(),
            value: Some(self.codec.encode_dead_letter(&d)?),
            headers: vec![Header {
                name: "reason".into(),
                value: reason.into(),
            }],
            partition: None,
        });
        Ok(())
    }
}

/// Runs the worker, or with several instances one share of the work (its
/// state in `state.dir`), until `stop` is set. Blocking: call it from a
/// dedicated thread.
pub fn run(cfg: Config, share: u32, metrics: Metrics, stop: Arc<AtomicBool>) -> Result<()> {
    let restoring = metrics.health.restoring();
    let report = Contribution::new(&metrics);
    let models = cfg.stage_models()?;
    let codec = Codec::new(cfg.schema_ids, cfg.processing.max_payload_bytes);
    let client = cfg.client();
    let p = &cfg.processing;
    let group = cfg.kafka.application_id.clone();
    let topo = Topology::of(&cfg, share);
    let mut member = client.clone();
    // Static membership for the group that assigns the input; shares assign
    // their partitions themselves (the share group has the static identity).
    if let Some(id) = cfg.group_instance_id().filter(|_| topo.is_none()) {
        member
            .properties
            .entry("group.instance.id".into())
            .or_insert(id);
    }
    let consumer = Consumer::new(&member, &group).context("cannot create the consumer")?;
    let eos = p.mode == Mode::ExactlyOnce;
    let txn_id = match &topo {
        None => format!("{}-worker-{}", cfg.kafka.application_id, instance_suffix()),
        // Whichever process runs the share next fences this one.
        Some(t) => format!("{}-share-{}", cfg.kafka.application_id, t.me),
    };
    let producer = Producer::new(&client, eos.then_some(txn_id.as_str()), p.kafka_timeout)
        .context("cannot create the producer (is the broker reachable, and does it support transactions?)")?;
    let (store, mut engine, base, committed) =
        open_state(&cfg, &client, &consumer, models, &metrics, topo.as_ref())?;
    // Commit numbers of this run (see `lineage`), committed as the group's
    // offset of the instance's first changelog partition.
    let marker: Partition = (
        cfg.topics.changelog.clone(),
        topo.as_ref().map_or(0, |t| t.me),
    );
    let next_commit = std::cell::Cell::new(lineage::run_start(base, now_ms() * 1000));
    let mut run_record = Some(lineage::run_record(next_commit.get(), base));
    let mut lag_labels: Vec<Partition> = Vec::new();
    // Next offset to read per partition (for the lag gauge).
    let mut positions: BTreeMap<Partition, i64> = BTreeMap::new();
    let mut outs = Vec::new();
    let mut batch = Batch {
        records: Vec::new(),
        latencies: Vec::new(),
    };
    let router = Router {
        cfg: &cfg,
        codec: &codec,
        metrics: &metrics,
    };
    // Several instances: static assignment of the owned partitions, and the
    // whole identity log (read to its end now, then followed).
    let identity_log = match &topo {
        None => {
            consumer.subscribe(&[&cfg.topics.input])?;
            None
        }
        Some(t) => {
            let start: BTreeMap<Partition, i64> = committed
                .iter()
                .filter(|(tp, _)| **tp != marker)
                .map(|(tp, o)| (tp.clone(), *o))
                .collect();
            consumer.assign(&start)?;
            let links =
                Consumer::read_to_end(&client, &t.identity_log, 0, cfg.state.restore_timeout)
                    .context("cannot read the identity log")?;
            let next = links.last().map_or(BEGINNING, |r| r.offset + 1);
            apply_links(&links, t, &codec, &mut engine, &router, &mut batch)?;
            info!(links = links.len(), instance = t.me, instances = t.instances, owned = ?start.keys().collect::<Vec<_>>(), "identity log read; partitions assigned");
            let follower = Consumer::new(&client, &format!("{group}-identity-{}", t.me))?;
            follower.assign(&BTreeMap::from([((t.identity_log.clone(), 0), next)]))?;
            Some(follower)
        }
    };
    drop(restoring);
    info!(input = %cfg.topics.input, group = %group, mode = ?p.mode, share = topo.as_ref().map(|t| t.me), models = ?engine.models().iter().map(|m| m.name()).collect::<Vec<_>>(), "worker started");

    let mut txn = OpenTxn::default();
    let mut since_commit = 0usize;
    let mut last_commit = Instant::now();
    let mut last_record = Instant::now();

    let changelog = ChangelogTopic {
        topic: &cfg.topics.changelog,
        topo: topo.as_ref(),
    };
    let mut commit = |engine: &mut Engine, txn: &mut OpenTxn| -> Result<()> {
        let started = Instant::now();
        if let Some(e) = engine.backing_error() {
            anyhow::bail!("cannot read a journey from the local state: {e}");
        }
        if eos && !txn.active {
            return Ok(());
        }
        let n = next_commit.get();
        next_commit.set(n + 1);
        // Everything of earlier commits is acknowledged by now: a store at
        // this commit can resume the changelog from here.
        let resume = producer.delivered_ends(&cfg.topics.changelog);
        let mut prepared = Store::prepare_from(engine, true);
        if let Some(t) = &topo {
            t.keep_owned(&mut prepared.changelog);
        }
        for r in prepared.changelog.iter().filter(|r| r.is_published()) {
            producer.send(&changelog.record(r, n))?;
        }
        // Everything sent earlier in this transaction comes first, so the
        // store applies a key's writes in the order they were made.
        let mut staged_now = std::mem::take(&mut txn.staged);
        staged_now.append(&mut prepared.changelog);
        prepared.changelog = staged_now;
        if let Some((key, value)) = run_record.take() {
            producer.send(&OutputRecord {
                topic: cfg.topics.changelog.clone(),
                key: key.into_bytes(),
                value: Some(value),
                headers: vec![commit_header(n)],
                partition: Some(marker.1),
            })?;
        }
        let offsets = &mut txn.offsets;
        offsets.insert(marker.clone(), n);
        // The local write runs while Kafka commits: if the commit then fails
        // the store is ahead of the committed offsets, which the next start
        // detects (and rebuilds from the changelog).
        let (kafka, local) = std::thread::scope(|scope| {
            let local = scope.spawn(|| store.write_resumable(&prepared, offsets, &resume));
            let kafka = if eos {
                producer.commit_transaction(&consumer, offsets, p.kafka_timeout)
            } else {
                producer
                    .flush(p.kafka_timeout)
                    .and_then(|()| consumer.commit(offsets))
            };
            (kafka, local.join())
        });
        kafka?;
        txn.active = false;
        local
            .map_err(|_| anyhow::anyhow!("the state writer panicked"))?
            .context("the transaction committed but the local state could not be written; a restart restores from the changelog")?;
        // The store holds this commit: journeys may leave memory.
        engine.persisted(cfg.state.journey_cache_bytes);
        let c = engine.cache_stats();
        report.hold(Held::CachedJourneys, c.resident as i64);
        report.hold(Held::CachedJourneyBytes, c.bytes as i64);
        report.count(Counted::JourneyLoads, c.loads);
        report.count(Counted::JourneyEvictions, c.evictions);
        report.count(Counted::CustomerLoads, c.customer_loads);
        report.count(Counted::CustomerEvictions, c.customer_evictions);
        report.hold(Held::IdentityBytes, engine.identity().memory_bytes() as i64);
        let s = store.stats();
        report.hold(Held::SstBytes, s.sst_bytes as i64);
        report.hold(Held::MemtableBytes, s.memtable_bytes as i64);
        report.hold(Held::BlockCacheBytes, s.block_cache_bytes as i64);
        txn.offsets.clear();
        metrics.commits.inc();
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = now_ms();
        for (model, ts) in txn.latencies.drain(..) {
            metrics
                .transition_latency
                .with_label_values(&[&model])
                .observe(((now - ts).max(0) as f64) / 1000.0);
        }
        Ok(())
    };

    // However the loop ends, it stops counting for liveness.
    let _beating = metrics.health.beating(share);
    while !stop.load(Ordering::Relaxed) {
        metrics.health.beat(share);
        if let (Some(follower), Some(t)) = (&identity_log, &topo) {
            let links = follower.poll_batch(p.max_poll_records, Duration::ZERO)?;
            if !links.is_empty() {
                txn.begin(&producer, eos)?;
            }
            apply_links(&links, t, &codec, &mut engine, &router, &mut batch)?;
        }
        let records = consumer.poll_batch(p.max_poll_records, Duration::from_millis(50))?;
        if topo.is_none() {
            // (Several instances: the share group's, set by `shares`.)
            metrics.rebalances.set(consumer.rebalances() as i64);
        }
        // Lag per assigned partition; label sets of partitions no longer
        // reported (revoked) are removed.
        let assigned = consumer.assignment()?;
        let lag: BTreeMap<Partition, i64> = consumer
            .partition_ends()
            .into_iter()
            .filter(|(tp, _)| assigned.contains(tp))
            .filter_map(|(tp, end)| positions.get(&tp).map(|&pos| (tp, (end - pos).max(0))))
            .collect();
        for (t, p) in lag_labels.drain(..) {
            if !lag.contains_key(&(t.clone(), p)) {
                let _ = metrics
                    .consumer_lag
                    .remove_label_values(&[&t, &p.to_string()]);
            }
        }
        for ((t, p), l) in &lag {
            metrics
                .consumer_lag
                .with_label_values(&[t, &p.to_string()])
                .set(*l);
            lag_labels.push((t.clone(), *p));
        }
        if !metrics.health.ready.load(Ordering::Relaxed) && !assigned.is_empty() {
            metrics.health.ready.store(true, Ordering::Relaxed);
            info!("partitions assigned: ready");
        }
        metrics.ready.set(i64::from(metrics.health.is_ready()));
        let started = Instant::now();
        if !records.is_empty() {
            last_record = Instant::now();
            txn.begin(&producer, eos)?;
        }
        for rec in &records {
            metrics.consumed.inc();
            txn.offsets
                .insert((rec.topic.clone(), rec.partition), rec.offset + 1);
            positions.insert((rec.topic.clone(), rec.partition), rec.offset + 1);
            since_commit += 1;
            let payload = rec.value.as_deref().unwrap_or_default();
            if let Some(t) = &topo {
                if rec.topic == cfg.topics.input {
                    resolve(rec, t, &codec, &engine, &router, &mut batch)?;
                    continue;
                }
                match t.receive(rec, &mut engine, &mut outs) {
                    Ok(true) => {
                        for o in outs.drain(..) {
                            router.output(o, None, &mut batch)?;
                        }
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        router.dead_letter(
                            rec,
                            "bad_forward",
                            "journey",
                            format!("{e:#}"),
                            &mut batch,
                        )?;
                        continue;
                    }
                }
            }
            match codec.decode_event(payload) {
                Err(e) => router.dead_letter(rec, e.code(), "decode", e.to_string(), &mut batch)?,
                Ok(event) => {
                    if let Some(r) = topo.as_ref().and_then(|t| t.reroute(rec, &event, &engine)) {
                        batch.records.push(r);
                        continue;
                    }
                    let time = event.time;
                    match engine.submit(event, &mut outs) {
                        Err(e) => router.dead_letter(
                            rec,
                            e.code(),
                            "validate",
                            e.to_string(),
                            &mut batch,
                        )?,
                        Ok(_) => metrics
                            .event_time_lag
                            .set(((now_ms() - time) as f64 / 1000.0).max(0.0)),
                    }
                }
            }
            for o in outs.drain(..) {
                router.output(o, rec.timestamp, &mut batch)?;
            }
        }
        if records.is_empty()
            && !p.idle_advance_after.is_zero()
            && last_record.elapsed() >= p.idle_advance_after
        {
            txn.begin(&producer, eos)?;
            engine.advance_watermark(now_ms() - cfg.engine.out_of_order_ms, &mut outs);
            for o in outs.drain(..) {
                router.output(o, None, &mut batch)?;
            }
        }
        if let Some(t) = &topo {
            batch.records.extend(t.forward(&mut engine));
        }
        for rec in batch.records.drain(..) {
            producer.send(&rec)?;
        }
        // The changed journeys go out now rather than all at the commit, so
        // that most of them are acknowledged by the time it comes.
        if txn.active || !eos {
            let mut part = Store::prepare_from(&mut engine, false).changelog;
            if let Some(t) = &topo {
                t.keep_owned(&mut part);
            }
            for r in part.iter().filter(|r| r.is_published()) {
                producer.send(&changelog.record(r, next_commit.get()))?;
            }
            txn.staged.append(&mut part);
        }
        txn.latencies.append(&mut batch.latencies);
        producer.poll();
        let stats = engine.stats();
        report.count(Counted::Applied, stats.applied);
        report.count(Counted::Duplicates, stats.duplicates);
        report.count(Counted::Late, stats.late);
        metrics
            .watermark
            .set(engine.watermark().max(0) as f64 / 1000.0);
        report.hold(Held::PendingEvents, engine.pending() as i64);
        report.hold(Held::TimersPending, engine.timers_pending() as i64);
        report.hold(Held::Customers, engine.identity().customer_count() as i64);
        report.hold(
            Held::Identifiers,
            engine.identity().identifier_count() as i64,
        );
        if !records.is_empty() {
            metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let due =
            last_commit.elapsed() >= p.commit_interval || since_commit >= p.commit_max_records;
        if due && (txn.active || (!eos && !txn.offsets.is_empty())) {
            // The interval runs from commit start to commit start, so a slow
            // commit does not stretch the time records wait for the next one.
            let commit_started = Instant::now();
            if let Err(e) = commit(&mut engine, &mut txn) {
                metrics.aborts.inc();
                if eos {
                    let _ = producer.abort_transaction(p.kafka_timeout);
                }
                // The in-memory state already holds the batch: a restart re-reads
                // from the last committed offsets rather than double-applying it.
                return Err(e).context(
                    "commit failed; exiting so that a restart resumes from the last commit",
                );
            }
            since_commit = 0;
            last_commit = commit_started;
        }
    }
    info!("stopping: committing the open transaction");
    let deadline = Instant::now() + p.shutdown_grace;
    if let Err(e) = commit(&mut engine, &mut txn) {
        warn!(error = %e, "final commit failed; aborting (uncommitted input is re-read on restart)");
        if eos {
            let _ = producer.abort_transaction(deadline.saturating_duration_since(Instant::now()));
        }
    }
    consumer.close();
    let s = engine.stats();
    info!(
        applied = s.applied,
        duplicates = s.duplicates,
        late = s.late,
        transitions = s.transitions,
        merges = s.merges,
        "worker stopped"
    );
    Ok(())
}

/// Applies identity-log records (several instances): links, merges of
/// journeys held here, forwards of journeys whose customer moved elsewhere.
fn apply_links(
    links: &[InputRecord],
    t: &Topology,
    codec: &Codec,
    engine: &mut Engine,
    router: &Router<'_>,
    batch: &mut Batch,
) -> Result<()> {
    let mut outs = Vec::new();
    for rec in links {
        if let Ok(event) = codec.decode_event(rec.value.as_deref().unwrap_or_default()) {
            batch.records.extend(t.link(&event, engine, &mut outs));
        }
    }
    for o in outs {
        router.output(o, None, batch)?;
    }
    Ok(())
}

/// The resolve step (several instances): an input event is checked, then
/// routed to its journey's owner (and to the identity log if it links).
fn resolve(
    rec: &InputRecord,
    t: &Topology,
    codec: &Codec,
    engine: &Engine,
    router: &Router<'_>,
    batch: &mut Batch,
) -> Result<()> {
    let payload = rec.value.as_deref().unwrap_or_default();
    let event = match codec.decode_event(payload) {
        Ok(event) => event,
        Err(e) => return router.dead_letter(rec, e.code(), "decode", e.to_string(), batch),
    };
    match engine.route_key(&event) {
        Ok(key) => {
            batch
                .records
                .extend(t.route(rec, &key, event.identifiers.len() > 1));
            Ok(())
        }
        Err(e) => router.dead_letter(rec, e.code(), "validate", e.to_string(), batch),
    }
}

/// What the open transaction (or, at least once, the open commit interval)
/// holds until its commit.
#[derive(Default)]
struct OpenTxn {
    /// A Kafka transaction is open (exactly-once).
    active: bool,
    /// Next offsets of the records consumed in it.
    offsets: BTreeMap<Partition, i64>,
    /// Changelog records already sent in it (written to the store at its commit).
    staged: Vec<ChangelogRecord>,
    /// (model, Kafka timestamp) of the events behind its transitions.
    latencies: Vec<(String, i64)>,
}

impl OpenTxn {
    /// Begins a transaction if none is open (exactly-once only).
    fn begin(&mut self, producer: &Producer, eos: bool) -> Result<()> {
        if eos && !self.active {
            producer.begin()?;
            self.active = true;
        }
        Ok(())
    }
}

/// Where state records go: the changelog topic, on the partition of their
/// key when there are several instances.
struct ChangelogTopic<'a> {
    topic: &'a str,
    topo: Option<&'a Topology>,
}

impl ChangelogTopic<'_> {
    /// The record of a state write, tagged with its commit number.
    fn record(&self, r: &ChangelogRecord, commit: i64) -> OutputRecord {
        OutputRecord {
            topic: self.topic.to_string(),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: vec![commit_header(commit)],
            partition: self.topo.map(|t| t.changelog_partition(&r.key)),
        }
    }
}

fn commit_header(commit: i64) -> Header {
    Header {
        name: lineage::COMMIT_HEADER.into(),
        value: commit.to_string(),
    }
}

/// What [`open_state`] found: the store, the engine on its state, the
/// committed commit number (see `lineage`), and the committed offsets of the
/// partitions the state covers (`BEGINNING` where none was committed).
type OpenState = (Arc<Store>, Engine, Option<i64>, BTreeMap<Partition, i64>);

/// Opens the local store and checks it against the group's committed offsets:
/// when they match, the local state is current; otherwise (first start on
/// this disk, wiped, unusable, or a crash between the Kafka commit and the
/// local write) the store is rebuilt from the changelog topic.
fn open_state(
    cfg: &Config,
    client: &ClientConfig,
    consumer: &Consumer,
    models: Vec<journey_core::StageModel>,
    metrics: &Metrics,
    topo: Option<&Topology>,
) -> Result<OpenState> {
    let started = Instant::now();
    let p = &cfg.processing;
    let opts = StoreOptions {
        block_cache_bytes: cfg.state.block_cache_bytes,
        write_buffer_bytes: cfg.state.write_buffer_bytes,
    };
    let dir = &cfg.state.dir;
    let n = consumer.partition_count(&cfg.topics.input, p.kafka_timeout)?;
    let marker: Partition = (cfg.topics.changelog.clone(), topo.map_or(0, |t| t.me));
    // The partitions whose offsets the state corresponds to, and the
    // changelog partitions that hold it.
    let (partitions, changelog_partitions): (Vec<Partition>, Vec<i32>) = match topo {
        None => (
            (0..n as i32)
                .map(|i| (cfg.topics.input.clone(), i))
                .collect(),
            vec![0],
        ),
        Some(t) => {
            let r = consumer.partition_count(&t.repartition, p.kafka_timeout)? as i32;
            if r != t.partitions || n as i32 != t.partitions {
                anyhow::bail!(
                    "with several instances the input ({n}) and repartition ({r}) topics need topics.input-partitions ({}) partitions",
                    t.partitions
                );
            }
            (
                t.owned(n as i32)
                    .into_iter()
                    .flat_map(|i| [(cfg.topics.input.clone(), i), (t.repartition.clone(), i)])
                    .collect(),
                t.owned(t.partitions),
            )
        }
    };
    let partitions: Vec<Partition> = partitions.into_iter().chain([marker.clone()]).collect();
    let mut committed = consumer.committed_for(&partitions, p.kafka_timeout)?;
    let committed_no = committed.get(&marker).copied();
    let (mut store, opened) = Store::open(dir, opts)
        .with_context(|| format!("cannot open the state directory {}", dir.display()))?;
    let local = store.offsets()?;
    if local == committed && !matches!(opened, Opened::Rebuilt { .. }) {
        info!(dir = %dir.display(), ?opened, "local state is current");
    } else if let Some(records) = catch_up(
        cfg,
        client,
        &store,
        &opened,
        &changelog_partitions,
        local.get(&marker).copied(),
        committed_no,
    )? {
        store.set_offsets(&committed)?;
        metrics.restore_records.set(records as i64);
    } else {
        warn!(dir = %dir.display(), ?opened, local = ?local, committed = ?committed, "local state does not match the committed offsets: rebuilding it from the changelog");
        drop(store);
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        store = Store::open(dir, opts)?.0;
        let started = Instant::now();
        let (records, lineage, ends) =
            read_changelog(cfg, client, &changelog_partitions, &BTreeMap::new())?;
        let chain = lineage.committed(committed_no);
        let applied = apply_committed(&store, records, &chain)?;
        store.set_offsets(&committed)?;
        store.set_changelog_resume(&ends)?;
        metrics.restore_records.set(applied as i64);
        info!(
            records = applied,
            seconds = started.elapsed().as_secs_f64(),
            "state restored from the changelog"
        );
    }
    let store = Arc::new(store);
    let cache = cfg.state.journey_cache_bytes;
    let engine = if cache == 0 {
        let loaded = store.load().context("cannot load the state")?;
        info!(
            journeys = loaded.journeys.len(),
            identifiers = loaded.identities.len(),
            "state loaded (every journey in memory)"
        );
        let mut engine = Engine::restore(
            cfg.engine.clone(),
            models,
            loaded.journeys,
            loaded.identities,
            loaded.meta,
        );
        engine.hold_restored(loaded.held);
        engine
    } else if cfg.state.identity_cache_bytes > 0 && cfg.processing.instances <= 1 {
        let loaded = store.load_paged().context("cannot load the state")?;
        info!(
            held = loaded.held.len(),
            journey_cache_bytes = cache,
            identity_cache_bytes = cfg.state.identity_cache_bytes,
            "state loaded (journeys read from the store on first use, and customers)"
        );
        let mut engine = Engine::restore_paged(
            cfg.engine.clone(),
            models,
            Box::new(StoreBacking::new(store.clone())),
            loaded.meta,
            cfg.state.identity_cache_bytes,
        );
        engine.hold_restored(loaded.held);
        engine
    } else {
        let loaded = store.load_index().context("cannot load the state")?;
        info!(
            timers = loaded.timers.len(),
            identifiers = loaded.identities.len(),
            journey_cache_bytes = cache,
            "state loaded (journeys read from the store on first use)"
        );
        let mut engine = Engine::restore_backed(
            cfg.engine.clone(),
            models,
            Box::new(StoreBacking::new(store.clone())),
            loaded.timers,
            loaded.identities,
            loaded.meta,
        );
        engine.hold_restored(loaded.held);
        engine
    };
    metrics.restore_seconds.set(started.elapsed().as_secs_f64());
    for tp in partitions {
        committed.entry(tp).or_insert(BEGINNING);
    }
    Ok((store, engine, committed_no, committed))
}

/// A store left behind the committed state (a crash between the Kafka commit
/// and the local write, or a directory restored from an older copy) catches up
/// by reading only the changelog after the positions it stored, applying the
/// records of the commits between its own and the group's. Returns the records
/// applied, or None when that is not possible (a store ahead of the committed
/// state or on an abandoned branch): the caller rebuilds.
fn catch_up(
    cfg: &Config,
    client: &ClientConfig,
    store: &Store,
    opened: &Opened,
    partitions: &[i32],
    local: Option<i64>,
    committed: Option<i64>,
) -> Result<Option<usize>> {
    let (Opened::Existing, Some(local), Some(committed)) = (opened, local, committed) else {
        return Ok(None);
    };
    if local >= committed {
        return Ok(None);
    }
    // Partitions without a stored position are read from their start (the
    // commit numbers still select what to apply).
    let from = store.changelog_resume()?;
    let started = Instant::now();
    let (records, lineage, ends) = read_changelog(cfg, client, partitions, &from)?;
    let Some(chain) = lineage.committed_since(committed, local) else {
        return Ok(None);
    };
    let read = records.len();
    let applied = apply_committed(store, records, &chain)?;
    store.set_changelog_resume(&ends)?;
    info!(
        local,
        committed,
        read,
        applied,
        seconds = started.elapsed().as_secs_f64(),
        "local state caught up from the changelog tail"
    );
    Ok(Some(applied))
}

/// The changelog records of `partitions` from `from` (missing: the start),
/// without run records; the lineage of the run records among them; and the
/// positions after the last record read.
fn read_changelog(
    cfg: &Config,
    client: &ClientConfig,
    partitions: &[i32],
    from: &BTreeMap<i32, i64>,
) -> Result<(Vec<InputRecord>, Lineage, BTreeMap<i32, i64>)> {
    let mut records = Vec::new();
    let mut ends = BTreeMap::new();
    let mut lineage = Lineage::default();
    for &cp in partitions {
        let start = from.get(&cp).copied().unwrap_or(BEGINNING);
        let part = Consumer::read_from(
            client,
            &cfg.topics.changelog,
            cp,
            start,
            cfg.state.restore_timeout,
        )
        .context("cannot read the changelog")?;
        ends.insert(cp, part.last().map_or(start.max(0), |r| r.offset + 1));
        records.extend(part.into_iter().filter(|r| match &r.key {
            Some(k) => !lineage.observe(k, r.value.as_deref()),
            None => false,
        }));
    }
    Ok((records, lineage, ends))
}

/// Applies the records of committed transactions; returns how many.
fn apply_committed(
    store: &Store,
    records: Vec<InputRecord>,
    chain: &lineage::Committed,
) -> Result<usize> {
    let read = records.len();
    let changelog: Vec<ChangelogRecord> = records
        .into_iter()
        .filter(|r| {
            chain.contains(
                r.headers
                    .iter()
                    .find(|h| h.name == lineage::COMMIT_HEADER)
                    .and_then(|h| h.value.parse().ok()),
            )
        })
        .filter_map(|r| {
            r.key.map(|key| ChangelogRecord {
                key,
                value: r.value,
            })
        })
        .collect();
    if changelog.len() < read {
        warn!(
            skipped = read - changelog.len(),
            "changelog records of uncommitted transactions skipped (the broker returned them to a read_committed consumer)"
        );
    }
    for chunk in changelog.chunks(10_000) {
        store.apply_changelog(chunk)?;
    }
    Ok(changelog.len())
}

fn instance_suffix() -> String {
    std::env::var("JOURNEY_INSTANCE_ID").unwrap_or_else(|_| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_records_binary_key_is_published_byte_for_byte() {
        // A held event's key: its time as ordered bytes (not UTF-8), then
        // its id. Text conversion would replace the time's bytes, and a
        // restore would write the row under another key than the engine
        // later deletes.
        let mut key = vec![b'h'];
        key.extend_from_slice(&(1_767_225_600_000i64 as u64 ^ (1 << 63)).to_be_bytes());
        key.extend_from_slice(b"ev-1");
        assert!(std::str::from_utf8(&key).is_err());
        let r = ChangelogRecord {
            key: key.clone(),
            value: None,
        };
        let topic = ChangelogTopic {
            topic: "changelog",
            topo: None,
        };
        assert_eq!(topic.record(&r, 7).key, key);
    }
}
