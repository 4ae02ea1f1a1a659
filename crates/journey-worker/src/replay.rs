//! `journey replay`: the engine over a file of events, no Kafka.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use journey_core::{Engine, Event, Output};

use crate::config::Config;

/// Options of `journey replay`.
#[derive(clap::Args)]
pub struct Args {
    /// Events: a JSON-lines file (`-` for standard input), as written by
    /// `journey produce --to-file`, or an Avro object container file written
    /// with `schemas/InteractionEvent.avsc` (recognised by its magic bytes).
    input: PathBuf,
    /// Write transitions here as JSON lines (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write the final journeys (key, identifiers, stages, touchpoints) as JSON lines.
    #[arg(long)]
    journeys: Option<PathBuf>,
}

/// Runs the replay.
pub fn replay(cfg: &Config, args: Args) -> Result<()> {
    let mut engine = Engine::new(cfg.engine.clone(), cfg.stage_models()?);
    let mut outs = Vec::new();
    let (mut lines, mut invalid) = (0u64, 0u64);
    let is_container = args.input.as_os_str() != "-"
        && std::fs::File::open(&args.input)
            .and_then(|mut f| {
                let mut magic = [0u8; 4];
                std::io::Read::read_exact(&mut f, &mut magic).map(|_| magic == *b"Obj\x01")
            })
            .unwrap_or(false);
    let container: Vec<Result<Event, String>> = if is_container {
        let f = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        journey_kafka::read_container_events(std::io::BufReader::new(f))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a readable Avro container file: {e}",
                    args.input.display()
                )
            })?
            .collect()
    } else {
        Vec::new()
    };
    let reader: Box<dyn BufRead> = if is_container {
        Box::new(std::io::empty())
    } else if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?,
        ))
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let write = |outs: &mut Vec<Output>, out: &mut Box<dyn Write>| -> Result<()> {
        for o in outs.drain(..) {
            if let Output::Transition(t) = o {
                serde_json::to_writer(&mut *out, &t)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    };
    for (n, item) in container.into_iter().enumerate() {
        lines += 1;
        match item
            .map_err(anyhow::Error::msg)
            .and_then(|e| engine.submit(e, &mut outs).map_err(anyhow::Error::from))
        {
            Ok(_) => write(&mut outs, &mut out)?,
            Err(e) => {
                invalid += 1;
                eprintln!("record {}: refused: {e}", n + 1);
            }
        }
    }
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let event: Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                invalid += 1;
                eprintln!("line {}: not an event: {e}", n + 1);
                continue;
            }
        };
        if let Err(e) = engine.submit(event, &mut outs) {
            invalid += 1;
            eprintln!("line {}: refused: {e}", n + 1);
        }
        write(&mut outs, &mut out)?;
    }
    engine.flush(&mut outs);
    write(&mut outs, &mut out)?;
    out.flush()?;
    if let Some(p) = &args.journeys {
        write_journeys(&engine, p)?;
    }
    let s = engine.stats();
    eprintln!(
        "replayed {lines} lines: {} applied, {} duplicates, {} invalid, {} late, {} transitions, {} merges",
        s.applied, s.duplicates, invalid, s.late, s.transitions, s.merges
    );
    Ok(())
}

/// Writes every journey as one JSON line (key, identifiers, stage per model,
/// sorted touchpoint ids), sorted by key: the same format from `replay
/// --journeys` and `inspect --journeys`, so that the two can be compared.
pub fn write_journeys(engine: &Engine, path: &std::path::Path) -> Result<()> {
    let lines = journey_lines(engine)?;
    write_journey_lines(lines.iter().map(|(_, line)| line.as_str()), path)
}

/// Every journey of an engine as (key, JSON line), sorted by key.
pub fn journey_lines(engine: &Engine) -> Result<Vec<(String, String)>> {
    let mut journeys: Vec<(String, &journey_core::Journey)> = engine.journeys().collect();
    journeys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(journeys.len());
    for (k, journey) in journeys {
        let ids = journey_core::Identifier::from_key(&k)
            .map(|id| engine.identity().members_of(&id))
            .unwrap_or_default();
        let stages: Vec<_> = journey.stages(engine.models());
        let mut touch: Vec<&str> = journey.touchpoints.iter().map(|t| &*t.event_id).collect();
        touch.sort();
        let line = serde_json::to_string(
            &serde_json::json!({"key": k, "identifiers": ids, "stages": stages, "touchpoints": touch}),
        )?;
        out.push((k, line));
    }
    Ok(out)
}

/// Writes JSON lines to a file.
pub fn write_journey_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    path: &std::path::Path,
) -> Result<()> {
    let mut j = std::io::BufWriter::new(std::fs::File::create(path)?);
    for line in lines {
        j.write_all(line.as_bytes())?;
        j.write_all(b"\n")?;
    }
    j.flush()?;
    Ok(())
}
