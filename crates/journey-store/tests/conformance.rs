//! Conformance of the store on real RocksDB in a temp dir.

use journey_core::{Engine, EngineConfig, builtin_models};
use journey_loadgen::{Generator, Record, Settings};
use journey_store::{Offsets, Opened, Store, StoreOptions};

/// The engine settings of these tests: a one-hour out-of-order bound.
fn config() -> EngineConfig {
    EngineConfig {
        out_of_order_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

fn engine() -> Engine {
    Engine::new(config(), builtin_models())
}

/// Runs `n` generated events through an engine, committing to the store every
/// `every` events; returns the engine and all changelog records published
/// (not the rows of the local timer index).
fn drive(store: &Store, n: usize, every: usize) -> (Engine, Vec<journey_store::ChangelogRecord>) {
    let mut e = engine();
    let mut out = Vec::new();
    let mut changelog = Vec::new();
    let events = Generator::new(Settings {
        customers: 300,
        ..Settings::default()
    })
    .filter_map(|r| match r {
        Record::Event(e) | Record::Duplicate(e) => Some(e),
        Record::Malformed(..) => None,
    });
    for (i, ev) in events.take(n).enumerate() {
        let _ = e.submit(ev, &mut out);
        if (i + 1) % every == 0 {
            let prepared = Store::prepare(&e.take_changes());
            store
                .write(
                    &prepared,
                    &Offsets::from([(("in".to_string(), 0), i as i64 + 1)]),
                )
                .unwrap();
            changelog.extend(prepared.changelog.into_iter().filter(|r| r.is_published()));
        }
    }
    (e, changelog)
}

/// Further events of the same customers (another seed), for continuing.
fn more_events(n: usize) -> Vec<journey_core::Event> {
    Generator::new(Settings {
        customers: 300,
        seed: 9,
        ..Settings::default()
    })
    .filter_map(|r| match r {
        Record::Event(e) => Some(e),
        _ => None,
    })
    .take(n)
    .collect()
}

#[test]
fn commits_are_atomic_with_offsets_and_load_rebuilds_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let (store, opened) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(opened, Opened::Fresh);
    let (mut original, _) = drive(&store, 3000, 250);
    assert_eq!(store.offsets().unwrap()[&("in".to_string(), 0)], 3000);
    drop(store);
    let (store, opened) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(opened, Opened::Existing);
    let loaded = store.load().unwrap();
    let mut restored = Engine::restore(
        config(),
        builtin_models(),
        loaded.journeys,
        loaded.identities,
        loaded.meta,
    );
    assert!(!loaded.held.is_empty(), "the bound holds events at the cut");
    restored.hold_restored(loaded.held);
    // Both continue identically on more input.
    let more = more_events(1000);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for ev in more {
        let _ = original.submit(ev.clone(), &mut a);
        let _ = restored.submit(ev, &mut b);
    }
    assert_eq!(a, b);
    assert_eq!(original.stats(), restored.stats());
}

#[test]
fn restoring_the_changelog_into_an_empty_directory_gives_identical_column_families() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let (_, changelog) = drive(&store, 4000, 100);
    // Compaction keeps the last record per key; replaying all of them in order is equivalent.
    let (copy, _) = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
    copy.apply_changelog(&changelog).unwrap();
    copy.set_offsets(&store.offsets().unwrap()).unwrap();
    assert!(copy.dump().unwrap()["timers"].is_empty(), "not published");
    // Loading builds the local timer index from the journeys restored.
    copy.load_paged().unwrap();
    let (a, b) = (store.dump().unwrap(), copy.dump().unwrap());
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        [
            "customers",
            "held",
            "identities",
            "journeys",
            "meta",
            "timers"
        ]
    );
    assert!(a["customers"].len() > 100);
    assert!(a["journeys"].len() > 100);
    assert!(a["timers"].len() > 10);
    assert_eq!(a, b);
    // Deletions (merged-away journeys) are tombstones in the changelog.
    assert!(changelog.iter().any(|r| r.value.is_none()));
}

#[test]
fn a_corrupt_or_foreign_directory_is_moved_aside_not_crash_looped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("CURRENT"), b"garbage\n").unwrap();
    let (store, opened) = Store::open(&path, StoreOptions::default()).unwrap();
    let Opened::Rebuilt { moved_to, .. } = opened else {
        panic!("expected a rebuild, got {opened:?}")
    };
    assert!(
        moved_to.join("CURRENT").exists(),
        "the old directory is kept for inspection"
    );
    assert!(store.load().unwrap().journeys.is_empty());
    drop(store);
    // Reopening the fresh store works and keeps it.
    let (_, opened) = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(opened, Opened::Existing);
}

