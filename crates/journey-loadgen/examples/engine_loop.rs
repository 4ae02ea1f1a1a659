//! Runs the pure engine over generated events, timing only the engine, for
//! profilers and quick A/B runs (criterion's bench is `benches/engine.rs`).
//!
//! `cargo run --release -p journey-loadgen --example engine_loop -- [EVENTS] [CUSTOMERS] [ROUNDS] [in-order|realistic]`
//!
//! Every round gets its own copy of the input, made before the clock starts;
//! engines are dropped after it stops. Prints events/s per round and the
//! median.

use std::time::Instant;

/// The worker's allocator and its setting (see `journey-alloc`): measured as it runs.
#[global_allocator]
static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;

use journey_core::{Engine, EngineConfig, Event, StageModel};
use journey_loadgen::{Generator, Record, Settings};

fn main() {
    journey_alloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| {
        args.get(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (n, customers, rounds) = (arg(0, 200_000), arg(1, 20_000), arg(2, 5));
    let realistic = args.get(3).is_some_and(|s| s == "realistic");
    let settings = if realistic {
        Settings {
            customers,
            ..Settings::default()
        }
    } else {
        Settings {
            customers,
            max_offline_delay: 0,
            duplicate_rate: 0.0,
            malformed_rate: 0.0,
            ..Settings::default()
        }
    };
    let bound = if realistic { 86_400_000 } else { 0 };
    let input: Vec<Event> = Generator::new(settings)
        .filter_map(|r| match r {
            Record::Event(e) | Record::Duplicate(e) => Some(e),
            Record::Malformed(..) => None,
        })
        .take(n as usize)
        .collect();
    let mut rates = Vec::new();
    let mut outputs = 0usize;
    for _ in 0..rounds {
        let copy = input.clone();
        let mut engine = Engine::new(
            EngineConfig {
                out_of_order_ms: bound,
                ..EngineConfig::default()
            },
            vec![StageModel::builtin("funnel5").expect("builtin")],
        );
        let mut out = Vec::new();
        let start = Instant::now();
        for ev in copy {
            let _ = engine.submit(ev, &mut out);
            outputs += out.len();
            out.clear();
        }
        engine.flush(&mut out);
        let secs = start.elapsed().as_secs_f64();
        rates.push(n as f64 / secs);
        eprintln!(
            "round: {:.0} events/s ({} transitions)",
            n as f64 / secs,
            engine.stats().transitions
        );
        drop(engine);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median {:.0} events/s over {rounds} rounds ({outputs} outputs)",
        rates[rates.len() / 2]
    );
}
