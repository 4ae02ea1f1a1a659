//! Throughput of the pure engine on the load generator's workload.
//!
//! `cargo bench -p journey-loadgen --bench engine`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use journey_core::{Engine, EngineConfig, Event, StageModel};
use journey_loadgen::{Generator, Record, Settings};

/// The worker's allocator and its setting (see `journey-alloc`): the engine is measured as
/// it runs there.
#[global_allocator]
static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;

fn events(settings: Settings, n: usize) -> Vec<Event> {
    Generator::new(settings)
        .filter_map(|r| match r {
            Record::Event(e) | Record::Duplicate(e) => Some(e),
            Record::Malformed(..) => None,
        })
        .take(n)
        .collect()
}

fn bench(c: &mut Criterion) {
    journey_alloc::tune();
    const N: usize = 200_000;
    let in_order = events(
        Settings {
            customers: 20_000,
            max_offline_delay: 0,
            duplicate_rate: 0.0,
            malformed_rate: 0.0,
            ..Settings::default()
        },
        N,
    );
    let realistic = events(
        Settings {
            customers: 20_000,
            ..Settings::default()
        },
        N,
    );
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    for (name, input, bound) in [
        ("in_order_funnel5", &in_order, 0),
        ("realistic_funnel5_bound_1d", &realistic, 86_400_000),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || input.clone(),
                |evs| {
                    let mut e = Engine::new(
                        EngineConfig {
                            out_of_order_ms: bound,
                            ..EngineConfig::default()
                        },
                        vec![StageModel::builtin("funnel5").expect("builtin")],
                    );
                    let mut out = Vec::new();
                    for ev in evs {
                        let _ = e.submit(ev, &mut out);
                        out.clear();
                    }
                    e.flush(&mut out);
                    e
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
