//! The engine: watermark-ordered event application, identity linking, merges,
//! timers and the outputs they produce.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::NodeLinks;
use crate::journey::Emitted;
use crate::journeys::Journeys;
use crate::model::{Change, ModelState};
use crate::names::Names;
use crate::node_set::NodeSet;
use crate::timers::TimerQueue;
use crate::{
    CacheStats, Cause, DAY_MS, Event, EventError, Guards, Identifier, IdentityGraph, Journey,
    JourneyBacking, Millis, Priority, ProfileMerge, Rejection, StageModel, Transition, TriggerRef,
};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Identifier type priority, highest first.
    pub priority: Vec<String>,
    /// Identity guards.
    pub guards: Guards,
    /// Out-of-orderness bound in milliseconds: events are held until the
    /// watermark (max event time seen − bound) passes them, then applied in
    /// event-time order.
    pub out_of_order_ms: Millis,
    /// At most this many touchpoints are kept per customer (older ones are
    /// folded into a summary; the stage never changes by trimming).
    pub max_touchpoints: usize,
    /// Touchpoints older than this (relative to the watermark) are folded away.
    pub max_touchpoint_age_ms: Millis,
    /// Customer expiry: a customer without a touchpoint for this long (event
    /// time, against the watermark) is forgotten, journey and identifiers.
    /// 0: never.
    pub customer_ttl_ms: Millis,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            priority: Priority::default().types().to_vec(),
            guards: Guards::default(),
            out_of_order_ms: 5 * 60_000,
            max_touchpoints: 1000,
            max_touchpoint_age_ms: 730 * DAY_MS,
            customer_ttl_ms: 0,
        }
    }
}

/// Something the engine produced for the worker to publish or count.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A stage transition.
    Transition(Transition),
    /// Two customers merged (or a customer's key changed).
    Merge(ProfileMerge),
    /// A link between two identifiers was applied.
    Link {
        /// Event that carried the link.
        event_id: String,
        /// Its event time.
        time: Millis,
        /// Anchor (highest-priority identifier of the event).
        a: Identifier,
        /// Linked identifier.
        b: Identifier,
    },
    /// A link was refused by a guard.
    Rejected {
        /// Event that carried the link.
        event_id: String,
        /// Its event time.
        time: Millis,
        /// What was refused and why.
        rejection: Rejection,
    },
    /// An identifier was ignored because its value is blocked.
    Blocked {
        /// Event that carried it.
        event_id: String,
        /// The identifier.
        identifier: Identifier,
    },
    /// A customer expired (no touchpoint for the configured period) and was
    /// forgotten: its journey and identifiers are deleted.
    Expired {
        /// Its key.
        customer_key: String,
        /// Time of its last touchpoint.
        last_touch: Millis,
        /// Identifiers forgotten with it.
        identifiers: usize,
    },
    /// An event id already applied to the customer; nothing changed.
    Duplicate {
        /// The event id.
        event_id: String,
        /// The customer it belongs to.
        customer_key: String,
    },
}

/// What [`Engine::submit`] did with an event right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Held until the watermark passes it.
    Buffered,
    /// An event with the same time and id is already held; nothing changed.
    Duplicate,
    /// Behind the watermark: applied immediately.
    Late,
    /// In order with nothing held: applied immediately.
    Applied,
}

/// Counters of what the engine did (for metrics and reconciliation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Events applied to a journey.
    pub applied: u64,
    /// Events recognised as duplicates.
    pub duplicates: u64,
    /// Events that arrived behind the watermark.
    pub late: u64,
    /// Transitions emitted.
    pub transitions: u64,
    /// Journeys merged into another.
    pub merges: u64,
    /// Links applied.
    pub links: u64,
    /// Links refused by a guard.
    pub rejected_links: u64,
    /// Identifiers ignored because blocked.
    pub blocked_identifiers: u64,
}

/// The journey-stitching engine for one stream of events (one partition or the
/// whole input). Deterministic: the same events with the same watermark moves
/// give the same outputs.
pub struct Engine {
    config: EngineConfig,
    models: Vec<StageModel>,
    identity: IdentityGraph,
    journeys: Journeys,
    /// Held events, by (event time, event id).
    pending: BTreeMap<(Millis, String), HeldEvent>,
    /// Slots held since the last take of changes (some may be released
    /// already): written as held events at the next take.
    pending_new: Vec<(Millis, String)>,
    /// Slots of written held events released since: deleted at the next take.
    pending_gone: Vec<(Millis, String)>,
    /// Timer entries: (due time, key node of the customer).
    timers: TimerQueue,
    max_time: Millis,
    watermark: Millis,
    stats: EngineStats,
    changes: Vec<(usize, Change, bool)>,
    /// Customers (by key node) whose journey changed or was deleted since
    /// the last take of changes.
    dirty: NodeSet,
    /// Keys of changed customers forgotten since the last take of changes
    /// (see [`Engine::expire`]), by node.
    deleted_keys: rustc_hash::FxHashMap<u32, String>,
    /// Reused for what linking an event's identifiers did.
    links: NodeLinks,
    /// The identity graph is a cache over the backing (see
    /// [`Engine::restore_paged`]), of about this many bytes.
    identity_budget: Option<usize>,
    /// Timer rows of the store's index (due, customer key) already read
    /// back, due at or before this (paged engines: they keep no timer for
    /// a journey not in memory, and read the index as the watermark moves).
    timers_read_until: Millis,
    /// Rows of the timer index written or deleted since the last take of
    /// changes: deleted as journeys leave their key, then brought up to
    /// date at the take for the journeys changed.
    timer_rows: Vec<((Millis, String), bool)>,
    /// Identifiers forgotten since the last persisted commit: the backing
    /// still has them, and they must not be read back from it.
    gone_ids: rustc_hash::FxHashSet<Identifier>,
}

