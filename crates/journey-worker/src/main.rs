//! `journey`: the journey-stitching worker and its tools.
//!
//! `journey run` consumes interaction events, stitches identities, evaluates
//! stage models and emits stage transitions; `produce`, `tail`, `replay`,
//! `topics`, `models` and `config` help run, inspect and try it.

mod config;
mod lineage;
mod metrics;
mod pipe;
mod produce;
mod readable;
mod replay;
mod run;
mod shares;
mod tail;
mod topology;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing::{error, info};

use crate::config::Config;

/// mimalloc, tuned (see `journey-alloc`).
#[global_allocator]
static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;

/// Streaming journey stitching: Kafka in, identity stitching and stage models,
/// stage transitions out, exactly once.
#[derive(Parser)]
#[command(name = "journey", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML, or YAML by extension). Every key can be
    /// overridden by an environment variable: `kafka.brokers` is
    /// `JOURNEY__KAFKA__BROKERS`, `processing.commit-interval` is
    /// `JOURNEY__PROCESSING__COMMIT_INTERVAL`.
    #[arg(long, short, env = "JOURNEY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Bootstrap servers; shorthand for `JOURNEY__KAFKA__BROKERS`.
    #[arg(long, short, env = "JOURNEY_BOOTSTRAP", global = true)]
    bootstrap: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker: consume the input topic, emit transitions (until SIGTERM/SIGINT).
    Run,
    /// Create the topics of the configuration (missing ones) and check the others.
    Topics,
    /// Produce a synthetic multichannel workload to the input topic (or a file).
    Produce(produce::Args),
    /// Print stage transitions from the transitions topic in a readable form.
    Tail(tail::Args),
    /// Benchmark baseline: copy records between topics with the worker's
    /// clients and commit settings, and no decoding or state.
    Pipe(pipe::Args),
    /// Run the stage models over a file of events (JSON lines or an Avro
    /// container file), without Kafka.
    Replay(replay::Args),
    /// List the builtin stage models, or validate model files.
    Models {
        /// Model files to validate.
        files: Vec<PathBuf>,
    },
    /// Print the effective configuration (defaults, file and environment), secrets redacted.
    Config,
    /// Show a customer's journey (by any identifier, `type:value`) or the store
    /// statistics, from a stopped worker's state directory.
    Inspect {
        /// An identifier, e.g. `email:ana@example.com`; omit for statistics.
        identifier: Option<String>,
        /// Write every journey as JSON lines to this file, held events applied
        /// (the format of `replay --journeys`, so a worker's state can be
        /// compared with a replay).
        #[arg(long, value_name = "FILE")]
        journeys: Option<std::path::PathBuf>,
    },
}

fn init_logs(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    journey_alloc::tune();
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(b) = &cli.bootstrap {
        env.push(("JOURNEY__KAFKA__BROKERS".into(), format!("{b:?}")));
    }
    let cfg = Config::load(cli.config.as_deref(), env)?;
    init_logs(&cfg);
    match cli.command {
        Command::Run => run_worker(cfg),
        Command::Topics => runtime()?.block_on(async {
            journey_kafka::ensure_topics(&cfg.client(), &run::topic_specs(&cfg)).await?;
            println!("topics ready on {}", cfg.kafka.brokers);
            Ok(())
        }),
        Command::Produce(args) => produce::produce(&cfg, args),
        Command::Tail(args) => tail::tail(&cfg, args),
        Command::Pipe(args) => pipe::pipe(&cfg, args),
        Command::Replay(args) => replay::replay(&cfg, args),
        Command::Models { files } => {
            if files.is_empty() {
                for m in journey_core::builtin_models() {
                    println!(
                        "{:<10} {}\n{:<10} stages: {}\n",
                        m.name(),
                        m.description(),
                        "",
                        m.stages().join(" → ")
                    );
                }
                return Ok(());
            }
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?;
                let name = f.display().to_string();
                let m = if name.ends_with(".yaml") || name.ends_with(".yml") {
                    journey_core::StageModel::from_yaml(&name, &text)?
                } else {
                    journey_core::StageModel::from_toml(&name, &text)?
                };
                println!(
                    "{name}: model {:?} is valid ({} stages, {} rules)",
                    m.name(),
                    m.stages().len(),
                    m.rule_names().count()
                );
            }
            Ok(())
        }
        Command::Config => {
            print!("{}", cfg.redacted());
            Ok(())
        }
        Command::Inspect {
            identifier,
            journeys,
        } => inspect(&cfg, identifier.as_deref(), journeys.as_deref()),
    }
}

