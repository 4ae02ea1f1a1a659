//! `journey produce`: the load generator, into Kafka or a JSON-lines file.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use journey_core::Identifier;
use journey_kafka::{Codec, OutputRecord, Producer, frame};
use journey_loadgen::{Generator, Malformed, Record, Settings};

use crate::config::Config;

/// Options of `journey produce`.
#[derive(clap::Args)]
pub struct Args {
    /// Records to produce (0: until interrupted).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Target rate in records per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct customers.
    #[arg(long, default_value_t = 1000)]
    customers: u64,
    /// Random seed (same seed, same workload).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of repeated events.
    #[arg(long, default_value_t = 0.01)]
    duplicates: f64,
    /// Fraction of malformed records.
    #[arg(long, default_value_t = 0.001)]
    malformed: f64,
    /// Topic (default: the configured input topic).
    #[arg(long)]
    topic: Option<String>,
    /// Write JSON lines of events to this file instead of Kafka (for `journey replay`).
    #[arg(long)]
    to_file: Option<PathBuf>,
    /// Event time of the first customers, Unix milliseconds (default 2026-01-01).
    #[arg(long)]
    start_time: Option<i64>,
}

fn mangle(
    codec: &Codec,
    kind: Malformed,
    mut e: journey_core::Event,
    seed: u64,
) -> Result<Vec<u8>> {
    Ok(match kind {
        Malformed::RandomBytes => (0..37u64)
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 97) % 251) as u8 + 1)
            .collect(),
        Malformed::UnknownSchemaId => {
            let good = codec.encode_event(&e)?;
            frame(9999, &good[5..])
        }
        Malformed::Truncated => {
            let good = codec.encode_event(&e)?;
            good[..good.len() / 2].to_vec()
        }
        Malformed::NoIdentifier => {
            e.identifiers.clear();
            codec.encode_event(&e)?
        }
    })
}

/// Runs the generator.
pub fn produce(cfg: &Config, args: Args) -> Result<()> {
    let mut settings = Settings {
        customers: args.customers,
        seed: args.seed,
        duplicate_rate: args.duplicates,
        malformed_rate: args.malformed,
        ..Settings::default()
    };
    if let Some(t) = args.start_time {
        settings.start_time = t;
    }
    let mut generator = Generator::new(settings);
    let codec = Codec::new(cfg.schema_ids, usize::MAX);
    let count = if args.count == 0 {
        u64::MAX
    } else {
        args.count
    };
    let started = Instant::now();
    let mut last_report = Instant::now();
    if let Some(path) = &args.to_file {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        for r in generator.by_ref().take(count as usize) {
            if let Record::Event(e) | Record::Duplicate(e) = r {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        eprintln!("wrote {:?} to {}", generator.summary(), path.display());
        return Ok(());
    }
    let topic = args.topic.unwrap_or_else(|| cfg.topics.input.clone());
    let producer = Producer::new(&cfg.client(), None, cfg.processing.kafka_timeout)?;
    let mut sent = 0u64;
    for (i, r) in generator.by_ref().take(count as usize).enumerate() {
        let (key, value) = match r {
            Record::Event(e) | Record::Duplicate(e) => {
                (first_key(&e.identifiers), codec.encode_event(&e)?)
            }
            Record::Malformed(kind, e) => (
                first_key(&e.identifiers),
                mangle(&codec, kind, e, i as u64)?,
            ),
        };
        producer.send(&OutputRecord {
            topic: topic.clone(),
            key: key.into_bytes(),
            value: Some(value),
            headers: vec![],
            partition: None,
        })?;
        sent += 1;
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                producer.poll();
                std::thread::sleep(wait);
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            let eta = if count == u64::MAX {
                "∞".to_string()
            } else {
                format!("{:.0}s", (count - sent) as f64 / rate.max(1.0))
            };
            eprintln!("produced {sent} records ({rate:.0}/s, eta {eta})");
        }
    }
    producer.flush(cfg.processing.kafka_timeout)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {sent} records to {topic} in {secs:.1}s ({:.0}/s): {:?}",
        sent as f64 / secs.max(1e-9),
        generator.summary()
    );
    Ok(())
}

fn first_key(ids: &[Identifier]) -> String {
    ids.first().map(Identifier::key).unwrap_or_default()
}
