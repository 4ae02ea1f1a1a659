//! The scaled-out topology (`processing.instances` > 1): resolve, then
//! repartition by customer key.
//!
//! Every instance owns the input, repartition and changelog partitions `p`
//! with `p % instances == instance` (static ownership, like a StatefulSet's
//! ordinals; no group rebalancing of state). Per input record the resolve
//! step appends the event to the single-partition **identity log** when it
//! carries two or more identifiers, and re-keys it onto the **repartition**
//! topic by the customer key its identifiers have in the local identity view.
//! Every instance reads the whole identity log, so all views converge on the
//! same graph. The journey step applies repartitioned events; when a journey's
//! key moves to a partition another instance owns (two customers became one),
//! the journey is **forwarded** through the repartition topic and deleted
//! here, and the owner merges it. Keys only move one way as sets grow, so
//! forwarding ends.

use anyhow::{Context, Result};
use journey_core::{Engine, Event, Identifier, Journey, Output};
use journey_kafka::{Header, InputRecord, OutputRecord, partition_for};
use journey_store::ChangelogRecord;

use crate::config::Config;

/// Header of a forwarded journey on the repartition topic: the key it was
/// held under (the record key is the key it moves to).
pub const FORWARD_HEADER: &str = "journey-forward-from";

/// Which partitions this instance owns, and the internal topics.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Number of instances.
    pub instances: i32,
    /// This instance.
    pub me: i32,
    /// Partitions of the repartition and changelog topics.
    pub partitions: i32,
    /// Repartition topic.
    pub repartition: String,
    /// Identity log topic (one partition).
    pub identity_log: String,
}

impl Topology {
    /// The topology of share `share` of a configuration, or none for a
    /// single instance.
    pub fn of(cfg: &Config, share: u32) -> Option<Topology> {
        let p = &cfg.processing;
        (p.instances > 1).then(|| Topology {
            instances: p.instances as i32,
            me: share as i32,
            partitions: cfg.topics.input_partitions,
            repartition: cfg.topics.repartition.clone(),
            identity_log: cfg.topics.identity_log.clone(),
        })
    }

    /// Whether this instance owns partition `p` (of input, repartition, changelog).
    pub fn owns(&self, p: i32) -> bool {
        p % self.instances == self.me
    }

    /// The partitions this instance owns among `n`.
    pub fn owned(&self, n: i32) -> Vec<i32> {
        (0..n).filter(|&p| self.owns(p)).collect()
    }

    /// Whether this instance holds the journey of a customer key.
    pub fn owns_key(&self, key: &str) -> bool {
        self.owns(partition_for(key, self.partitions))
    }

    /// The changelog partition of a state record: a journey's goes with its
    /// key, everything else (identities, engine meta, run records) to this
    /// instance's first partition.
    pub fn changelog_partition(&self, record_key: &[u8]) -> i32 {
        match record_key.split_first() {
            Some((b'j', key)) => partition_for(&String::from_utf8_lossy(key), self.partitions),
            _ => self.me,
        }
    }

    /// Drops changes to journeys this instance does not own: a journey that
    /// passed through here on its way to its owner is not part of this
    /// instance's state (its deletion would otherwise erase the owner's copy).
    pub fn keep_owned(&self, changelog: &mut Vec<ChangelogRecord>) {
        changelog.retain(|r| match r.customer_key() {
            Some(key) => self.owns_key(&String::from_utf8_lossy(key)),
            None => true,
        });
    }

    /// The resolve step: the records that route an input event (its original
    /// bytes) to its journey's partition, and append it to the identity log
    /// when it links identifiers.
    pub fn route(&self, rec: &InputRecord, key: &str, links: bool) -> Vec<OutputRecord> {
        let mut out = Vec::with_capacity(2);
        if links {
            out.push(OutputRecord {
                topic: self.identity_log.clone(),
                key: key.as_bytes().to_vec(),
                value: rec.value.clone(),
                headers: vec![],
                partition: Some(0),
            });
        }
        out.push(OutputRecord {
            topic: self.repartition.clone(),
            key: key.as_bytes().to_vec(),
            value: rec.value.clone(),
            headers: vec![],
            partition: Some(partition_for(key, self.partitions)),
        });
        out
    }

    /// The journey step's check before applying an event: an event whose
    /// customer now belongs to another instance (this view of the identity
    /// graph is newer than the resolver's) is routed on to the owner, so that
    /// only the owner of a key ever emits transitions under it.
    pub fn reroute(
        &self,
        rec: &InputRecord,
        event: &Event,
        engine: &Engine,
    ) -> Option<OutputRecord> {
        let key = engine.route_key(event).ok()?;
        (!self.owns_key(&key)).then(|| OutputRecord {
            topic: self.repartition.clone(),
            partition: Some(partition_for(&key, self.partitions)),
            key: key.into_bytes(),
            value: rec.value.clone(),
            headers: vec![],
        })
    }