/// `inspect`: a worker's state directory, or with several instances each
/// share directory in it.
fn inspect(
    cfg: &Config,
    identifier: Option<&str>,
    journeys: Option<&std::path::Path>,
) -> Result<()> {
    let dir = &cfg.state.dir;
    let dirs = if dir.join("CURRENT").exists() {
        vec![dir.clone()]
    } else {
        shares::share_dirs(dir)
    };
    if dirs.is_empty() {
        anyhow::bail!(
            "{} is not a state directory and holds no share directories (set state.dir or JOURNEY__STATE__DIR)",
            dir.display()
        );
    }
    if let Some(path) = journeys {
        let mut all = Vec::new();
        for dir in &dirs {
            all.extend(held_journeys(cfg, dir)?);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        replay::write_journey_lines(all.iter().map(|(_, line)| line.as_str()), path)?;
        println!("{} journeys written to {}", all.len(), path.display());
        return Ok(());
    }
    let Some(text) = identifier else {
        for (i, dir) in dirs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            statistics(dir)?;
        }
        return Ok(());
    };
    let (kind, value) = text
        .split_once(':')
        .context("give the identifier as type:value, e.g. email:ana@example.com")?;
    let id = journey_core::Identifier::new(kind, value);
    // With several instances every share knows the identifier; one holds
    // the journey.
    for dir in &dirs {
        if show_journey(cfg, dir, &id)? {
            return Ok(());
        }
    }
    anyhow::bail!("no journey of {id} in {}", dir.display())
}

/// The journeys of one state directory, held events applied (as at the end
/// of a replay), as (key, JSON line).
fn held_journeys(cfg: &Config, dir: &std::path::Path) -> Result<Vec<(String, String)>> {
    use journey_store::{Store, StoreOptions};
    let (store, _) = Store::open(dir, StoreOptions::default())?;
    let loaded = store.load()?;
    let mut engine = journey_core::Engine::restore(
        cfg.engine.clone(),
        cfg.stage_models()?,
        loaded.journeys,
        loaded.identities,
        loaded.meta,
    );
    engine.hold_restored(loaded.held);
    engine.flush(&mut Vec::new());
    replay::journey_lines(&engine)
}

/// Prints the statistics of one state directory.
fn statistics(dir: &std::path::Path) -> Result<()> {
    use journey_store::{Store, StoreOptions};
    let (store, _) = Store::open(dir, StoreOptions::default())?;
    {
        let s = store.stats();
        let loaded = store.load()?;
        println!("state directory   {}", dir.display());
        println!("journeys          {}", loaded.journeys.len());
        println!("identifiers       {}", loaded.identities.len());
        println!(
            "pending events    {}",
            loaded.held.len() + loaded.meta.pending.len()
        );
        println!("watermark         {}", loaded.meta.watermark);
        println!("sst bytes         {}", s.sst_bytes);
        println!("memtable bytes    {}", s.memtable_bytes);
        for ((t, p), o) in &loaded.offsets {
            println!("offset            {t}/{p} → {o}");
        }
    }
    Ok(())
}

/// Prints the journey of an identifier if this state directory holds it.
fn show_journey(
    cfg: &Config,
    dir: &std::path::Path,
    id: &journey_core::Identifier,
) -> Result<bool> {
    use journey_store::{Store, StoreOptions};
    let (store, _) = Store::open(dir, StoreOptions::default())?;
    let Some(key) = store.key_of(id)? else {
        return Ok(false);
    };
    let models = cfg.stage_models()?;
    let Some(journey) = store.journey(&key.key())? else {
        return Ok(false);
    };
    let members: Vec<String> = store
        .customer_of(id)?
        .unwrap_or_default()
        .iter()
        .map(|i| i.key())
        .collect();
    println!("customer key  {key}");
    println!("identifiers   {}", members.join(", "));
    for (model, stage) in journey.stages(&models) {
        println!("stage         {model}: {}", stage.unwrap_or("-"));
    }
    println!(
        "touchpoints   {} ({} kept)",
        journey.touch_count,
        journey.touchpoints.len()
    );
    for t in &journey.touchpoints {
        println!(
            "  {}  {:<14} {:<22} {}",
            t.time, t.channel, t.event_type, t.event_id
        );
    }
    Ok(true)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_worker(cfg: Config) -> Result<()> {
    let rt = runtime()?;
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&registry);
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        // Handlers first: a SIGTERM during start-up (topic checks, restore)
        // is a graceful stop, not the default kill.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        if cfg.topics.create {
            journey_kafka::ensure_topics(&cfg.client(), &run::topic_specs(&cfg))
                .await
                .context("cannot create or check the topics")?;
        }
        if !cfg.http.listen.is_empty() {
            let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
                .await
                .with_context(|| format!("cannot listen on http.listen = {}", cfg.http.listen))?;
            tokio::spawn(metrics::serve(
                listener,
                registry.clone(),
                metrics.health.clone(),
            ));
        }
        let worker = {
            let (cfg, metrics, stop) = (cfg.clone(), metrics.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                if cfg.processing.instances > 1 {
                    shares::run_shares(cfg, metrics, stop)
                } else {
                    run::run(cfg, 0, metrics, stop)
                }
            })
        };
        let signal_stop = stop.clone();
        let grace = cfg.processing.shutdown_grace;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
            signal_stop.store(true, Ordering::Relaxed);
            tokio::time::sleep(grace).await;
            error!(grace = ?grace, "shutdown grace period exceeded; exiting");
            std::process::exit(2);
        });
        worker.await.context("worker thread panicked")?
    })?;
    rt.shutdown_background();
    Ok(())
}
