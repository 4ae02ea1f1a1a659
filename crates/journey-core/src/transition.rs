use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{ChannelCounts, Identifier, Millis, Name};

/// What caused a stage transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An in-order touchpoint.
    Touchpoint,
    /// Two journeys merged and the recomputed stage differs.
    Merge,
    /// A touchpoint arrived behind the journey's history and the replay changed the stage.
    LateEvent,
    /// An inactivity timer fired.
    Timer,
}

impl Cause {
    /// The schema's symbol for this cause.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Touchpoint => "touchpoint",
            Cause::Merge => "merge",
            Cause::LateEvent => "late_event",
            Cause::Timer => "timer",
        }
    }
}

/// The touchpoint that triggered a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRef {
    /// Event id.
    pub event_id: String,
    /// Channel.
    pub channel: Name,
    /// Event type.
    pub event_type: Name,
}

/// A journey moved from one stage (or none) to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Customer key (`type:value`).
    pub customer_key: String,
    /// The customer's identifiers when the transition happened (sorted).
    pub identifiers: Vec<Identifier>,
    /// Stage model name.
    pub model: Name,
    /// Previous stage, `None` for the first stage.
    pub from: Option<Name>,
    /// New stage.
    pub to: Name,
    /// Cause.
    pub cause: Cause,
    /// Event time of the transition.
    pub time: Millis,
    /// Triggering touchpoint (none for timers).
    pub trigger: Option<TriggerRef>,
    /// Time spent in the previous stage, milliseconds (none when `from` is none).
    pub previous_stage_ms: Option<Millis>,
    /// Per-customer, per-model sequence number, starting at 1.
    pub sequence: u64,
    /// Touchpoints of the journey so far.
    pub touchpoints: u64,
    /// Touchpoints per channel. Shared with the journey: it copies them only
    /// if it counts another touchpoint while a transition still holds them.
    pub channel_counts: Arc<ChannelCounts>,
}

impl Transition {
    /// Deterministic id: a consumer recognises a repeat by it.
    pub fn id(&self) -> String {
        format!("{}|{}|{}", self.customer_key, self.model, self.sequence)
    }
}

/// Two customers turned out to be one (or a customer's key changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileMerge {
    /// Key that survives.
    pub surviving_key: String,
    /// Key that no longer exists; its journey is now part of the survivor's.
    pub absorbed_key: String,
    /// Identifiers of the merged customer (sorted).
    pub identifiers: Vec<Identifier>,
    /// Event time of the event that linked them.
    pub time: Millis,
    /// Id of that event.
    pub trigger_event_id: String,
    /// Touchpoints brought in by the absorbed journey.
    pub touchpoints_absorbed: u64,
}
