//! Engine + store applying a generated workload, against raw RocksDB puts of
//! the same number and size of writes, in one run.
//!
//! `cargo bench --profile dev --workspace --bench apply -- [EVENTS] [CUSTOMERS] [CACHE] [IDENTITY]`
//! (defaults 1,000,000 events, 100,000 customers, 0, 64 MiB). `CACHE` > 0
//! bounds the journeys held in memory to about that many bytes (the others
//! are read back from the store, as the worker does with
//! `state.journey-cache-bytes`); 0 holds every journey in memory. With
//! `CACHE` > 0, `IDENTITY` > 0 pages the identity graph too, as the worker
//! does with `state.identity-cache-bytes`; 0 holds the whole graph. Prints
//! the process's peak RSS (which includes the input generator's customers).

#![allow(missing_docs)]

use std::time::Instant;

/// The worker's allocator and its setting (see `journey-alloc`): engine and
/// store are measured as they run there.
#[global_allocator]
static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;

use journey_core::{Engine, EngineConfig, StageModel};
use journey_loadgen::{Generator, Record, Settings};
use journey_store::{Offsets, Store, StoreBacking, StoreOptions};

/// A line of `name: value` from `/proc/self/status` (`VmRSS`, `VmHWM`).
fn proc_status(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map_or("unknown".to_string(), |v| v.trim().to_string())
}

fn progress(i: usize, timed: std::time::Duration, engine: &Engine, store: &Store, g: &Generator) {
    let c = engine.cache_stats();
    let s = store.stats();
    eprintln!(
        "[apply] {i} events, {:.0} events/s so far; RSS {} (peak {}); generator ~{} MiB; graph ~{} MiB, {} identifiers; journeys ~{} MiB ({} resident); {} held; {} timers; RocksDB cache {} MiB, memtables {} MiB",
        i as f64 / timed.as_secs_f64(),
        proc_status("VmRSS"),
        proc_status("VmHWM"),
        g.memory_bytes() >> 20,
        engine.identity().memory_bytes() >> 20,
        engine.identity().identifier_count(),
        c.bytes >> 20,
        c.resident,
        engine.pending(),
        engine.timers_pending(),
        s.block_cache_bytes >> 20,
        s.memtable_bytes >> 20,
    );
}