#[test]
fn stats_report_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("s"), StoreOptions::default()).unwrap();
    drive(&store, 2000, 500);
    let s = store.stats();
    assert!(s.journeys > 0 && s.identities > 0, "{s:?}");
    assert!(s.memtable_bytes > 0 || s.sst_bytes > 0, "{s:?}");
}

#[test]
fn expired_customers_are_deleted_from_the_store_and_the_changelog() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let mut e = Engine::new(
        EngineConfig {
            out_of_order_ms: 0,
            customer_ttl_ms: 86_400_000,
            ..EngineConfig::default()
        },
        builtin_models(),
    );
    let mut out = Vec::new();
    let events: Vec<_> = Generator::new(Settings {
        customers: 50,
        ..Settings::default()
    })
    .filter_map(|r| match r {
        Record::Event(e) => Some(e),
        _ => None,
    })
    .take(500)
    .collect();
    let last = events.iter().map(|e| e.time).max().unwrap();
    for ev in events {
        let _ = e.submit(ev, &mut out);
    }
    let offsets = |n| Offsets::from([(("in".to_string(), 0), n)]);
    let mut changelog = Store::prepare(&e.take_changes()).changelog;
    store
        .write(
            &journey_store::Prepared {
                changelog: changelog.clone(),
            },
            &offsets(1),
        )
        .unwrap();
    let before = store.dump().unwrap();
    assert!(!before["journeys"].is_empty() && !before["identities"].is_empty());
    // Everyone inactive for longer than the TTL: all forgotten, by tombstones.
    e.advance_watermark(last + 2 * 86_400_000, &mut out);
    let prepared = Store::prepare(&e.take_changes());
    assert!(
        prepared
            .changelog
            .iter()
            .filter(|r| r.value.is_none())
            .count()
            >= before["journeys"].len() + before["identities"].len()
    );
    store.write(&prepared, &offsets(2)).unwrap();
    changelog.extend(prepared.changelog);
    changelog.retain(|r| r.is_published());
    let after = store.dump().unwrap();
    assert!(
        after.get("journeys").is_none_or(|r| r.is_empty()),
        "{:?}",
        after.get("journeys")
    );
    assert!(after.get("identities").is_none_or(|r| r.is_empty()));
    // The changelog replayed into an empty directory gives the same state.
    let (copy, _) = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
    copy.apply_changelog(&changelog).unwrap();
    copy.set_offsets(&store.offsets().unwrap()).unwrap();
    copy.load_paged().unwrap();
    assert_eq!(copy.dump().unwrap(), after);
}

#[test]
fn the_timer_index_holds_each_journeys_next_timer_in_due_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let _ = drive(&store, 4000, 100);
    let mut expected: Vec<(i64, String)> = store
        .load()
        .unwrap()
        .journeys
        .into_iter()
        .filter_map(|(key, j)| Some((j.next_due?, key)))
        .collect();
    expected.sort();
    assert!(expected.len() > 10);
    let all = store.due_timers(i64::MIN, i64::MAX).unwrap();
    assert_eq!(all, expected);
    // A range gives the rows due after its start, up to and with its end.
    let (after, until) = (expected[3].0, expected[expected.len() - 3].0);
    let some: Vec<_> = expected
        .iter()
        .filter(|(due, _)| *due > after && *due <= until)
        .cloned()
        .collect();
    assert_eq!(store.due_timers(after, until).unwrap(), some);
    assert!(store.due_timers(until, after).unwrap().is_empty());
}

#[test]
fn an_engine_reading_journeys_from_the_store_continues_like_one_holding_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("state"), StoreOptions::default()).unwrap();
    let (mut original, _) = drive(&store, 3000, 250);
    let store = std::sync::Arc::new(store);
    let index = store.load_index().unwrap();
    assert!(index.journeys.is_empty());
    assert_eq!(
        index.timers.len(),
        store
            .load()
            .unwrap()
            .journeys
            .iter()
            .filter(|(_, j)| j.next_due.is_some())
            .count()
    );
    let mut backed = Engine::restore_backed(
        config(),
        builtin_models(),
        Box::new(journey_store::StoreBacking::new(store.clone())),
        index.timers,
        index.identities,
        index.meta,
    );
    let more = more_events(2000);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, ev) in more.into_iter().enumerate() {
        let _ = original.submit(ev.clone(), &mut a);
        let _ = backed.submit(ev, &mut b);
        if (i + 1) % 100 == 0 {
            // Commit the backed engine's changes and keep nothing in memory.
            let prepared = Store::prepare(&backed.take_changes());
            store
                .write(
                    &prepared,
                    &Offsets::from([(("in".to_string(), 0), 4000 + i as i64)]),
                )
                .unwrap();
            backed.persisted(0);
            assert_eq!(backed.cache_stats().resident, 0);
        }
    }
    assert_eq!(a, b);
    assert_eq!(original.stats(), backed.stats());
    assert!(
        backed.cache_stats().loads > 100,
        "{:?}",
        backed.cache_stats()
    );
    assert_eq!(backed.backing_error(), None);
}

