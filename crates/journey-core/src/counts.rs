//! Touchpoints per channel: a journey's counter, shared with its transitions.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Name;
use crate::names::Names;

/// Touchpoints per channel, in channel name order.
///
/// A journey has one entry per channel it has seen: a handful. So they are a
/// sorted vector (one small allocation), searched first by the shared name's
/// pointer (an engine's touchpoints share one copy of each channel name, see
/// [`Name`]) and by text only when that misses. Serialised as a map from
/// channel to count, in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCounts(Vec<(Name, u64)>);

impl ChannelCounts {
    /// The count of `channel`, if it has one.
    pub fn get(&self, channel: &str) -> Option<u64> {
        self.position(channel).ok().map(|i| self.0[i].1)
    }

    /// The channels and their counts, in channel name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Name, u64)> {
        self.0.iter().map(|(c, n)| (c, *n))
    }

    /// How many channels have a count.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no channel has a count.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `n` to the count of `channel` (entered at its place if new).
    pub fn add(&mut self, channel: &Name, n: u64) {
        if let Some(entry) = self.0.iter_mut().find(|(c, _)| Name::ptr_eq(c, channel)) {
            entry.1 += n;
            return;
        }
        self.add_text(channel, n, || channel.clone());
    }

    /// Adds `n` to the count of the channel named `channel`, entering it as
    /// `name()` if it has no count yet.
    fn add_text(&mut self, channel: &str, n: u64, name: impl FnOnce() -> Name) {
        match self.position(channel) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (name(), n)),
        }
    }

    /// Takes one from the count of `channel` (a touchpoint counted twice,
    /// found when two journeys merge); nothing if it has no count.
    pub(crate) fn remove_one(&mut self, channel: &str) {
        if let Ok(i) = self.position(channel) {
            self.0[i].1 = self.0[i].1.saturating_sub(1);
        }
    }

    /// Adds every count of `other`.
    pub(crate) fn add_all(&mut self, other: &ChannelCounts) {
        for (c, n) in &other.0 {
            self.add(c, *n);
        }
    }

    /// Replaces the channel names by the engine's shared copies.
    pub(crate) fn share_names(&mut self, names: &mut Names) {
        for (c, _) in &mut self.0 {
            names.share(c);
        }
    }

    fn position(&self, channel: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| (**c).cmp(channel))
    }
}

impl<'a> FromIterator<(&'a str, u64)> for ChannelCounts {
    /// Counts summed per channel (a channel may come more than once).
    fn from_iter<I: IntoIterator<Item = (&'a str, u64)>>(iter: I) -> Self {
        let mut counts = ChannelCounts::default();
        for (c, n) in iter {
            counts.add_text(c, n, || c.into());
        }
        counts
    }
}

impl Serialize for ChannelCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (c, n) in &self.0 {
            map.serialize_entry(&**c, n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChannelCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountsVisitor;
        impl<'de> Visitor<'de> for CountsVisitor {
            type Value = ChannelCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from channel to count")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut counts = ChannelCounts(Vec::with_capacity(map.size_hint().unwrap_or(0)));
                while let Some((c, n)) = map.next_entry::<Name, u64>()? {
                    counts.add(&c, n);
                }
                Ok(counts)
            }
        }
        deserializer.deserialize_map(CountsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn counts_stay_in_channel_order_whether_names_are_shared_or_not() {
        let web: Name = "web".into();
        let mut counts = ChannelCounts::default();
        counts.add(&web, 1);
        counts.add(&"store".into(), 2);
        counts.add(&"app".into(), 1);
        // The same text under another pointer is the same channel.
        counts.add(&"web".into(), 1);
        counts.add(&web, 3);
        counts.remove_one("store");
        counts.remove_one("email");
        let got: Vec<(&str, u64)> = counts.iter().map(|(c, n)| (&**c, n)).collect();
        assert_eq!(got, [("app", 1), ("store", 1), ("web", 5)]);
        assert_eq!(counts.get("web"), Some(5));
        assert_eq!(counts.get("email"), None);
        let mut other: ChannelCounts = [("web", 1), ("email", 2), ("email", 1)]
            .into_iter()
            .collect();
        other.add_all(&counts);
        assert_eq!(other.get("email"), Some(3));
        assert_eq!(other.get("web"), Some(6));
        assert_eq!(other.len(), 4);
    }

    #[test]
    fn counts_are_written_as_the_map_they_were_before() {
        let counts: ChannelCounts = [("web", 2), ("app", 1)].into_iter().collect();
        let map = BTreeMap::from([("app", 1u64), ("web", 2)]);
        // The same text, and the same bytes in the store's encoding.
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let bytes = postcard::to_allocvec(&counts).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&map).unwrap());
        let back: ChannelCounts = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, counts);
        let back: ChannelCounts = serde_json::from_str(r#"{"web": 2, "app": 1}"#).unwrap();
        assert_eq!(back, counts);
    }
}
