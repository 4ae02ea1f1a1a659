//! `journey tail`: read transitions (read_committed) and print them readably.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use journey_kafka::{Codec, Consumer};

use crate::config::Config;
use crate::readable;

/// Options of `journey tail`.
#[derive(clap::Args)]
pub struct Args {
    /// Topic (default: the configured transitions topic).
    #[arg(long)]
    topic: Option<String>,
    /// Stop after this many transitions (0: never).
    #[arg(long, default_value_t = 0)]
    max: u64,
    /// Stop after this long without a new record (0s: never).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    idle_exit: Duration,
    /// Print JSON lines instead of readable lines.
    #[arg(long)]
    json: bool,
}

/// Prints transitions until stopped.
pub fn tail(cfg: &Config, args: Args) -> Result<()> {
    let topic = args.topic.unwrap_or_else(|| cfg.topics.transitions.clone());
    let codec = Codec::new(cfg.schema_ids, usize::MAX);
    let group = format!(
        "journey-tail-{}-{}",
        std::process::id(),
        crate::metrics::now_ms()
    );
    let consumer = Consumer::new(&cfg.client(), &group)?;
    consumer.subscribe(&[&topic])?;
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    let mut last = Instant::now();
    loop {
        let batch = consumer.poll_batch(500, Duration::from_millis(200))?;
        if !batch.is_empty() {
            last = Instant::now();
        }
        for rec in batch {
            let payload = rec.value.unwrap_or_default();
            let line = match codec.decode_transition(&payload) {
                Ok(t) if args.json => serde_json::to_string(&t)?,
                Ok(t) => readable::line(&t),
                Err(e) => format!(
                    "{}/{}@{}: cannot decode: {e}",
                    rec.topic, rec.partition, rec.offset
                ),
            };
            if writeln!(stdout, "{line}")
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return Ok(()); // the reader went away (e.g. `| head`)
            }
            seen += 1;
            if args.max > 0 && seen >= args.max {
                return Ok(());
            }
        }
        if !args.idle_exit.is_zero() && last.elapsed() >= args.idle_exit {
            return Ok(());
        }
    }
}