#[test]
fn prepare_from_the_engine_encodes_what_prepare_of_its_changes_does() {
    let (mut copied, mut direct) = (engine(), engine());
    let mut out = Vec::new();
    for (i, ev) in more_events(3000).into_iter().enumerate() {
        let _ = copied.submit(ev.clone(), &mut out);
        let _ = direct.submit(ev, &mut out);
        if (i + 1) % 700 == 350 {
            // A part mid-transaction...
            let part = Store::prepare(&copied.take_entity_changes());
            assert!(!part.changelog.is_empty());
            assert_eq!(Store::prepare_from(&mut direct, false), part);
        }
        if (i + 1) % 700 == 0 {
            // ...and the commit, with the engine-wide state.
            let commit = Store::prepare(&copied.take_changes());
            assert_eq!(Store::prepare_from(&mut direct, true), commit);
        }
    }
}

#[test]
fn a_commit_writes_the_events_held_since_the_last_not_all_held() {
    // A live stream: event time advances 10 ms per event and the bound is
    // five minutes, so about 30,000 events are held at any time.
    let mut e = Engine::new(
        EngineConfig {
            out_of_order_ms: 300_000,
            ..EngineConfig::default()
        },
        builtin_models(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("s"), StoreOptions::default()).unwrap();
    let mut out = Vec::new();
    let start = 1_767_225_600_000;
    let (every, n) = (500, 40_000);
    let mut largest = 0;
    for (i, mut ev) in more_events(n).into_iter().enumerate() {
        ev.time = start + 10 * i as i64;
        let _ = e.submit(ev, &mut out);
        if (i + 1) % every == 0 {
            let prepared = Store::prepare_from(&mut e, true);
            largest = largest.max(prepared.changelog.len());
            store
                .write(
                    &prepared,
                    &Offsets::from([(("in".to_string(), 0), i as i64 + 1)]),
                )
                .unwrap();
        }
    }
    assert!(e.pending() > 25_000, "{} held", e.pending());
    // Each commit: the events held and released since the last one, and
    // the journeys and identifiers they changed.
    assert!(largest <= 4 * every, "{largest} records in one commit");
    let loaded = store.load().unwrap();
    assert_eq!(loaded.held.len(), e.pending());
    assert!(loaded.meta.pending.is_empty());
}

#[test]
fn a_changelog_without_customer_records_gets_the_customer_index_built() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
    let (_, changelog) = drive(&store, 3000, 100);
    // As an older version wrote it: identities, no customers.
    let older: Vec<_> = changelog.into_iter().filter(|r| r.key[0] != b'c').collect();
    let (copy, _) = Store::open(&dir.path().join("b"), StoreOptions::default()).unwrap();
    copy.apply_changelog(&older).unwrap();
    copy.set_offsets(&store.offsets().unwrap()).unwrap();
    assert!(copy.dump().unwrap()["customers"].is_empty());
    copy.load_paged().unwrap();
    assert_eq!(copy.dump().unwrap(), store.dump().unwrap());
}

#[test]
fn an_engine_paging_customers_from_the_store_continues_like_one_holding_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("state"), StoreOptions::default()).unwrap();
    let (mut original, _) = drive(&store, 3000, 250);
    let store = std::sync::Arc::new(store);
    let index = store.load_paged().unwrap();
    assert!(index.identities.is_empty() && index.journeys.is_empty() && index.timers.is_empty());
    let mut paged = Engine::restore_paged(
        config(),
        builtin_models(),
        Box::new(journey_store::StoreBacking::new(store.clone())),
        index.meta,
        0,
    );
    paged.hold_restored(index.held);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, ev) in more_events(2000).into_iter().enumerate() {
        let _ = original.submit(ev.clone(), &mut a);
        let _ = paged.submit(ev, &mut b);
        if (i + 1) % 100 == 0 {
            // Commit, then keep no journey and no customer in memory.
            let prepared = Store::prepare_from(&mut paged, true);
            store
                .write(
                    &prepared,
                    &Offsets::from([(("in".to_string(), 0), 4000 + i as i64)]),
                )
                .unwrap();
            paged.persisted(0);
            assert_eq!(paged.identity().customer_count(), 0);
        }
    }
    assert_eq!(a, b);
    assert_eq!(original.stats(), paged.stats());
    let c = paged.cache_stats();
    assert!(
        c.customer_loads > 100 && c.customer_evictions > 100,
        "{c:?}"
    );
    assert_eq!(paged.backing_error(), None);
}
