//! `journey-store`: the worker's journeys, identity graph and engine state in
//! RocksDB, committed atomically with the input offsets they correspond to.
//!
//! The directory is a cache of Kafka: every write is also returned as a
//! changelog record (tombstones for deletions) for a compacted topic, and
//! [`Store::apply_changelog`] rebuilds an identical store from those records.
//! RocksDB types never leave this crate; the engine state types come from
//! `journey-core`.

mod backing;
mod codec;
mod error;
mod store;

pub use backing::StoreBacking;
pub use codec::{FORMAT_VERSION, decode, encode};
pub use error::{Error, Result};
pub use store::{
    ChangelogRecord, Loaded, Offsets, Opened, Prepared, Rows, Store, StoreOptions, StoreStats,
};
