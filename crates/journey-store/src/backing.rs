//! The store as the engine's journey backing: journeys (and, for a paging
//! engine, customers) not held in memory are read from RocksDB on first use.

use std::sync::Arc;

use journey_core::{Identifier, Journey, JourneyBacking, Millis};

use crate::Store;

/// Reads journeys from a shared [`Store`] for an engine restored with
/// `Engine::restore_backed`. A failed read is kept for the engine to report.
pub struct StoreBacking {
    store: Arc<Store>,
    error: Option<String>,
}

impl StoreBacking {
    /// A backing over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        StoreBacking { store, error: None }
    }
}

impl JourneyBacking for StoreBacking {
    fn load(&mut self, key: &str) -> Option<Journey> {
        match self.store.journey(key) {
            Ok(j) => j,
            Err(e) => {
                self.error.get_or_insert_with(|| format!("{key}: {e}"));
                None
            }
        }
    }

    fn customer(&mut self, id: &Identifier) -> Option<Vec<Identifier>> {
        match self.store.customer_of(id) {
            Ok(members) => members,
            Err(e) => {
                self.error.get_or_insert_with(|| format!("{id}: {e}"));
                None
            }
        }
    }

    fn due_timers(&mut self, after: Millis, until: Millis) -> Vec<(Millis, String)> {
        match self.store.due_timers(after, until) {
            Ok(due) => due,
            Err(e) => {
                self.error.get_or_insert_with(|| format!("timers: {e}"));
                Vec::new()
            }
        }
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}
