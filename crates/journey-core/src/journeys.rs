//! The engine's journeys: all held in memory, or, with a backing (the
//! worker's state store), a cache of recently used journeys over it, bounded
//! by an estimate of their size.
//!
//! The cache never does IO itself: a miss asks the [`JourneyBacking`] the
//! caller provides. Journeys changed since the last persisted commit are
//! never evicted, and a key deleted since then is never read back from the
//! backing (which still holds the old journey until the commit is written).
//!
//! Journeys are held under the identity graph's node number of their
//! customer key, not the key string: a lookup hashes a number and compares
//! numbers, with no key string to read (the key is written out only when a
//! change is reported, a transition names it or the backing is asked).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::journey::Journey;
use crate::names::Names;

/// Where journeys not held in memory are read from: the state as of the last
/// commit written locally.
pub trait JourneyBacking: Send {
    /// The stored journey of a customer key, if any. A read that fails is
    /// reported as none here and by [`JourneyBacking::take_error`], and the
    /// caller must not commit what the engine did since.
    fn load(&mut self, key: &str) -> Option<Journey>;

    /// All identifiers of the stored customer `id` belongs to (`id` among
    /// them), if it is known: what an engine paging its identity graph
    /// (see `Engine::restore_paged`) reads when it meets an identifier it
    /// does not hold. A failed read is reported as for
    /// [`JourneyBacking::load`]. By default no customer is known.
    fn customer(&mut self, id: &crate::Identifier) -> Option<Vec<crate::Identifier>> {
        let _ = id;
        None
    }

    /// The stored timer index's rows (see `StateChanges::timers`) due after
    /// `after` and at or before `until`, in due order: what an engine paging
    /// its identity graph reads as the watermark moves, instead of holding
    /// a timer for every customer. A failed read is reported as for
    /// [`JourneyBacking::load`]. By default there are none.
    fn due_timers(
        &mut self,
        after: crate::Millis,
        until: crate::Millis,
    ) -> Vec<(crate::Millis, String)> {
        let _ = (after, until);
        Vec::new()
    }

    /// The first read failure since the last call, if any.
    fn take_error(&mut self) -> Option<String>;
}

/// Counters of the journey cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Journeys held in memory.
    pub resident: usize,
    /// Estimated bytes of the journeys held.
    pub bytes: usize,
    /// Journeys read from the backing (misses that found one).
    pub loads: u64,
    /// Lookups the backing did not know (new customers).
    pub absent: u64,
    /// Journeys dropped from memory.
    pub evictions: u64,
    /// Customers (identifier sets) read from the backing, when the engine
    /// pages its identity graph.
    pub customer_loads: u64,
    /// Customers dropped from memory, when the engine pages its identity
    /// graph.
    pub customer_evictions: u64,
}

/// A journey in memory. Boxed: the map's slots stay small (better locality
/// when probing) and a journey taken out and put back moves a pointer.
struct Held {
    journey: Box<Journey>,
    used: u64,
    bytes: usize,
    /// Known to be in the engine's set of changed keys, so marking it again
    /// needs no lookup there (false may still be in it; true always is).
    marked: bool,
}

/// Estimated bytes of a journey held in memory: constant time (a
/// per-touchpoint average rather than a walk over its strings), as it runs
/// at every change of a journey.
fn estimate(j: &Journey) -> usize {
    /// A touchpoint: the struct, its event id, a property.
    const TOUCHPOINT: usize = std::mem::size_of::<crate::Touchpoint>() + 48;
    // The map entry and the journey's own fields.
    96 + std::mem::size_of::<Journey>()
        + j.touchpoints.len() * TOUCHPOINT
        + (j.models.len() + j.base.len() + j.emitted.len()) * 64
        + j.channel_counts.len() * 48
}

/// Journeys by customer, each under the identity graph's node number of its
/// customer key (see the module documentation).
pub(crate) struct Journeys {
    held: HashMap<u32, Held>,
    backing: Option<Box<dyn JourneyBacking>>,
    /// Keys whose journey was deleted since the last take of changes.
    deleted: HashSet<String>,
    /// Keys deleted in changes already taken but not yet written to the
    /// backing (cleared by [`Journeys::persisted`]).
    gone: HashSet<String>,
    tick: u64,
    stats: CacheStats,
    /// The names journeys share (see [`Names`]).
    pub(crate) names: Names,
}

impl Journeys {
    pub(crate) fn new() -> Self {
        Journeys {
            held: HashMap::default(),
            backing: None,
            deleted: HashSet::default(),
            gone: HashSet::default(),
            tick: 0,
            stats: CacheStats::default(),
            names: Names::default(),
        }
    }

    pub(crate) fn set_backing(&mut self, backing: Box<dyn JourneyBacking>) {
        self.backing = Some(backing);
    }

    /// The stored customer of an identifier (see [`JourneyBacking::customer`]).
    pub(crate) fn load_customer(
        &mut self,
        id: &crate::Identifier,
    ) -> Option<Vec<crate::Identifier>> {
        let members = self.backing.as_mut()?.customer(id)?;
        self.stats.customer_loads += 1;
        Some(members)
    }

    /// The backing's timer rows due in `(after, until]` (see
    /// [`JourneyBacking::due_timers`]); none without a backing.
    pub(crate) fn due_timers(
        &mut self,
        after: crate::Millis,
        until: crate::Millis,
    ) -> Vec<(crate::Millis, String)> {
        self.backing
            .as_mut()
            .map(|b| b.due_timers(after, until))
            .unwrap_or_default()
    }

