//! `journey-core`: the pure domain of journey stitching.
//!
//! Identity stitching (a union-find graph with guards), stage models loaded from
//! data, and the [`Engine`] that turns interaction events into stage transitions,
//! profile merges and identity links.
//!
//! This crate must stay free of IO: no tokio, rdkafka, RocksDB, Avro or clock
//! reads. Time always comes in as an argument (milliseconds since the Unix epoch),
//! so every result is a deterministic function of the inputs.

mod counts;
mod engine;
mod error;
mod event;
mod identifier;
mod identity;
mod journey;
mod journeys;
mod model;
mod names;
mod node_set;
mod nodes;
mod timers;
mod transition;

pub use counts::ChannelCounts;
pub use engine::{
    ChangeRef, Engine, EngineConfig, EngineMeta, EngineStats, Output, StateChanges, Submitted,
};
pub use error::{Error, EventError, ModelError, Result};
pub use event::{Event, Properties, Touchpoint};
pub use identifier::{Identifier, Priority};
pub use identity::{Guards, IdentityChanges, IdentityGraph, LinkOutcome, RejectReason, Rejection};
pub use journey::{Emitted, Journey, ModelState};
pub use journeys::{CacheStats, JourneyBacking};
pub use model::{StageModel, builtin_models};
pub use names::Name;
pub use transition::{Cause, ProfileMerge, Transition, TriggerRef};

/// Milliseconds since the Unix epoch (event time or wall-clock time, as named).
pub type Millis = i64;

/// One day in milliseconds.
pub const DAY_MS: Millis = 86_400_000;
