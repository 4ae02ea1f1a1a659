//! Property tests of the invariants of DESIGN.md §4 that live in the core.

mod support;

use std::collections::BTreeMap;

use journey_core::{Event, Identifier, Output};
use proptest::prelude::*;
use support::*;

const TYPES: [&str; 12] = [
    "page_view",
    "ad_click",
    "product_view",
    "add_to_cart",
    "purchase",
    "purchase",
    "subscription_renewal",
    "social_share",
    "review_written",
    "store_visit",
    "email_open",
    "login",
];

/// A workload: persons with identifiers; each event uses a subset of its person's ids.
fn workload() -> impl Strategy<Value = Vec<Event>> {
    let event = (0usize..6, 0usize..TYPES.len(), 0i64..400, 1u8..8, 0u8..6);
    prop::collection::vec(event, 1..60).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (person, ty, day, mask, rating))| {
                let all = [
                    ("anonymous_id", format!("cookie-{person}")),
                    ("device_id", format!("dev-{}", person / 2)),
                    ("email", format!("p{person}@x")),
                ];
                // Persons 0/1 and 2/3 share a device: their journeys merge.
                let ids: Vec<Identifier> = all
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| mask & (1 << b) != 0)
                    .map(|(_, (k, v))| Identifier::new(k, v))
                    .collect();
                let mut e = ev(&format!("e{i:03}"), T0 + day * DAY, "web", TYPES[ty], &[]);
                e.identifiers = ids;
                e.properties.insert("rating".into(), rating.to_string());
                e
            })
            .collect()
    })
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)));
    events
}

/// Final journeys after all input and the watermark moved to `end`.
fn final_state(
    events: Vec<Event>,
    bound: i64,
    end: i64,
) -> BTreeMap<String, (Vec<Option<String>>, Vec<String>)> {
    let mut e = all_models_engine(bound);
    let mut out = run(&mut e, events);
    e.advance_watermark(end, &mut out);
    final_view(&e)
}

const END: i64 = T0 + 1000 * DAY;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Shuffling within the out-of-orderness bound gives identical transitions.
    #[test]
    fn shuffle_within_bound_gives_identical_transitions(events in workload(), seed in any::<u64>()) {
        let bound = 3 * DAY;
        let base = sorted(events);
        // Displace each event by less than the bound: sort by time + jitter.
        let mut rng = seed;
        let mut jittered: Vec<(i64, Event)> = base.iter().cloned().map(|e| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((e.time + (rng >> 33) as i64 % bound), e)
        }).collect();
        jittered.sort_by_key(|(k, _)| *k);
        let shuffled: Vec<Event> = jittered.into_iter().map(|(_, e)| e).collect();
        let mut a = all_models_engine(bound);
        let mut b = all_models_engine(bound);
        let ta = transitions(&run(&mut a, base));
        let tb = transitions(&run(&mut b, shuffled));
        prop_assert_eq!(ta, tb);
    }

    /// Any arrival order gives the same final stages, touchpoints and keys.
    #[test]
    fn any_order_gives_the_same_final_journeys(events in workload(), perm in any::<u64>()) {
        let base = sorted(events.clone());
        let mut shuffled = events;
        let mut rng = perm;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(final_state(base, 0, END), final_state(shuffled, 0, END));
    }

    /// Splitting the input by customer gives the same final journeys.
    #[test]
    fn splitting_by_customer_gives_the_same_journeys(events in workload()) {
        let whole = final_state(events.clone(), DAY, END);
        // Persons sharing a device (0/1, 2/3, 4/5) belong together.
        let mut parts: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for e in events {
            let group = e.identifiers.iter().find(|i| &*i.kind == "device_id").map(|i| i.value.clone())
                .unwrap_or_else(|| {
                    let p: usize = e.identifiers[0].value.chars().filter(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap();
                    format!("dev-{}", p / 2)
                });
            parts.entry(group).or_default().push(e);
        }
        let mut union = BTreeMap::new();
        for (_, part) in parts {
            union.extend(final_state(part, DAY, END));
        }
        prop_assert_eq!(whole, union);
    }

    /// Replaying the same input a second time changes nothing.
    #[test]
    fn replaying_twice_changes_nothing(events in workload()) {
        let mut e = all_models_engine(DAY);
        run(&mut e, events.clone());
        let before = final_view(&e);
        let out = run(&mut e, events.clone());
        prop_assert!(out.iter().all(|o| matches!(o, Output::Duplicate { .. })), "{:?}", out);
        prop_assert_eq!(e.stats().duplicates as usize, events.len());
        prop_assert_eq!(before, final_view(&e));
    }

    /// Merges converge whatever the order of the links: the same keys and sets.
    #[test]
    fn merges_converge_whatever_the_link_order(events in workload(), perm in any::<u64>()) {
        let keys = |evs: Vec<Event>| {
            let mut e = all_models_engine(0);
            run(&mut e, evs.clone());
            let mut m: BTreeMap<String, (String, Vec<Identifier>)> = BTreeMap::new();
            for ev in &evs {
                for id in &ev.identifiers {
                    let key = e.identity().key_of(id).unwrap();
                    m.insert(id.key(), (key, e.identity().members_of(id)));
                }
            }
            m
        };
        let mut shuffled = events.clone();
        shuffled.reverse();
        let mut rng = perm;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(keys(events), keys(shuffled));
    }
}

