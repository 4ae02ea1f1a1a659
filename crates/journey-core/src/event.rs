use std::collections::BTreeMap;

use serde::ser::SerializeMap;
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
            event_id: std::mem::take(&mut self.event_id).into_boxed_str(),
            time: self.time,
            channel: name(&mut self.channel),
            event_type: name(&mut self.event_type),
            offline: self.offline,
            // An empty map is left in place (nothing to take, nor to drop).
            properties: if self.properties.is_empty() {
                Properties::default()
            } else {
                std::mem::take(&mut self.properties).into()
            },
        }
    }
}

/// A touchpoint recorded in a journey. Journeys hold many: it is kept to
/// 72 bytes (an id that does not grow, properties a word when there are none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    /// Id of the event this touchpoint came from.
    pub event_id: Box<str>,
    /// Event time.
    pub time: Millis,
    /// Channel.
    pub channel: Name,
    /// Event type.
    pub event_type: Name,
    /// Offline touchpoint.
    pub offline: bool,
    /// Properties.
    pub properties: Properties,
}

impl Touchpoint {
    /// Order of touchpoints in a journey: event time, ties by event id.
    pub fn order_key(&self) -> (Millis, &str) {
        (self.time, &self.event_id)
    }
}

/// A touchpoint's properties, by name. Most touchpoints have none, which
/// takes one word and no allocation. Serialised as the map it holds (an
/// empty map for none), so stored journeys read the same as a
/// `BTreeMap<String, String>`.
#[derive(Clone, Default, PartialEq, Eq)]
// Boxed on purpose: a word per touchpoint instead of the map's three.
#[allow(clippy::box_collection)]
pub struct Properties(Option<Box<BTreeMap<String, String>>>);

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Properties {
    /// The value of property `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.as_ref()?.get(name).map(String::as_str)
    }

    /// Sets property `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        self.0.get_or_insert_default().insert(name, value)
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// The properties in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl From<BTreeMap<String, String>> for Properties {
    fn from(map: BTreeMap<String, String>) -> Self {
        Properties((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl FromIterator<(String, String)> for Properties {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        BTreeMap::from_iter(iter).into()
    }
}

impl<const N: usize> From<[(String, String); N]> for Properties {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Serialize for Properties {
    // The map's own encoding: a length (postcard needs it first), then the pairs.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(map) => map.serialize(serializer),
            None => serializer.serialize_map(Some(0))?.end(),
        }
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Properties::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Properties;

    #[test]
    fn properties_serialise_as_the_map_they_hold() {
        for pairs in [vec![], vec![("rating", "5"), ("tier", "gold")]] {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let props = Properties::from(map.clone());
            assert_eq!(props.len(), map.len());
            assert_eq!(
                postcard::to_allocvec(&props).unwrap(),
                postcard::to_allocvec(&map).unwrap()
            );
            assert_eq!(
                serde_json::to_string(&props).unwrap(),
                serde_json::to_string(&map).unwrap()
            );
            let back: Properties =
                postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
            assert_eq!(back, props);
        }
    }

    #[test]
    fn no_properties_is_one_word_and_empty() {
        assert_eq!(std::mem::size_of::<Properties>(), 8);
        assert_eq!(std::mem::size_of::<super::Touchpoint>(), 72);
        let mut p = Properties::from(BTreeMap::new());
        assert!(p.is_empty() && p.get("rating").is_none() && p.iter().next().is_none());
        assert_eq!(p.insert("rating".into(), "4".into()), None);
        assert_eq!(p.get("rating"), Some("4"));
        assert!(!p.is_empty());
    }
}