fn main() {
    journey_alloc::tune();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(1_000_000) as usize;
    let customers = args.get(1).copied().unwrap_or(100_000);
    let cache = args.get(2).copied().unwrap_or(0) as usize;
    let identity_budget = args.get(3).copied().unwrap_or(64 << 20) as usize;
    // Generated in chunks outside the timed part, so that the input never
    // holds more than one chunk of memory.
    let mut generator = Generator::new(Settings {
        customers,
        ..Settings::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(&dir.path().join("state"), StoreOptions::default()).expect("open");
    let store = std::sync::Arc::new(store);
    let config = EngineConfig {
        out_of_order_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let models = vec![StageModel::builtin("funnel5").expect("builtin")];
    let mut engine = if cache == 0 {
        Engine::new(config, models)
    } else if identity_budget > 0 {
        Engine::restore_paged(
            config,
            models,
            Box::new(StoreBacking::new(store.clone())),
            Default::default(),
            identity_budget,
        )
    } else {
        Engine::restore_backed(
            config,
            models,
            Box::new(StoreBacking::new(store.clone())),
            [],
            [],
            Default::default(),
        )
    };
    let mut out = Vec::new();
    let (mut writes, mut bytes, mut index_rows) = (0u64, 0u64, 0u64);
    let mut by_family: std::collections::BTreeMap<(&str, bool), u64> = Default::default();
    // Write sizes for the raw baseline, as a histogram (size -> count): a
    // list of every size would itself be hundreds of MB at 10M
    // identifiers, inside the peak RSS this bench reports.
    let mut sizes: std::collections::BTreeMap<u32, u64> = Default::default();
    let mut timed = std::time::Duration::ZERO;
    // Where the timed part goes: engine, encoding, RocksDB write, cache upkeep.
    let mut phases = [std::time::Duration::ZERO; 4];
    let mut i = 0usize;
    // A progress line on stderr every 10 % of the run: a long run (10M
    // identifiers) shows its rate and where its memory goes as it grows.
    let progress_every = (events / 10).max(5_000).next_multiple_of(5_000);
    loop {
        // Generated a commit interval at a time, outside the timing: the
        // worker holds about that much input, not the whole run's.
        let chunk: Vec<_> = generator
            .by_ref()
            .filter_map(|r| match r {
                Record::Event(e) | Record::Duplicate(e) => Some(e),
                Record::Malformed(..) => None,
            })
            .take(5_000.min(events - i))
            .collect();
        if chunk.is_empty() {
            break;
        }
        let started = Instant::now();
        // The engine's phase runs from here, or from the end of the last
        // commit, to the next commit (no clock read per event).
        let mut submits_from = started;
        for ev in chunk {
            i += 1;
            let _ = engine.submit(ev, &mut out);
            out.clear();
            if i.is_multiple_of(5000) || i == events {
                let t1 = Instant::now();
                phases[0] += t1 - submits_from;
                let prepared = Store::prepare_from(&mut engine, true);
                phases[1] += t1.elapsed();
                for r in &prepared.changelog {
                    writes += 1;
                    index_rows += u64::from(!r.is_published());
                    // By column family, deletions apart.
                    let cf = r.column_family().unwrap_or("unknown");
                    *by_family.entry((cf, r.value.is_none())).or_default() += 1;
                    let n = r.key.len() + r.value.as_ref().map_or(0, Vec::len);
                    bytes += n as u64;
                    *sizes.entry(n as u32).or_default() += 1;
                }
                let t2 = Instant::now();
                store
                    .write(
                        &prepared,
                        &Offsets::from([(("in".to_string(), 0), i as i64)]),
                    )
                    .expect("write");
                let t3 = Instant::now();
                phases[2] += t3 - t2;
                engine.persisted(cache);
                submits_from = Instant::now();
                phases[3] += submits_from - t3;
            }
        }
        let ended = Instant::now();
        phases[0] += ended - submits_from;
        timed += ended - started;
        if i.is_multiple_of(progress_every) {
            progress(i, timed, &engine, &store, &generator);
        }
    }
    let pipeline = timed.as_secs_f64();
    // Peak resident set so far: engine, store, the input generator (its
    // customers) and one chunk of input.
    let peak = proc_status("VmHWM");
    // Raw baseline: the same number of puts of the same sizes (taken from
    // the histogram in size order), in batches of the same average size.
    let (raw, _) = Store::open(&dir.path().join("raw"), StoreOptions::default()).expect("open raw");
    let per_batch = (writes as usize / (events / 5000).max(1)).max(1);
    let mut all_sizes = sizes
        .iter()
        .flat_map(|(&n, &count)| std::iter::repeat_n(n, count as usize))
        .peekable();
    let mut chunk: Vec<u32> = Vec::with_capacity(per_batch);
    let started = Instant::now();
    let mut b = 0usize;
    while all_sizes.peek().is_some() {
        chunk.clear();
        chunk.extend(all_sizes.by_ref().take(per_batch));
        b += 1;
        let records: Vec<journey_store::ChangelogRecord> = chunk
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut key = vec![b'j'];
                key.extend_from_slice(format!("k{b}-{i}").as_bytes());
                journey_store::ChangelogRecord {
                    key,
                    value: Some(vec![1u8; (n as usize).saturating_sub(8).max(1)]),
                }
            })
            .collect();
        raw.apply_changelog(&records).expect("raw write");
    }
    let raw_secs = started.elapsed().as_secs_f64();
    println!("events                      {events}");
    println!("customers (generator)       {customers}");
    println!(
        "engine+store                {:.0} events/s ({pipeline:.2}s)",
        events as f64 / pipeline
    );
    println!(
        "state writes                {writes} ({:.2} per event; {index_rows} of them timer-index rows, {:.2} per event)",
        writes as f64 / events as f64,
        index_rows as f64 / events as f64
    );
    let share = |d: std::time::Duration| 100.0 * d.as_secs_f64() / pipeline;
    println!(
        "time by phase               engine {:.0} %, encoding {:.0} %, RocksDB write {:.0} %, cache upkeep {:.0} %",
        share(phases[0]),
        share(phases[1]),
        share(phases[2]),
        share(phases[3])
    );
    let kinds: Vec<String> = by_family
        .iter()
        .map(|(&(cf, delete), n)| {
            let verb = if delete { "deletes" } else { "puts" };
            format!("{cf} {verb} {:.2}", *n as f64 / events as f64)
        })
        .collect();
    println!("writes per event by family  {}", kinds.join(", "));
    println!(
        "bytes written per event     {:.0}",
        bytes as f64 / events as f64
    );
    println!(
        "engine+store write rate     {:.0} writes/s",
        writes as f64 / pipeline
    );
    println!(
        "raw WriteBatch put rate     {:.0} writes/s ({raw_secs:.2}s, includes building the values)",
        writes as f64 / raw_secs
    );
    println!("ratio (pipeline / raw)      {:.2}", raw_secs / pipeline);
    let s = store.stats();
    println!(
        "store                       {} journeys, {} identifiers (estimates), {} SST bytes",
        s.journeys, s.identities, s.sst_bytes
    );
    let c = engine.cache_stats();
    println!(
        "engine                      {} identifiers, {} journeys in memory ({}), {} read back, {} dropped (journey cache {})",
        engine.identity().identifier_count(),
        c.resident,
        if cache == 0 {
            "size not tracked".to_string()
        } else {
            format!("~{} MiB", c.bytes >> 20)
        },
        c.loads,
        c.evictions,
        if cache == 0 {
            "off: all in memory".to_string()
        } else {
            format!("{} MiB", cache >> 20)
        }
    );
    println!(
        "identity graph              {} customers, ~{} MiB in memory ({}), {} customers read back, {} dropped",
        engine.identity().customer_count(),
        engine.identity().memory_bytes() >> 20,
        if cache > 0 && identity_budget > 0 {
            format!("paged, budget {} MiB", identity_budget >> 20)
        } else {
            "all in memory".to_string()
        },
        c.customer_loads,
        c.customer_evictions
    );
    println!("timers pending              {}", engine.timers_pending());
    println!(
        "peak RSS (engine+store run) {peak} (of which the input generator ~{} MiB)",
        generator.memory_bytes() >> 20
    );
}