/// The engine record no longer carries held events: they are changes of
/// their own, so a commit's size does not grow with the number held.
fn assert_no_held_events_in(meta: &journey_core::EngineMeta) {
    assert!(meta.pending.is_empty(), "held events in the engine record");
}

/// Applies `take_changes` to a map, as a state store would.
#[derive(Default)]
struct FakeStore {
    journeys: BTreeMap<String, journey_core::Journey>,
    identities: BTreeMap<Identifier, Identifier>,
    customers: BTreeMap<String, Vec<Identifier>>,
    timers: std::collections::BTreeSet<(i64, String)>,
    held: BTreeMap<(i64, String), Event>,
    meta: journey_core::EngineMeta,
}

impl FakeStore {
    /// The customers written agree with the identities written: every
    /// identifier is a member of its key's customer, and every member of a
    /// customer has its key.
    fn assert_customers_agree(&self) {
        for (id, key) in &self.identities {
            let members = self.customers.get(&key.key());
            assert!(
                members.is_some_and(|m| m.contains(id)),
                "{id} -> {key}: {members:?}"
            );
        }
        for (key, members) in &self.customers {
            for m in members {
                assert_eq!(
                    self.identities.get(m).map(Identifier::key).as_ref(),
                    Some(key),
                    "{m}"
                );
            }
        }
    }

    /// The timer index written agrees with the journeys written: one row
    /// per journey with a timer, at its `next_due`.
    fn assert_timers_agree(&self) {
        let expected: std::collections::BTreeSet<(i64, String)> = self
            .journeys
            .iter()
            .filter_map(|(k, j)| Some((j.next_due?, k.clone())))
            .collect();
        assert_eq!(self.timers, expected);
    }

