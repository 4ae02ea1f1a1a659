//! The versioned value encoding: one format byte, then postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Format version written by this build.
pub const FORMAT_VERSION: u8 = 1;

/// Room reserved for an encoded value up front: most identity and customer
/// values fit, and a journey grows it a few times rather than from nothing.
const INITIAL_CAPACITY: usize = 128;

/// Encodes a value: `[FORMAT_VERSION] ++ postcard(value)`, written straight
/// into one buffer (no second buffer to copy the postcard bytes from).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(INITIAL_CAPACITY);
    out.push(FORMAT_VERSION);
    // Serialising plain data structs into a Vec cannot fail.
    postcard::serialize_with_flavor(value, Appended(out)).expect("postcard encodes plain data")
}

/// A postcard output that appends to a `Vec` already holding a prefix.
struct Appended(Vec<u8>);

impl postcard::ser_flavors::Flavor for Appended {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a value written by [`encode`]; an unknown version is an error, not garbage.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.first() {
        None => Err(Error::Decode {
            what: what.into(),
            message: "empty value".into(),
        }),
        Some(&FORMAT_VERSION) => postcard::from_bytes(&bytes[1..]).map_err(|e| Error::Decode {
            what: what.into(),
            message: e.to_string(),
        }),
        Some(&v) => Err(Error::Version {
            what: what.into(),
            found: v,
            expected: FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use journey_core::{Engine, EngineConfig, Event, Identifier, StageModel};

    #[test]
    fn journey_round_trips_and_unknown_versions_fail() {
        let mut e = Engine::new(
            EngineConfig {
                out_of_order_ms: 0,
                ..Default::default()
            },
            vec![StageModel::builtin("funnel5").unwrap()],
        );
        let mut out = Vec::new();
        let mut ev = Event {
            event_id: "e1".into(),
            time: 5,
            channel: "store".into(),
            event_type: "purchase".into(),
            offline: true,
            direct: true,
            identifiers: vec![Identifier::new("customer_id", "C-1")],
            value: Some(3.5),
            currency: None,
            campaign: None,
            properties: [("rating".to_string(), "5".to_string())].into(),
        };
        e.submit(ev.clone(), &mut out).unwrap();
        ev.event_id = "e2".into();
        ev.time = 9;
        e.submit(ev, &mut out).unwrap();
        let j = e.journey("customer_id:C-1").unwrap().clone();
        let bytes = encode(&j);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(bytes[1..], postcard::to_stdvec(&j).unwrap());
        assert_eq!(
            decode::<journey_core::Journey>("journey", &bytes).unwrap(),
            j
        );
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<journey_core::Journey>("journey", &future),
            Err(Error::Version { found: 9, .. })
        ));
        assert!(decode::<journey_core::Journey>("journey", &bytes[..bytes.len() / 2]).is_err());
    }
}
