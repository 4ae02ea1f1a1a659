//! The engine's journeys: all held in memory, or, with a backing (the
//! worker's state store), a cache of recently used journeys over it, bounded
//! by an estimate of their size.
//!
//! The cache never does IO itself: a miss asks the [`JourneyBacking`] the
//! caller provides. Journeys changed since the last persisted commit are
//! never evicted, and a key deleted since then is never read back from the
//! backing (which still holds the old journey until the commit is written).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::journey::Journey;

/// Where journeys not held in memory are read from: the state as of the last
/// commit written locally.
pub trait JourneyBacking: Send {
    /// The stored journey of a customer key, if any. A read that fails is
    /// reported as none here and by [`JourneyBacking::take_error`], and the
    /// caller must not commit what the engine did since.
    fn load(&mut self, key: &str) -> Option<Journey>;

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

/// Estimated bytes of a journey held under `key`: constant time (a
/// per-touchpoint average rather than a walk over its strings), as it runs at
/// every change of a journey.
fn estimate(key: &str, j: &Journey) -> usize {
    /// A touchpoint: the struct, its event id, channel and type, a property.
    const TOUCHPOINT: usize = std::mem::size_of::<crate::Touchpoint>() + 96;
    // The map entry, the key and the journey's own fields.
    128 + key.len()
        + std::mem::size_of::<Journey>()
        + j.touchpoints.len() * TOUCHPOINT
        + (j.models.len() + j.base.len() + j.emitted.len()) * 64
        + j.channel_counts.len() * 56
}

/// Journeys by customer key (see the module documentation).
pub(crate) struct Journeys {
    held: HashMap<String, Held>,
    backing: Option<Box<dyn JourneyBacking>>,
    /// Keys deleted in changes already taken but not yet written to the
    /// backing (cleared by [`Journeys::persisted`]).
    gone: HashSet<String>,
    tick: u64,
    stats: CacheStats,
}

impl Journeys {
    pub(crate) fn new() -> Self {
        Journeys {
            held: HashMap::default(),
            backing: None,
            gone: HashSet::default(),
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    pub(crate) fn set_backing(&mut self, backing: Box<dyn JourneyBacking>) {
        self.backing = Some(backing);
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
    pub(crate) fn get(&self, key: &str) -> Option<&Journey> {
        self.held.get(key).map(|h| &*h.journey)
    }

    /// A held journey, its mark cleared: the engine's set of changed keys
    /// no longer holds its key.
    pub(crate) fn unmark(&mut self, key: &str) -> Option<&Journey> {
        self.held.get_mut(key).map(|h| {
            h.marked = false;
            &*h.journey
        })
    }

    /// Whether a journey is held in memory.
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Journey)> {
        self.held.iter().map(|(k, h)| (k, &*h.journey))
    }

    /// Takes a journey out (to change it, or for good): from memory, else
    /// from the backing unless the key was deleted since the last written
    /// commit: `dirty` (changed since the last take of changes) and not held,
    /// or deleted in a take not yet written (see [`Journeys::deleted`]).
    pub(crate) fn remove(&mut self, key: &str, dirty: &HashSet<String>) -> Option<Box<Journey>> {
        self.remove_keyed(key, dirty).map(|(_, j, _)| j)
    }

    /// [`Journeys::remove`], with the key as an owned string to put the
    /// journey back under (the map's own when it was held: no allocation)
    /// and whether it was marked (see [`Journeys::insert_marked`]).
    pub(crate) fn remove_keyed(
        &mut self,
        key: &str,
        dirty: &HashSet<String>,
    ) -> Option<(String, Box<Journey>, bool)> {
        if let Some((owned, h)) = self.held.remove_entry(key) {
            self.stats.bytes -= h.bytes;
            return Some((owned, h.journey, h.marked));
        }
        let backing = self.backing.as_mut()?;
        if dirty.contains(key) || self.gone.contains(key) {
            return None;
        }
        match backing.load(key) {
            Some(j) => {
                self.stats.loads += 1;
                Some((key.to_owned(), Box::new(j), false))
            }
            None => {
                self.stats.absent += 1;
                None
            }
        }
    }

    /// A deletion was taken as a change: until it is written, the backing
    /// still has the journey, which must not be read back.
    pub(crate) fn deleted(&mut self, key: &str) {
        if self.backing.is_some() {
            self.gone.insert(key.to_string());
        }
    }

    /// Puts a journey (back) under `key`.
    pub(crate) fn insert(&mut self, key: String, journey: Box<Journey>) {
        self.insert_marked(key, journey, false);
    }

    /// [`Journeys::insert`], noting whether the key is in the engine's set
    /// of changed keys (only say true when it is: the mark stands for it).
    pub(crate) fn insert_marked(&mut self, key: String, journey: Box<Journey>, marked: bool) {
        self.tick += 1;
        // Sizes only matter to eviction, which needs a backing.
        let bytes = if self.backing.is_some() {
            estimate(&key, &journey)
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
        if let Some(old) = self.held.insert(key, held) {
            self.stats.bytes -= old.bytes;
        }
    }

    /// Everything up to now is written to the backing: deleted keys may be
    /// looked up there again, and journeys not in `dirty` may be dropped
    /// from memory, least recently used first, until the estimate is at most
    /// `budget` bytes (down to three quarters of it, so that eviction runs
    /// now and then rather than at every commit). Without a backing nothing
    /// is dropped.
    pub(crate) fn persisted(&mut self, budget: usize, dirty: &HashSet<String>) {
        if self.backing.is_none() {
            return;
        }
        self.gone.clear();
        if self.stats.bytes <= budget {
            return;
        }
        let target = budget / 4 * 3;
        let mut candidates: Vec<(u64, &String)> = self
            .held
            .iter()
            .filter(|(k, _)| !dirty.contains(*k))
            .map(|(k, h)| (h.used, k))
            .collect();
        candidates.sort_unstable();
        let mut bytes = self.stats.bytes;
        let mut drop = Vec::new();
        for (_, key) in candidates {
            if bytes <= target {
                break;
            }
            bytes -= self.held[key].bytes;
            drop.push(key.clone());
        }
        for key in drop {
            if let Some(h) = self.held.remove(&key) {
                self.stats.bytes -= h.bytes;
                self.stats.evictions += 1;
            }
        }
    }
}