    /// Counts customers dropped from memory.
    pub(crate) fn customers_evicted(&mut self, n: usize) {
        self.stats.customer_evictions += n as u64;
    }

    pub(crate) fn take_error(&mut self) -> Option<String> {
        self.backing.as_mut().and_then(|b| b.take_error())
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            resident: self.held.len(),
            ..self.stats
        }
    }

    /// A held journey (no lookup in the backing).
    pub(crate) fn get(&self, node: u32) -> Option<&Journey> {
        self.held.get(&node).map(|h| &*h.journey)
    }

    /// A held journey, to change in place (no lookup in the backing).
    pub(crate) fn get_mut(&mut self, node: u32) -> Option<&mut Journey> {
        self.held.get_mut(&node).map(|h| &mut *h.journey)
    }

    /// A held journey, its mark cleared: the engine's set of changed
    /// customers no longer holds it.
    pub(crate) fn unmark(&mut self, node: u32) -> Option<&Journey> {
        self.held.get_mut(&node).map(|h| {
            h.marked = false;
            &*h.journey
        })
    }

    /// Whether a journey is held in memory.
    pub(crate) fn holds(&self, node: u32) -> bool {
        self.held.contains_key(&node)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Journey)> {
        self.held.iter().map(|(&n, h)| (n, &*h.journey))
    }

    /// Takes the journey of the customer keyed by `node` out (to change it,
    /// or for good), and whether it was marked (see
    /// [`Journeys::insert_marked`]): from memory, else from the backing,
    /// asked for the key `key` writes (none: there is no such customer),
    /// unless that key's journey was deleted since the last written commit
    /// (see [`Journeys::deleted`]).
    pub(crate) fn remove(
        &mut self,
        node: u32,
        key: impl FnOnce() -> Option<String>,
    ) -> Option<(Box<Journey>, bool)> {
        if let Some(h) = self.held.remove(&node) {
            self.stats.bytes -= h.bytes;
            return Some((h.journey, h.marked));
        }
        let backing = self.backing.as_mut()?;
        let key = key()?;
        if self.deleted.contains(&key) || self.gone.contains(&key) {
            return None;
        }
        match backing.load(&key) {
            Some(mut j) => {
                self.stats.loads += 1;
                j.share_names(&mut self.names);
                j.stored_due.0 = j.next_due;
                Some((Box::new(j), false))
            }
            None => {
                self.stats.absent += 1;
                None
            }
        }
    }

    /// The journey under `key` was deleted: until that is written, the
    /// backing still has it, and it must not be read back.
    pub(crate) fn deleted(&mut self, key: &str) {
        if self.backing.is_some() && !self.deleted.contains(key) {
            self.deleted.insert(key.to_string());
        }
    }

    /// The changes made so far were taken (to be written).
    pub(crate) fn taken(&mut self) {
        self.gone.extend(self.deleted.drain());
    }

    /// Puts a journey (back) under `node`.
    pub(crate) fn insert(&mut self, node: u32, journey: Box<Journey>) {
        self.insert_marked(node, journey, false);
    }

    /// [`Journeys::insert`], noting whether the node is in the engine's set
    /// of changed customers (only say true when it is: the mark stands for it).
    pub(crate) fn insert_marked(&mut self, node: u32, journey: Box<Journey>, marked: bool) {
        self.tick += 1;
        // Sizes only matter to eviction, which needs a backing.
        let bytes = if self.backing.is_some() {
            estimate(&journey)
        } else {
            0
        };
        self.stats.bytes += bytes;
        let held = Held {
            journey,
            used: self.tick,
            bytes,
            marked,
        };
        if let Some(old) = self.held.insert(node, held) {
            self.stats.bytes -= old.bytes;
        }
    }

    /// Everything taken so far is written to the backing: keys deleted
    /// before that may be looked up there again, and journeys not in `dirty`
    /// may be dropped from memory, least recently used first, until the
    /// estimate is at most `budget` bytes (down to three quarters of it, so
    /// that eviction runs now and then rather than at every commit). Without
    /// a backing nothing is dropped, nor a journey whose timer is due at or
    /// before `overdue` (it fires from memory when the watermark next
    /// moves). Returns the nodes dropped, with their journey's next timer.
    pub(crate) fn persisted(
        &mut self,
        budget: usize,
        dirty: &crate::node_set::NodeSet,
        overdue: crate::Millis,
    ) -> Vec<(u32, Option<crate::Millis>)> {
        if self.backing.is_none() {
            return Vec::new();
        }
        self.gone.clear();
        if self.stats.bytes <= budget {
            return Vec::new();
        }
        let target = budget / 4 * 3;
        let mut candidates: Vec<(u64, u32)> = self
            .held
            .iter()
            .filter(|(n, h)| {
                !dirty.contains(**n) && h.journey.next_due.is_none_or(|due| due > overdue)
            })
            .map(|(&n, h)| (h.used, n))
            .collect();
        candidates.sort_unstable();
        let mut bytes = self.stats.bytes;
        let mut drop = Vec::new();
        for (_, node) in candidates {
            if bytes <= target {
                break;
            }
            bytes -= self.held[&node].bytes;
            drop.push(node);
        }
        drop.into_iter()
            .filter_map(|node| {
                let h = self.held.remove(&node)?;
                self.stats.bytes -= h.bytes;
                self.stats.evictions += 1;
                Some((node, h.journey.next_due))
            })
            .collect()
    }
}