/// A paging engine reads the store's timer index this far (event time)
/// ahead of the watermark: one read a minute of event time rather than one
/// each time the watermark moves (a read opens a RocksDB iterator), for the
/// customers due within that minute held in memory until they fire.
const TIMER_READ_AHEAD_MS: Millis = 60_000;

/// An event held until the watermark passes it.
struct HeldEvent {
    /// Boxed: the B-tree's nodes stay small, so an insertion shifts
    /// pointers rather than whole events.
    event: Box<Event>,
    /// Whether a take of changes has reported it (so its release must be).
    written: bool,
}

/// One change of state, as [`Engine::take_changes_with`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChangeRef<'a> {
    /// A journey written (`Some`) or deleted (`None`), by customer key.
    Journey(&'a str, Option<&'a Journey>),
    /// An event held until the watermark passes it (`Some`), or released
    /// (`None`), by (event time, event id).
    Held((Millis, &'a str), Option<&'a Event>),
}

/// Engine-wide state besides journeys and identities (for the state store).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMeta {
    /// Watermark.
    pub watermark: Millis,
    /// Latest event time seen.
    pub max_time: Millis,
    /// Events held until the watermark passes them, as written by versions
    /// that kept them here (read at restore; now always written empty: held
    /// events are changes of their own, see [`StateChanges::held`]).
    pub pending: Vec<Event>,
    /// Counters.
    pub stats: EngineStats,
}

/// What changed since the last [`Engine::take_changes`]: the unit of a commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateChanges {
    /// Journeys written (`Some`) or deleted (`None`), by customer key.
    pub journeys: Vec<(String, Option<Journey>)>,
    /// Identifiers and their current key identifier (none: forgotten).
    pub identities: Vec<(Identifier, Option<Identifier>)>,
    /// Customers by key with all their identifiers, sorted (none: the key
    /// no longer names a customer), so that a store can give a customer
    /// back whole (see [`JourneyBacking::customer`]).
    pub customers: Vec<(String, Option<Vec<Identifier>>)>,
    /// Events held since the last take (`Some`), and held events written
    /// before and released since (`None`), by (event time, event id). Give
    /// the held ones back at restore with [`Engine::hold_restored`].
    pub held: Vec<((Millis, String), Option<Event>)>,
    /// Rows of the timer index, (due time, customer key), written (`true`)
    /// or deleted (`false`), to apply in this order: the index holds one
    /// row per stored journey with a timer (its `next_due`), so that a store
    /// finds the journeys due without reading them all (see
    /// [`JourneyBacking::due_timers`]).
    pub timers: Vec<((Millis, String), bool)>,
    /// Engine-wide state: always included by [`Engine::take_changes`], left
    /// out by [`Engine::take_entity_changes`].
    pub meta: Option<EngineMeta>,
}

impl Engine {
    /// An engine running the given models (at least one).
    pub fn new(config: EngineConfig, models: Vec<StageModel>) -> Self {
        assert!(
            !models.is_empty(),
            "the engine needs at least one stage model"
        );
        let identity = IdentityGraph::new(
            Priority::new(config.priority.clone()),
            config.guards.clone(),
        );
        Engine {
            config,
            models,
            identity,
            journeys: Journeys::new(),
            pending: BTreeMap::new(),
            pending_new: Vec::new(),
            pending_gone: Vec::new(),
            timers: TimerQueue::new(),
            max_time: Millis::MIN,
            watermark: Millis::MIN,
            stats: EngineStats::default(),
            changes: Vec::new(),
            dirty: Default::default(),
            deleted_keys: Default::default(),
            links: NodeLinks::default(),
            identity_budget: None,
            timers_read_until: Millis::MIN,
            timer_rows: Vec::new(),
            gone_ids: Default::default(),
        }
    }

    /// An engine resuming from stored state.
    pub fn restore(
        config: EngineConfig,
        models: Vec<StageModel>,
        journeys: impl IntoIterator<Item = (String, Journey)>,
        identities: impl IntoIterator<Item = (Identifier, Identifier)>,
        meta: EngineMeta,
    ) -> Self {
        let mut e = Engine::new(config, models);
        e.identity = IdentityGraph::restore(
            Priority::new(e.config.priority.clone()),
            e.config.guards.clone(),
            identities,
        );
        for (key, mut j) in journeys {
            let node = e.identity.key_node(&key);
            if let Some(due) = j.next_due {
                e.timers.insert(due, node);
            }
            j.stored_due.0 = j.next_due;
            j.share_names(&mut e.journeys.names);
            e.journeys.insert(node, Box::new(j));
        }
        e.watermark = meta.watermark;
        e.max_time = meta.max_time;
        e.stats = meta.stats;
        // Held events of the engine record (older versions): written as
        // held events of their own at the next take.
        for ev in meta.pending {
            e.hold(ev, false);
        }
        e
    }

    /// Gives a restored engine back the held events its store has (see
    /// [`StateChanges::held`]).
    pub fn hold_restored(&mut self, events: impl IntoIterator<Item = Event>) {
        for ev in events {
            self.hold(ev, true);
        }
    }

    /// Holds a restored event; one not `written` yet as a held event of its
    /// own is written at the next take of changes.
    fn hold(&mut self, event: Event, written: bool) {
        let slot = (event.time, event.event_id.clone());
        if !written {
            self.pending_new.push(slot.clone());
        }
        let event = Box::new(event);
        self.pending.insert(slot, HeldEvent { event, written });
    }

