use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::Names;
use crate::{EventError, Identifier, Millis, Name};

/// One interaction event, as the core sees it (decoded and validated by the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Globally unique id of the event; duplicates are recognised by it.
    pub event_id: String,
    /// Event time, milliseconds since the Unix epoch.
    pub time: Millis,
    /// Channel (`web`, `store`, ... or any other name).
    pub channel: String,
    /// Event type (`page_view`, `purchase`, ...).
    pub event_type: String,
    /// Whether the touchpoint happened offline.
    #[serde(default)]
    pub offline: bool,
    /// Whether the touchpoint is direct (the brand's own) rather than indirect.
    #[serde(default = "yes")]
    pub direct: bool,
    /// Identifiers seen on the event; all of them are linked to one person.
    pub identifiers: Vec<Identifier>,
    /// Monetary value, if any.
    #[serde(default)]
    pub value: Option<f64>,
    /// Currency of `value`.
    #[serde(default)]
    pub currency: Option<String>,
    /// Campaign, if any.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Free properties (used by rule predicates, e.g. `rating >= 4`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Event {
    /// Checks what the core needs: an id, a type and at least one identifier.
    pub fn validate(&self) -> Result<(), EventError> {
        if crate::identifier::is_blank(&self.event_id) {
            return Err(EventError::EmptyEventId);
        }
        if crate::identifier::is_blank(&self.event_type) {
            return Err(EventError::EmptyEventType);
        }
        if self.identifiers.is_empty() {
            return Err(EventError::NoIdentifier);
        }
        Ok(())
    }

    /// The journey-relevant part of the event, moved out of it.
    pub fn into_touchpoint(mut self) -> Touchpoint {
        self.take_touchpoint()
    }

    /// The journey-relevant part of the event, taken out of it (its id,
    /// channel, type and properties are left empty).
    pub fn take_touchpoint(&mut self) -> Touchpoint {
        self.touchpoint_with(|s| std::mem::take(s).into())
    }

    /// [`Event::take_touchpoint`] with the channel and type as shared names.
    pub(crate) fn take_touchpoint_named(&mut self, names: &mut Names) -> Touchpoint {
        self.touchpoint_with(|s| names.get(s))
    }

    /// The touchpoint, with the channel and type made names by `name`.
    fn touchpoint_with(&mut self, mut name: impl FnMut(&mut String) -> Name) -> Touchpoint {
        Touchpoint {
            event_id: std::mem::take(&mut self.event_id),
            time: self.time,
            channel: name(&mut self.channel),
            event_type: name(&mut self.event_type),
            offline: self.offline,
            properties: std::mem::take(&mut self.properties),
        }
    }
}

/// A touchpoint recorded in a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    /// Id of the event this touchpoint came from.
    pub event_id: String,
    /// Event time.
    pub time: Millis,
    /// Channel.
    pub channel: Name,
    /// Event type.
    pub event_type: Name,
    /// Offline touchpoint.
    pub offline: bool,
    /// Properties.
    pub properties: BTreeMap<String, String>,
}

impl Touchpoint {
    /// Order of touchpoints in a journey: event time, ties by event id.
    pub fn order_key(&self) -> (Millis, &str) {
        (self.time, self.event_id.as_str())
    }
}
