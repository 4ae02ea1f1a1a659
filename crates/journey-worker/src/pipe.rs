//! `journey pipe`: the benchmark baseline. Copies records from one topic to
//! another with the worker's own Kafka clients, batch sizes and commit
//! settings (transactions with `send_offsets_to_transaction` in exactly-once
//! mode), and no decoding, state or engine: what the worker costs over Kafka
//! I/O is the ratio of the two rates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use journey_kafka::{Consumer, OutputRecord, Partition, Producer};

use crate::config::{Config, Mode};

/// Options of `journey pipe`.
#[derive(clap::Args)]
pub struct Args {
    /// Topic to read (default: the configured input topic).
    #[arg(long)]
    from: Option<String>,
    /// Topic to write; it must exist.
    #[arg(long)]
    to: String,
    /// Stop after copying this many records (0: only stop when idle).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this long without a record, once at least one was copied.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle_exit: Duration,
}

/// Copies records until `count` or idle, then prints the rate.
pub fn pipe(cfg: &Config, args: Args) -> Result<()> {
    let from = args.from.unwrap_or_else(|| cfg.topics.input.clone());
    let p = &cfg.processing;
    let client = cfg.client();
    let group = format!("{}-pipe", cfg.kafka.application_id);
    let consumer = Consumer::new(&client, &group).context("cannot create the consumer")?;
    let eos = p.mode == Mode::ExactlyOnce;
    let txn_id = format!("{}-pipe-0", cfg.kafka.application_id);
    let producer = Producer::new(&client, eos.then_some(txn_id.as_str()), p.kafka_timeout)
        .context("cannot create the producer")?;
    consumer.subscribe(&[&from])?;
    let mut offsets: BTreeMap<Partition, i64> = BTreeMap::new();
    let (mut copied, mut since_commit, mut in_txn) = (0u64, 0usize, false);
    let mut started: Option<Instant> = None;
    let mut last_record = Instant::now();
    let mut last_commit = Instant::now();
    loop {
        let records = consumer.poll_batch(p.max_poll_records, Duration::from_millis(50))?;
        if !records.is_empty() {
            started.get_or_insert_with(Instant::now);
            last_record = Instant::now();
            if eos && !in_txn {
                producer.begin()?;
                in_txn = true;
            }
        }
        for r in &records {
            producer.send(&OutputRecord {
                topic: args.to.clone(),
                key: r.key.clone().unwrap_or_default(),
                value: r.value.clone(),
                headers: vec![],
                partition: None,
            })?;
            offsets.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        copied += records.len() as u64;
        since_commit += records.len();
        producer.poll();
        let done = (args.count > 0 && copied >= args.count)
            || (started.is_some() && last_record.elapsed() >= args.idle_exit);
        if done
            || last_commit.elapsed() >= p.commit_interval
            || since_commit >= p.commit_max_records
        {
            let commit_started = Instant::now();
            if eos && in_txn {
                producer.commit_transaction(&consumer, &offsets, p.kafka_timeout)?;
                in_txn = false;
            } else if !eos {
                producer.flush(p.kafka_timeout)?;
                consumer.commit(&offsets)?;
            }
            offsets.clear();
            since_commit = 0;
            last_commit = commit_started;
        }
        if done {
            break;
        }
    }
    consumer.close();
    let busy = started.map(|s| s.elapsed()).unwrap_or_default();
    let busy = if args.count > 0 {
        busy
    } else {
        busy.saturating_sub(args.idle_exit)
    };
    println!(
        "copied {copied} records from {from} to {} in {:.3} s: {:.0} records/s",
        args.to,
        busy.as_secs_f64(),
        copied as f64 / busy.as_secs_f64().max(1e-9)
    );
    Ok(())
}