    /// Applies a link from the identity log. When the joined customer's key
    /// belongs to another instance, the journeys held here for its parts are
    /// forwarded to that owner (which merges them) instead of being merged here.
    pub fn link(
        &self,
        event: &Event,
        engine: &mut Engine,
        out: &mut Vec<Output>,
    ) -> Vec<OutputRecord> {
        let mut forwards = Vec::new();
        if let Ok(key) = engine.route_key(event)
            && !self.owns_key(&key)
        {
            let (usable, _) = engine.identity().usable(&event.identifiers);
            for id in usable {
                let held = engine.identity().key_of(&id).unwrap_or_else(|| id.key());
                forwards.extend(self.forward_one(engine, &held, &key));
            }
        }
        engine.link_event(event, out);
        forwards
    }

    /// Forwards every changed journey whose key this instance does not own
    /// to the owner; returns the records to produce.
    pub fn forward(&self, engine: &mut Engine) -> Vec<OutputRecord> {
        let mut out = Vec::new();
        for key in engine.changed_keys() {
            if self.owns_key(&key) {
                continue;
            }
            let to = Identifier::from_key(&key)
                .and_then(|id| engine.identity().key_of(&id))
                .unwrap_or_else(|| key.clone());
            out.extend(self.forward_one(engine, &key, &to));
        }
        out
    }

    /// Exports the journey held under `from` (if any) as a record for the
    /// owner of `to`.
    fn forward_one(&self, engine: &mut Engine, from: &str, to: &str) -> Option<OutputRecord> {
        let journey = engine.export(from)?;
        Some(OutputRecord {
            topic: self.repartition.clone(),
            value: Some(journey_store::encode(&journey)),
            headers: vec![Header {
                name: FORWARD_HEADER.into(),
                value: from.to_string(),
            }],
            partition: Some(partition_for(to, self.partitions)),
            key: to.as_bytes().to_vec(),
        })
    }

    /// The journey step's side of [`Topology::forward`]: merges a forwarded
    /// journey. Returns false if `rec` is not a forwarded journey.
    pub fn receive(
        &self,
        rec: &InputRecord,
        engine: &mut Engine,
        out: &mut Vec<Output>,
    ) -> Result<bool> {
        let Some(from) = rec.headers.iter().find(|h| h.name == FORWARD_HEADER) else {
            return Ok(false);
        };
        let to = String::from_utf8_lossy(rec.key.as_deref().unwrap_or_default()).into_owned();
        let (Some(from), Some(to)) = (Identifier::from_key(&from.value), Identifier::from_key(&to))
        else {
            anyhow::bail!("forwarded journey with unparsable keys");
        };
        let journey: Journey = journey_store::decode(
            "forwarded journey",
            rec.value.as_deref().unwrap_or_default(),
        )
        .context("cannot decode a forwarded journey")?;
        engine.import(from, to, journey, out);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(me: i32) -> Topology {
        Topology {
            instances: 2,
            me,
            partitions: 4,
            repartition: "rp".into(),
            identity_log: "il".into(),
        }
    }

    #[test]
    fn every_partition_and_key_has_exactly_one_owner() {
        for p in 0..4 {
            assert_eq!((0..2).filter(|&me| topo(me).owns(p)).count(), 1);
        }
        for k in ["email:a@x", "customer_id:C-1", "anonymous_id:z"] {
            assert_eq!((0..2).filter(|&me| topo(me).owns_key(k)).count(), 1);
        }
        assert_eq!(topo(1).owned(4), vec![1, 3]);
    }

    #[test]
    fn only_owned_journeys_are_kept_in_the_changelog() {
        let t = topo(0);
        let owned = (0..100)
            .map(|i| format!("email:{i}@x"))
            .find(|k| t.owns_key(k))
            .unwrap();
        let foreign = (0..100)
            .map(|i| format!("email:{i}@x"))
            .find(|k| !t.owns_key(k))
            .unwrap();
        let rec = |k: &str| ChangelogRecord {
            key: [b"j".as_slice(), k.as_bytes()].concat(),
            value: None,
        };
        let mut v = vec![
            rec(&owned),
            rec(&foreign),
            ChangelogRecord {
                key: b"mengine".to_vec(),
                value: Some(vec![1]),
            },
        ];
        t.keep_owned(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(t.changelog_partition(b"mengine"), 0);
        assert_eq!(
            t.changelog_partition(&rec(&owned).key),
            partition_for(&owned, 4)
        );
    }
}