    fn apply(&mut self, c: journey_core::StateChanges) {
        for (k, j) in c.journeys {
            match j {
                Some(j) => self.journeys.insert(k, j),
                None => self.journeys.remove(&k),
            };
        }
        for (id, key) in c.identities {
            match key {
                Some(key) => self.identities.insert(id, key),
                None => self.identities.remove(&id),
            };
        }
        for (key, members) in c.customers {
            match members {
                Some(members) => self.customers.insert(key, members),
                None => self.customers.remove(&key),
            };
        }
        for (row, set) in c.timers {
            if set {
                self.timers.insert(row);
            } else {
                assert!(self.timers.remove(&row), "deleting {row:?}, not written");
            }
        }
        for (slot, ev) in c.held {
            match ev {
                Some(ev) => self.held.insert(slot, ev),
                None => self.held.remove(&slot),
            };
        }
        if let Some(meta) = c.meta {
            assert_no_held_events_in(&meta);
            self.meta = meta;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// State taken at any point and restored continues exactly like the original.
    #[test]
    fn restored_state_continues_identically(events in workload(), cut in 0usize..60, every in 1usize..7, ttl_days in 0i64..20) {
        let cut = cut.min(events.len());
        // Customer expiry on (days) or off (0): its deletions are state changes too.
        let config = journey_core::EngineConfig {
            out_of_order_ms: DAY,
            customer_ttl_ms: ttl_days * DAY,
            ..Default::default()
        };
        let mut original = journey_core::Engine::new(config.clone(), journey_core::builtin_models());
        let mut store = FakeStore::default();
        let mut out = Vec::new();
        for (i, e) in events[..cut].iter().enumerate() {
            original.submit(e.clone(), &mut out).unwrap();
            if i % every == 0 {
                store.apply(original.take_changes());
            }
        }
        store.apply(original.take_changes());
        store.assert_timers_agree();
        let mut restored = journey_core::Engine::restore(
            config,
            journey_core::builtin_models(),
            store.journeys.clone(),
            store.identities.clone(),
            store.meta.clone(),
        );
        restored.hold_restored(store.held.values().cloned());
        prop_assert_eq!(restored.pending(), original.pending());
        let rest: Vec<Event> = events[cut..].to_vec();
        let a = run(&mut original, rest.clone());
        let b = run(&mut restored, rest);
        prop_assert_eq!(a, b);
        prop_assert_eq!(final_view(&original), final_view(&restored));
        prop_assert_eq!(original.stats(), restored.stats());
    }
}

/// A backing over a [`FakeStore`] shared with the test, which writes each
/// commit's changes to it.
struct SharedBacking(std::sync::Arc<std::sync::Mutex<FakeStore>>);

impl journey_core::JourneyBacking for SharedBacking {
    fn load(&mut self, key: &str) -> Option<journey_core::Journey> {
        self.0.lock().unwrap().journeys.get(key).cloned()
    }

    fn customer(&mut self, id: &Identifier) -> Option<Vec<Identifier>> {
        let s = self.0.lock().unwrap();
        s.customers.get(&s.identities.get(id)?.key()).cloned()
    }

    fn due_timers(&mut self, after: i64, until: i64) -> Vec<(i64, String)> {
        let s = self.0.lock().unwrap();
        s.timers
            .iter()
            .filter(|(due, _)| *due > after && *due <= until)
            .cloned()
            .collect()
    }

    fn take_error(&mut self) -> Option<String> {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// An engine whose journeys live in a store and are dropped from memory
    /// at every commit (a cache of zero bytes), with changes taken in parts
    /// between commits as the worker does, gives the same outputs and final
    /// journeys as one holding everything in memory.
    #[test]
    fn a_journey_cache_of_any_size_changes_nothing(events in workload(), every in 1usize..7, part in 1usize..4, budget in prop::sample::select(vec![0usize, 3000, 1 << 30]), ttl_days in 0i64..20, paged in any::<bool>()) {
        let config = journey_core::EngineConfig {
            out_of_order_ms: DAY,
            customer_ttl_ms: ttl_days * DAY,
            ..Default::default()
        };
        let mut memory = journey_core::Engine::new(config.clone(), journey_core::builtin_models());
        let store = std::sync::Arc::new(std::sync::Mutex::new(FakeStore::default()));
        // Paged: the identity graph too is a cache over the store, of no
        // bytes (every customer without a journey in memory leaves).
        let mut backed = if paged {
            journey_core::Engine::restore_paged(
                config,
                journey_core::builtin_models(),
                Box::new(SharedBacking(store.clone())),
                journey_core::EngineMeta::default(),
                0,
            )
        } else {
            journey_core::Engine::restore_backed(
                config,
                journey_core::builtin_models(),
                Box::new(SharedBacking(store.clone())),
                [],
                [],
                journey_core::EngineMeta::default(),
            )
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Changes sent before the commit, written to the store at the commit.
        let mut staged = Vec::new();
        for (i, e) in events.iter().enumerate() {
            memory.submit(e.clone(), &mut a).unwrap();
            backed.submit(e.clone(), &mut b).unwrap();
            if i % part == 0 {
                staged.push(backed.take_entity_changes());
            }
            if i % every == 0 {
                staged.push(backed.take_changes());
                let mut s = store.lock().unwrap();
                for c in staged.drain(..) {
                    s.apply(c);
                }
                s.assert_customers_agree();
                s.assert_timers_agree();
                drop(s);
                backed.persisted(budget);
                if budget == 0 {
                    // Everything is written: nothing needs to stay but, in a
                    // paging engine, journeys whose timer is overdue (a late
                    // event's, fired when the watermark next moves).
                    let watermark = backed.watermark();
                    let overdue = backed
                        .journeys()
                        .filter(|(_, j)| paged && j.next_due.is_some_and(|d| d <= watermark))
                        .count();
                    prop_assert_eq!(backed.cache_stats().resident, overdue);
                    if paged && overdue == 0 {
                        prop_assert_eq!(backed.identity().customer_count(), 0);
                    }
                }
            }
        }
        memory.flush(&mut a);
        backed.flush(&mut b);
        prop_assert_eq!(&a, &b);
        staged.push(backed.take_changes());
        let mut s = store.lock().unwrap();
        for c in staged.drain(..) {
            s.apply(c);
        }
        let stored = journey_core::Engine::restore(
            journey_core::EngineConfig::default(),
            journey_core::builtin_models(),
            s.journeys.clone(),
            [],
            journey_core::EngineMeta::default(),
        );
        prop_assert_eq!(final_view(&memory), final_view(&stored));
        prop_assert_eq!(memory.stats(), backed.stats());
    }
}