    /// An engine resuming from stored state whose journeys stay in the
    /// backing and are read on first use (a bounded cache in memory, see
    /// [`Engine::persisted`]). `timers` are the journeys' `next_due` entries.
    pub fn restore_backed(
        config: EngineConfig,
        models: Vec<StageModel>,
        backing: Box<dyn JourneyBacking>,
        timers: impl IntoIterator<Item = (Millis, String)>,
        identities: impl IntoIterator<Item = (Identifier, Identifier)>,
        meta: EngineMeta,
    ) -> Self {
        let mut e = Engine::restore(config, models, [], identities, meta);
        e.journeys.set_backing(backing);
        for (due, key) in timers {
            let node = e.identity.key_node(&key);
            e.timers.insert(due, node);
        }
        e
    }

    /// An engine resuming from stored state that holds neither its journeys
    /// nor its identity graph whole: both are caches over the backing, read
    /// on first use (a customer's identifiers with
    /// [`JourneyBacking::customer`]) and dropped after a persisted commit
    /// (see [`Engine::persisted`]), the graph once its estimate (see
    /// [`IdentityGraph::memory_bytes`]) passes `identity_budget_bytes`:
    /// customers whose journeys are not held go. Timers are read from the
    /// backing's timer index as the watermark passes them
    /// ([`JourneyBacking::due_timers`]): none is held for a journey not in
    /// memory.
    ///
    /// [`Engine::route_key`] and [`Engine::identity`] see the customers held
    /// only: a paging engine is for a worker that resolves its own events.
    pub fn restore_paged(
        config: EngineConfig,
        models: Vec<StageModel>,
        backing: Box<dyn JourneyBacking>,
        meta: EngineMeta,
        identity_budget_bytes: usize,
    ) -> Self {
        let mut e = Engine::restore(config, models, [], [], meta);
        e.journeys.set_backing(backing);
        e.identity_budget = Some(identity_budget_bytes);
        e
    }

    /// Reads the stored customers of `ids` not held (a paging engine).
    /// Returns whether it read any.
    fn page_in(&mut self, ids: &[Identifier]) -> bool {
        if self.identity_budget.is_none() {
            return false;
        }
        let mut read = false;
        for id in ids {
            if self.identity.node(id).is_some() || self.gone_ids.contains(id) {
                continue;
            }
            if let Some(members) = self.journeys.load_customer(id) {
                let members: Vec<Identifier> = members
                    .into_iter()
                    .filter(|m| !self.gone_ids.contains(m))
                    .collect();
                self.identity.adopt(&members);
                read = true;
            }
        }
        read
    }

    /// [`Engine::page_in`] the customer of a key (`type:value`).
    fn page_in_key(&mut self, key: &str) {
        if self.identity_budget.is_some()
            && let Some(id) = Identifier::from_key(key)
        {
            self.page_in(std::slice::from_ref(&id));
        }
    }

    /// Takes what changed since the last take (journeys, identities) and the
    /// engine-wide state.
    pub fn take_changes(&mut self) -> StateChanges {
        let mut changes = self.take_entity_changes();
        changes.meta = Some(self.meta());
        changes
    }

    /// The journeys and identifiers changed so far, without the engine-wide
    /// state: lets a caller write a commit's changes out in several parts
    /// (the last one from [`Engine::take_changes`]).
    pub fn take_entity_changes(&mut self) -> StateChanges {
        let (mut journeys, mut held) = (Vec::new(), Vec::new());
        let mut changes = self.take_changes_with(false, |change| match change {
            ChangeRef::Journey(key, j) => journeys.push((key.to_owned(), j.cloned())),
            ChangeRef::Held((time, id), ev) => held.push(((time, id.to_owned()), ev.cloned())),
        });
        changes.journeys = journeys;
        changes.held = held;
        changes
    }

    /// [`Engine::take_changes`] (`meta`) or [`Engine::take_entity_changes`]
    /// without copying journeys or events: `change` sees every changed
    /// journey, in key order, as it is now (none: deleted), then the held
    /// events written and released. The returned changes hold the
    /// identifiers (and the engine-wide state), no journeys or events.
    pub fn take_changes_with(
        &mut self,
        meta: bool,
        mut change: impl FnMut(ChangeRef<'_>),
    ) -> StateChanges {
        let mut deleted = std::mem::take(&mut self.deleted_keys);
        let mut keys: Vec<(String, u32)> = self
            .dirty
            .drain()
            .into_iter()
            .map(|n| match deleted.remove(&n) {
                Some(key) if !self.journeys.holds(n) => (key, n),
                _ => (self.identity.node_key(n), n),
            })
            .collect();
        keys.sort_unstable();
        // One change per key: a customer that expired and came back under
        // a new node since the last take is written, not deleted.
        for group in keys.chunk_by(|a, b| a.0 == b.0) {
            for &(_, n) in group {
                self.journeys.unmark(n);
            }
            let held = group
                .iter()
                .map(|&(_, n)| n)
                .find(|&n| self.journeys.holds(n));
            if let Some(n) = held {
                self.index_timer(n, &group[0].0);
            }
            let journey = held.and_then(|n| self.journeys.get(n));
            change(ChangeRef::Journey(&group[0].0, journey));
        }
        self.journeys.taken();
        // A slot released before it was written needs neither write.
        for (time, id) in std::mem::take(&mut self.pending_gone) {
            change(ChangeRef::Held((time, &id), None));
        }
        for slot in std::mem::take(&mut self.pending_new) {
            if let Some(held) = self.pending.get_mut(&slot) {
                held.written = true;
                change(ChangeRef::Held((slot.0, &slot.1), Some(&held.event)));
            }
        }
        let identity = self.identity.take_changes();
        let timers = std::mem::take(&mut self.timer_rows);
        StateChanges {
            journeys: Vec::new(),
            identities: identity.identities,
            customers: identity.customers,
            timers,
            held: Vec::new(),
            meta: meta.then(|| self.meta()),
        }
    }

    fn meta(&self) -> EngineMeta {
        EngineMeta {
            watermark: self.watermark,
            max_time: self.max_time,
            pending: Vec::new(),
            stats: self.stats,
        }
    }

    /// Takes the journey of a customer (by key node) out of the engine's
    /// journeys (see `Journeys::remove`), and whether it was marked.
    fn take_journey_marked(&mut self, node: u32) -> Option<(Box<Journey>, bool)> {
        let identity = &self.identity;
        // A forgotten node (an expired customer's stale timer) has no key.
        self.journeys.remove(node, || {
            identity.is_live(node).then(|| identity.node_key(node))
        })
    }

    /// [`Engine::take_journey_marked`] without the mark.
    fn take_journey(&mut self, node: u32) -> Option<Box<Journey>> {
        self.take_journey_marked(node).map(|(j, _)| j)
    }

    /// A journey taken out for good (merged into another, moved to another
    /// worker, expired): its deletion is part of the next changes.
    fn journey_deleted(&mut self, node: u32, key: &str, journey: &mut Journey) {
        self.dirty.insert(node);
        self.journeys.deleted(key);
        if let Some(due) = journey.stored_due.0.take() {
            self.timer_rows.push(((due, key.to_string()), false));
        }
    }

    /// Brings the timer index's row of the journey held under `node` (key
    /// `key`), being reported as changed, up to date with its `next_due`.
    fn index_timer(&mut self, node: u32, key: &str) {
        let Some(journey) = self.journeys.get_mut(node) else {
            return;
        };
        let (stored, due) = (journey.stored_due.0, journey.next_due);
        if stored == due {
            return;
        }
        journey.stored_due.0 = due;
        if let Some(old) = stored {
            self.timer_rows.push(((old, key.to_string()), false));
        }
        if let Some(due) = due {
            self.timer_rows.push(((due, key.to_string()), true));
        }
    }

    /// The models, in output order.
    pub fn models(&self) -> &[StageModel] {
        &self.models
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Current watermark (`Millis::MIN` before the first event).
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// Events held until the watermark passes them.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Timers held in memory (some may be stale and are skipped when due);
    /// a paging engine's others wait in the backing's timer index.
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    /// The identity graph.
    pub fn identity(&self) -> &IdentityGraph {
        &self.identity
    }

    /// The journey of a customer key, if held in memory (all of them are,
    /// unless the engine has a backing: see [`Engine::restore_backed`]).
    pub fn journey(&self, key: &str) -> Option<&Journey> {
        self.journeys.get(self.identity.node_of_key(key)?)
    }

    /// The journeys held in memory, by customer key (all of them without a
    /// backing).
    pub fn journeys(&self) -> impl Iterator<Item = (String, &Journey)> {
        self.journeys
            .iter()
            .map(|(n, j)| (self.identity.node_key(n), j))
    }

    /// The journey cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.journeys.stats()
    }

    /// A read of the backing failed since the last call: what the engine did
    /// since may rest on a missing journey and must not be committed.
    pub fn backing_error(&mut self) -> Option<String> {
        self.journeys.take_error()
    }

    /// Tells the engine that every change taken so far (see
    /// [`Engine::take_changes`]) is written to its backing: journeys changed
    /// since may stay, others may be dropped from memory until the estimate
    /// of those held is at most `budget_bytes`. Does nothing without a
    /// backing. A paging engine (see [`Engine::restore_paged`]) also drops
    /// customers from its identity graph.
    pub fn persisted(&mut self, budget_bytes: usize) {
        // A paging engine has read the stored timers due until
        // `timers_read_until`: a journey whose timer is due by then (within
        // the read-ahead, or a late event's already due) stays until it
        // fires.
        let overdue = match self.identity_budget {
            Some(_) => self.timers_read_until,
            None => Millis::MIN,
        };
        let dropped = self.journeys.persisted(budget_bytes, &self.dirty, overdue);
        let Some(identity_budget) = self.identity_budget else {
            return;
        };
        self.gone_ids.clear();
        // A dropped journey's timer is in the store's index (it was written
        // unchanged since): read back when due, as its nodes may leave memory.
        for (node, due) in dropped {
            if let Some(due) = due {
                self.timers.remove(due, node);
            }
        }
        let settled =
            self.dirty.is_empty() && self.deleted_keys.is_empty() && !self.identity.has_changes();
        if !settled {
            return;
        }
        self.identity.recycle_forgotten();
        let held = self.journeys.stats().resident;
        let customers = self.identity.customer_count();
        // Only customers without a journey in memory leave: a sweep is
        // worth it when they are a good share of those held.
        if self.identity.memory_bytes() <= identity_budget
            || customers.saturating_sub(held) < customers / 8
        {
            return;
        }
        let (journeys, identity) = (&self.journeys, &self.identity);
        let cold: Vec<u32> = identity
            .key_nodes()
            .filter(|&key| identity.member_nodes(key).all(|m| !journeys.holds(m)))
            .collect();
        self.journeys.customers_evicted(cold.len());
        for key in cold {
            self.identity.evict(key);
        }
    }

    /// Submits an event. Invalid events are refused (the caller dead-letters
    /// them); valid ones are held until the watermark passes them, or applied
    /// at once if they are already behind it. Outputs go to `out`.
    pub fn submit(
        &mut self,
        mut event: Event,
        out: &mut Vec<Output>,
    ) -> Result<Submitted, EventError> {
        event.validate()?;
        let (usable, blocked) = self
            .identity
            .usable_owned(std::mem::take(&mut event.identifiers));
        if usable.is_empty() {
            let list: Vec<String> = blocked.iter().map(Identifier::key).collect();
            return Err(EventError::AllIdentifiersBlocked(list.join(", ")));
        }
        for identifier in blocked {
            self.stats.blocked_identifiers += 1;
            out.push(Output::Blocked {
                event_id: event.event_id.clone(),
                identifier,
            });
        }
        // From here on the event carries its usable identifiers, normalised and
        // highest priority first.
        event.identifiers = usable;
        if event.time <= self.watermark {
            self.stats.late += 1;
            self.process(&mut event, out);
            return Ok(Submitted::Late);
        }
        self.max_time = self.max_time.max(event.time);
        let target = self.max_time.saturating_sub(self.config.out_of_order_ms);
        if self.pending.is_empty() && event.time <= target {
            // In order and already behind the new watermark: the same as
            // holding it and releasing it at once, without the buffer.
            self.watermark = target;
            self.fire_timers_until(event.time - 1, out);
            self.process(&mut event, out);
            self.fire_due_timers(out);
            return Ok(Submitted::Applied);
        }
        let slot = (event.time, event.event_id.clone());
        match self.pending.entry(slot) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                self.pending_new.push(slot.key().clone());
                slot.insert(HeldEvent {
                    event: Box::new(event),
                    written: false,
                });
            }
            std::collections::btree_map::Entry::Occupied(_) => {
                self.stats.duplicates += 1;
                self.page_in(&event.identifiers[..1]);
                let customer_key = self
                    .identity
                    .key_of(&event.identifiers[0])
                    .unwrap_or_else(|| event.identifiers[0].key());
                out.push(Output::Duplicate {
                    event_id: event.event_id,
                    customer_key,
                });
                return Ok(Submitted::Duplicate);
            }
        }
        self.advance_watermark(target, out);
        Ok(Submitted::Buffered)
    }

    /// Moves the watermark forward to `to` (never back): releases held events up
    /// to it in event-time order and fires the timers due. The worker calls this
    /// with `wall clock − bound` on an idle partition.
    pub fn advance_watermark(&mut self, to: Millis, out: &mut Vec<Output>) {
        if to <= self.watermark {
            return;
        }
        self.watermark = to;
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > to {
                break;
            }
            let (slot, held) = entry.remove_entry();
            if held.written {
                self.pending_gone.push(slot);
            }
            let mut event = held.event;
            // Everything in event-time order: timers due before the event first.
            self.fire_timers_until(event.time - 1, out);
            self.process(&mut event, out);
        }
        self.fire_due_timers(out);
    }

    /// Releases every held event (end of input) without firing timers beyond
    /// the latest event time seen.
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        if self.max_time > self.watermark {
            self.advance_watermark(self.max_time, out);
        }
    }

    fn fire_due_timers(&mut self, out: &mut Vec<Output>) {
        self.fire_timers_until(self.watermark, out);
    }

    /// Fires the timers due at or before `until` (never beyond the watermark),
    /// in due order. Asked twice per event, and nearly always nothing is due
    /// (and no stored timer is to be read): answered inline.
    #[inline]
    fn fire_timers_until(&mut self, until: Millis, out: &mut Vec<Output>) {
        let until = until.min(self.watermark);
        if self.identity_budget.is_some() || self.timers.any_due(until) {
            self.fire_timers_due(until, out);
        }
    }

    /// [`Engine::fire_timers_until`] when something may be due.
    fn fire_timers_due(&mut self, until: Millis, out: &mut Vec<Output>) {
        // Stored timers due join the others, their customers read back.
        if self.identity_budget.is_some() && until > self.timers_read_until {
            let read_until = until.saturating_add(TIMER_READ_AHEAD_MS);
            let due = self.journeys.due_timers(self.timers_read_until, read_until);
            self.timers_read_until = read_until;
            for (due, key) in due {
                self.page_in_key(&key);
                if let Some(node) = self.identity.node_of_key(&key) {
                    self.timers.insert(due, node);
                }
            }
        }
        let mut batch = Vec::new();
        while let Some((due, node)) = self.timers.pop_due(until) {
            // Timers due at the same time fire in customer key order, not
            // node order (node numbers differ between an engine and one
            // restored from its state).
            batch.push(node);
            while let Some((_, node)) = self.timers.pop_due(due) {
                batch.push(node);
            }
            if batch.len() > 1 {
                batch.sort_by_cached_key(|&n| {
                    self.identity.is_live(n).then(|| self.identity.node_key(n))
                });
            }
            for node in std::mem::take(&mut batch) {
                self.fire_timer(due, node, until, out);
            }
        }
    }

    /// Fires the timer entry `(due, node)`, unless it is stale.
    fn fire_timer(&mut self, due: Millis, node: u32, until: Millis, out: &mut Vec<Output>) {
        let Some(mut journey) = self.take_journey(node) else {
            return;
        };
        if journey.next_due == Some(due) {
            journey.next_due = None;
            // Model timers due after the customer expired never fire.
            let expiry = self.expiry_due(&journey).filter(|&e| e <= until);
            let mut changes = std::mem::take(&mut self.changes);
            journey.fire_timers(&self.models, expiry.unwrap_or(until), &mut changes);
            for (model, change, _) in changes.drain(..) {
                self.emit(node, &mut journey, model, change, Cause::Timer, None, out);
            }
            self.changes = changes;
            self.dirty.insert(node);
            if expiry.is_some() {
                self.expire(node, &mut journey, out);
                return;
            }
            self.schedule(node, &mut journey);
        }
        self.journeys.insert(node, journey);
    }

    /// When a journey expires, if customer expiry is on.
    fn expiry_due(&self, journey: &Journey) -> Option<Millis> {
        let last = journey.last_touch();
        (self.config.customer_ttl_ms > 0 && last != Millis::MIN)
            .then(|| last.saturating_add(self.config.customer_ttl_ms))
    }

    /// Forgets an expired customer (its journey is already out of the map):
    /// the journey's deletion and its identifiers' are part of the next changes.
    fn expire(&mut self, node: u32, journey: &mut Journey, out: &mut Vec<Output>) {
        let key = self.identity.node_key(node);
        self.journey_deleted(node, &key, journey);
        // The forgotten nodes have no key any more: the changed ones (this
        // one, others merged into it) keep theirs for the next take.
        for m in self.identity.member_nodes(node) {
            if self.dirty.contains(m) {
                self.deleted_keys.insert(m, self.identity.node_key(m));
            }
        }
        let forgotten = self.identity.forget_node(node);
        if self.identity_budget.is_some() {
            self.gone_ids.extend(forgotten.iter().cloned());
        }
        out.push(Output::Expired {
            customer_key: key,
            last_touch: journey.last_touch(),
            identifiers: forgotten.len(),
        });
    }

    fn schedule(&mut self, node: u32, journey: &mut Journey) {
        // At most one live entry per journey: a later due date leaves the
        // entry in place (it is re-checked when it pops), an earlier one adds
        // an entry and the old one goes stale.
        let next = [
            journey.compute_next_due(&self.models),
            self.expiry_due(journey),
        ];
        let Some(due) = next.into_iter().flatten().min() else {
            return;
        };
        if journey.next_due.is_none_or(|scheduled| due < scheduled) {
            journey.next_due = Some(due);
            self.timers.insert(due, node);
        }
    }

    /// The customer key (`type:value`) an event belongs to now, without
    /// changing anything: the resolve step of a scaled-out topology. The
    /// event is checked as [`Engine::submit`] would check it.
    pub fn route_key(&self, event: &Event) -> Result<String, EventError> {
        event.validate()?;
        let (usable, blocked) = self.identity.usable(&event.identifiers);
        match self.identity.resolve(&usable) {
            Some(key) => Ok(key.key()),
            None => {
                let list: Vec<String> = blocked.iter().map(Identifier::key).collect();
                Err(EventError::AllIdentifiersBlocked(list.join(", ")))
            }
        }
    }

    /// Applies the identity links of an event read from the identity log
    /// (written by whichever worker resolved it): its identifiers are linked
    /// and journeys held here whose customers joined are merged. The event is
    /// not applied as a touchpoint (its owner does that) and links are not
    /// reported again.
    pub fn link_event(&mut self, event: &Event, out: &mut Vec<Output>) {
        let (usable, _) = self.identity.usable(&event.identifiers);
        if usable.len() < 2 {
            return;
        }
        self.page_in(&usable);
        let mut links = std::mem::take(&mut self.links);
        self.identity.link_nodes(&usable, &mut links);
        self.merge_linked(event, &links, out);
        self.links = links;
    }

    /// Merges the journeys of the customers a link of `event` joined.
    fn merge_linked(&mut self, event: &Event, links: &NodeLinks, out: &mut Vec<Output>) {
        if links.absorbed.is_empty() {
            return;
        }
        let trigger = |names: &mut Names| TriggerRef {
            event_id: event.event_id.clone(),
            channel: names.get(&event.channel),
            event_type: names.get(&event.event_type),
        };
        self.merge(
            links.key,
            &links.absorbed,
            (event.time, &event.event_id),
            trigger,
            out,
        );
    }

    /// Keys of journeys changed since the last take of changes and
    /// still held (the candidates for forwarding to another owner).
    pub fn changed_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .dirty
            .iter()
            .filter(|&n| self.journeys.holds(n))
            .map(|n| self.identity.node_key(n))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Removes a journey to hand it to the worker that owns its key now (its
    /// deletion is part of the next [`Engine::take_changes`]).
    pub fn export(&mut self, key: &str) -> Option<Journey> {
        self.page_in_key(key);
        let node = self.identity.node_of_key(key)?;
        let mut journey = self.take_journey(node)?;
        self.journey_deleted(node, key, &mut journey);
        Some(*journey)
    }

    /// Merges a journey forwarded by another worker. `from` is the key it was
    /// held under, `to` the key its customer has now (the two are linked here
    /// too, whether or not the identity log has delivered that link yet). The
    /// merge is reported like any other, triggered by the journey's latest
    /// touchpoint.
    pub fn import(
        &mut self,
        from: Identifier,
        to: Identifier,
        journey: Journey,
        out: &mut Vec<Output>,
    ) {
        let (usable, _) = self.identity.usable_owned(vec![to, from.clone()]);
        self.page_in(&usable);
        let outcome = self.identity.link(&usable);
        let from_key = from.key();
        // Held under its old key until the merge below moves it (a key a
        // guard kept out of the link is a customer of its own).
        let from_node = self.identity.key_node(&from_key);
        let (mut journey, combined) = match self.take_journey(from_node) {
            Some(mut local) => {
                absorb(&mut local, journey);
                (local, true)
            }
            None => (Box::new(journey), false),
        };
        let last = journey.touchpoints.last().map(|t| (t.time, trigger_of(t)));
        if let (true, Some((_, trigger))) = (combined, &last) {
            // A journey already held under the same key: the union is replayed.
            self.recompute(from_node, &mut journey, Cause::Merge, trigger.clone(), out);
        }
        journey.next_due = None;
        self.schedule(from_node, &mut journey);
        self.journeys.insert(from_node, journey);
        self.dirty.insert(from_node);
        if let Some((time, trigger)) = last.filter(|_| outcome.key != from) {
            let event_id = trigger.event_id.clone();
            if let Some(key) = self.identity.node(&outcome.key) {
                self.merge(key, &[from_node], (time, &event_id), |_| trigger, out);
            }
        }
    }

    /// Links, merges and applies an event whose identifiers are already the
    /// usable ones (see [`Engine::submit`]).
    /// The event's strings are taken out of it (it is not moved whole: a
    /// held event stays in its box).
    fn process(&mut self, event: &mut Event, out: &mut Vec<Output>) {
        let node = match self.identity.settled_node(&event.identifiers) {
            Some(node) => node,
            None => {
                // Only customers just read back can have settled the event.
                let settled = if self.page_in(&event.identifiers) {
                    self.identity.settled_node(&event.identifiers)
                } else {
                    None
                };
                match settled {
                    Some(node) => node,
                    None => self.link(event, out),
                }
            }
        };
        let (mut journey, mut marked) = match self.take_journey_marked(node) {
            Some(taken) => taken,
            None => (Box::new(Journey::new(&self.models)), false),
        };
        if journey.contains(event.time, &event.event_id) {
            self.stats.duplicates += 1;
            out.push(Output::Duplicate {
                event_id: std::mem::take(&mut event.event_id),
                customer_key: self.identity.node_key(node),
            });
        } else {
            self.apply(node, &mut journey, event, out);
            if !marked {
                self.dirty.insert(node);
                marked = true;
            }
        }
        self.journeys.insert_marked(node, journey, marked);
    }

    /// Links the identifiers of an event (some new, or of several customers),
    /// reports the links and refusals, merges the journeys of the customers
    /// it joined and returns the resulting customer's key node.
    /// The event's identifiers are moved into the outputs that report them
    /// (nothing needs them after linking).
    fn link(&mut self, event: &mut Event, out: &mut Vec<Output>) -> u32 {
        let mut links = std::mem::take(&mut self.links);
        self.identity.link_nodes(&event.identifiers, &mut links);
        let (anchor, others) = event
            .identifiers
            .split_first_mut()
            .expect("an event has an identifier");
        // Each index after the first is linked or rejected once.
        let mut take = |i: usize| {
            let id = &mut others[i - 1];
            Identifier {
                kind: id.kind.clone(),
                value: std::mem::take(&mut id.value),
            }
        };
        for &i in &links.linked {
            self.stats.links += 1;
            out.push(Output::Link {
                event_id: event.event_id.clone(),
                time: event.time,
                a: anchor.clone(),
                b: take(i),
            });
        }
        for &(i, reason) in &links.rejected {
            self.stats.rejected_links += 1;
            out.push(Output::Rejected {
                event_id: event.event_id.clone(),
                time: event.time,
                rejection: Rejection {
                    anchor: anchor.clone(),
                    other: take(i),
                    reason,
                },
            });
        }
        let key = links.key;
        self.merge_linked(event, &links, out);
        self.links = links;
        key
    }

    /// Applies a new touchpoint to its customer's journey: in order, or by a
    /// replay when it sorts before the journey's latest.
    fn apply(
        &mut self,
        node: u32,
        journey: &mut Journey,
        event: &mut Event,
        out: &mut Vec<Output>,
    ) {
        self.stats.applied += 1;
        let tp = event.take_touchpoint_named(&mut self.journeys.names);
        if journey.is_in_order(&tp) {
            let mut changes = std::mem::take(&mut self.changes);
            // Timers due before the touchpoint fire first, and are reported
            // with the journey as it was then: the same transitions as when
            // the watermark fires them before the touchpoint arrives.
            // `next_due` is never later than the journey's next timer (see
            // `Engine::schedule`), so most touchpoints skip the timers.
            let timers_due = journey.next_due.is_some_and(|due| due < tp.time);
            if timers_due {
                journey.fire_timers(&self.models, tp.time - 1, &mut changes);
                for (model, change, _) in changes.drain(..) {
                    self.emit(node, journey, model, change, Cause::Timer, None, out);
                }
            }
            journey.apply_in_order(&self.models, tp, timers_due, &mut changes);
            for (model, change, timer) in changes.drain(..) {
                // Each transition gets its own trigger (most touchpoints
                // have one transition, if any: nothing is built twice).
                let (cause, trig) = if timer {
                    (Cause::Timer, None)
                } else {
                    let tp = journey.touchpoints.last().expect("just applied");
                    (Cause::Touchpoint, Some(trigger_of(tp)))
                };
                self.emit(node, journey, model, change, cause, trig, out);
            }
            self.changes = changes;
        } else {
            journey.count(&tp);
            let at = journey
                .touchpoints
                .partition_point(|t| t.order_key() < tp.order_key());
            journey.touchpoints.insert(at, tp);
            let trig = trigger_of(&journey.touchpoints[at]);
            self.recompute(node, journey, Cause::LateEvent, trig, out);
        }
        let min_time = self
            .watermark
            .saturating_sub(self.config.max_touchpoint_age_ms);
        journey.trim(&self.models, self.config.max_touchpoints, min_time);
        self.schedule(node, journey);
    }

    /// Replays a journey and emits one transition per model whose stage differs
    /// from the last emitted one.
    fn recompute(
        &mut self,
        node: u32,
        journey: &mut Journey,
        cause: Cause,
        trigger: TriggerRef,
        out: &mut Vec<Output>,
    ) {
        let replayed = journey.replay(&self.models, self.watermark);
        // The stage a model moves to, if it differs from the last emitted.
        let moved = |state: &ModelState, emitted: &Emitted| {
            state.stage.filter(|&s| Some(s) != emitted.stage)
        };
        // The last transition takes the trigger, the others a copy.
        let mut left = replayed
            .iter()
            .zip(&journey.emitted)
            .filter(|(state, emitted)| moved(state, emitted).is_some())
            .count();
        let mut trigger = Some(trigger);
        for (i, state) in replayed.into_iter().enumerate() {
            let emitted = &journey.emitted[i];
            if let Some(to) = moved(&state, emitted) {
                let change = Change {
                    from: emitted.stage,
                    to,
                    at: state.entered_at,
                    previous_entered: emitted.at,
                };
                journey.models[i] = state;
                left -= 1;
                let trig = if left == 0 {
                    trigger.take()
                } else {
                    trigger.clone()
                };
                self.emit(node, journey, i, change, cause, trig, out);
            } else {
                journey.models[i] = state;
            }
        }
    }

    /// Merges the journeys of the customers whose key nodes were `absorbed`
    /// into the customer of key node `key`. The trigger of the merge's
    /// transitions is made only if there are any (not for a key change).
    fn merge(
        &mut self,
        key: u32,
        absorbed: &[u32],
        (time, event_id): (Millis, &str),
        trigger: impl FnOnce(&mut Names) -> TriggerRef,
        out: &mut Vec<Output>,
    ) {
        let mut parts: Vec<(u32, String, Box<Journey>)> = absorbed
            .iter()
            .filter_map(|&a| {
                let j = self.take_journey(a)?;
                Some((a, self.identity.node_key(a), j))
            })
            .collect();
        if parts.is_empty() {
            return;
        }
        for (a, absorbed_key, j) in &mut parts {
            self.journey_deleted(*a, absorbed_key, j);
        }
        let parts_len = parts.len();
        let mut key_str = self.identity.node_key(key);
        let mut identifiers = self.identity.members_of_node(key);
        for (i, (_, absorbed_key, j)) in parts.iter_mut().enumerate() {
            self.stats.merges += 1;
            // The last merge output takes the key and the list, the others
            // a copy; each takes its absorbed key (not needed after).
            let (surviving_key, identifiers) = if i + 1 == parts_len {
                (
                    std::mem::take(&mut key_str),
                    std::mem::take(&mut identifiers),
                )
            } else {
                (key_str.clone(), identifiers.clone())
            };
            out.push(Output::Merge(ProfileMerge {
                surviving_key,
                absorbed_key: std::mem::take(absorbed_key),
                identifiers,
                time,
                trigger_event_id: event_id.to_string(),
                touchpoints_absorbed: j.touch_count,
            }));
        }
        parts.sort_by(|a, b| self.identity.compare_nodes(a.0, b.0));
        // The journey already under the new key survives; otherwise the one
        // with the best old key (a pure key change moves it unchanged).
        let mut survivor = match self.take_journey(key) {
            Some(j) => j,
            None => parts.remove(0).2,
        };
        let moved_only = parts.is_empty();
        for (_, _, other) in parts {
            absorb(&mut survivor, *other);
        }
        if !moved_only {
            let trigger = trigger(&mut self.journeys.names);
            self.recompute(key, &mut survivor, Cause::Merge, trigger, out);
        }
        survivor.next_due = None;
        self.schedule(key, &mut survivor);
        self.dirty.insert(key);
        self.journeys.insert(key, survivor);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        node: u32,
        journey: &mut Journey,
        model: usize,
        change: Change,
        cause: Cause,
        trigger: Option<TriggerRef>,
        out: &mut Vec<Output>,
    ) {
        let m = &self.models[model];
        let emitted = &mut journey.emitted[model];
        emitted.sequence += 1;
        emitted.stage = Some(change.to);
        emitted.at = change.at;
        self.stats.transitions += 1;
        let identifiers = self.identity.members_of_node(node);
        out.push(Output::Transition(Transition {
            customer_key: self.identity.node_key(node),
            identifiers,
            model: m.shared_name().clone(),
            from: change.from.map(|s| m.shared_stage(s).clone()),
            to: m.shared_stage(change.to).clone(),
            cause,
            time: change.at,
            trigger,
            previous_stage_ms: change
                .from
                .map(|_| change.at.saturating_sub(change.previous_entered).max(0)),
            sequence: emitted.sequence,
            touchpoints: journey.touch_count,
            channel_counts: journey.channel_counts.clone(),
        }));
    }
}

fn trigger_of(tp: &crate::Touchpoint) -> TriggerRef {
    TriggerRef {
        event_id: String::from(&*tp.event_id),
        channel: tp.channel.clone(),
        event_type: tp.event_type.clone(),
    }
}

/// Unites `other` into `survivor`: touchpoints deduplicated by (time, event id),
/// counters summed, sequences kept unique.
fn absorb(survivor: &mut Journey, other: Journey) {
    for (s, e) in survivor.emitted.iter_mut().zip(&other.emitted) {
        s.sequence = s.sequence.max(e.sequence);
    }
    survivor.touch_count += other.touch_count;
    let counts = Arc::make_mut(&mut survivor.channel_counts);
    counts.add_all(&other.channel_counts);
    for tp in other.touchpoints {
        match survivor
            .touchpoints
            .binary_search_by(|t| t.order_key().cmp(&tp.order_key()))
        {
            Ok(_) => {
                survivor.touch_count -= 1;
                counts.remove_one(&tp.channel);
            }
            Err(at) => survivor.touchpoints.insert(at, tp),
        }
    }
    survivor.base_last_touch = survivor.base_last_touch.max(other.base_last_touch);
}
