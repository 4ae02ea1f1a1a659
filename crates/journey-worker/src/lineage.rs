//! Which changelog records belong to committed transactions.
//!
//! A read_committed consumer on Apache Kafka never sees the records of
//! aborted transactions, but some Kafka-protocol brokers leak them (the local
//! test broker does). A restore that applied them would start from a state
//! ahead of the committed input offsets, and the transitions of the aborted
//! transaction would never be emitted again. So the worker identifies its
//! commits itself, with something Kafka commits atomically with the
//! transaction: a group offset.
//!
//! - Every transaction has a **commit number** `n`, committed with
//!   `send_offsets_to_transaction` as the group's offset of the changelog's
//!   partition 0 (the worker never consumes that partition in its group), and
//!   written on each of its changelog records as a header.
//! - A worker process is a **run**. Its commit numbers are consecutive from
//!   its start number, chosen above every number an earlier run can have used
//!   (the wall clock in microseconds, or the committed number + 1 if that is
//!   higher). Its first transaction writes a run record: start → **base**,
//!   the committed number the run restored from.
//!
//! The committed commits are then the chain: from the group's committed
//! number back through each run's base. A record is applied on restore only
//! when its number lies in that chain; records without a number (written
//! before this scheme) are applied as before.

use std::collections::BTreeMap;

/// Header carrying a changelog record's commit number.
pub const COMMIT_HEADER: &str = "journey-commit";
/// Key prefix of run records in the changelog (`r/<start>` → base).
pub const RUN_PREFIX: &str = "r/";

/// Runs found in the changelog: start number → base number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lineage {
    runs: BTreeMap<i64, i64>,
}

impl Lineage {
    /// Records a run record (`key` with [`RUN_PREFIX`], value = base as text).
    /// Returns false if `key` is not a run record.
    pub fn observe(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let Some(start) = key
            .strip_prefix(RUN_PREFIX.as_bytes())
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return false;
        };
        if let Some(base) = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<i64>().ok())
        {
            self.runs.insert(start, base);
        }
        true
    }

    /// The committed ranges of commit numbers, newest first, given the
    /// group's committed number (none or 0: nothing was ever committed).
    pub fn committed(&self, committed: Option<i64>) -> Committed {
        let mut ranges = Vec::new();
        let mut end = committed.unwrap_or(0);
        while end > 0 {
            let Some((&start, &base)) = self.runs.range(..=end).next_back() else {
                break;
            };
            ranges.push((start, end));
            if base >= start {
                break; // malformed: bases always point back in time
            }
            end = base;
        }
        Committed { ranges }
    }
}

impl Lineage {
    /// For a store at commit `local` catching up to the group's `committed`
    /// number from the changelog records after `local` (this lineage holds
    /// the run records among them): the commit numbers to apply. None when
    /// `local` is not on the committed chain (a store ahead of the committed
    /// state, or on a branch a later run abandoned): rebuild instead.
    pub fn committed_since(&self, committed: i64, local: i64) -> Option<Committed> {
        let mut ranges = Vec::new();
        let mut end = committed;
        while end > local {
            match self.runs.range(..=end).next_back() {
                // A run that started after `local`: its commits up to `end`,
                // then the commit it restored from.
                Some((&start, &base)) if start > local => {
                    if base >= start {
                        return None;
                    }
                    ranges.push((start, end));
                    end = base;
                }
                // No run started between `local` and `end`: `local`'s run
                // went on committing up to `end`.
                _ => {
                    ranges.push((local + 1, end));
                    end = local;
                }
            }
        }
        (end == local).then_some(Committed { ranges })
    }
}

/// The committed commit numbers, as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    ranges: Vec<(i64, i64)>,
}

impl Committed {
    /// Whether a record with this commit number (none: written before commit
    /// numbers existed) belongs to a committed transaction.
    pub fn contains(&self, commit: Option<i64>) -> bool {
        match commit {
            None => true,
            Some(n) => self.ranges.iter().any(|&(s, e)| s <= n && n <= e),
        }
    }
}

/// The first commit number of a run: above every number an earlier run used.
pub fn run_start(committed: Option<i64>, now_micros: i64) -> i64 {
    now_micros.max(committed.unwrap_or(0) + 1)
}

/// The run record a run writes in its first transaction.
pub fn run_record(start: i64, base: Option<i64>) -> (String, Vec<u8>) {
    (
        format!("{RUN_PREFIX}{start}"),
        base.unwrap_or(0).to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lineage(runs: &[(i64, i64)]) -> Lineage {
        let mut l = Lineage::default();
        for (s, b) in runs {
            let (k, v) = run_record(*s, Some(*b));
            assert!(l.observe(k.as_bytes(), Some(&v)));
        }
        l
    }

    #[test]
    fn aborted_commits_of_an_earlier_run_are_excluded() {
        // Run A (100) committed 100..=105 and crashed in 106; run B (200)
        // restored from 105 and committed 200..=210; run C (150) never committed.
        let l = lineage(&[(100, 0), (150, 105), (200, 105)]);
        let c = l.committed(Some(210));
        for n in [100, 105, 200, 210] {
            assert!(c.contains(Some(n)), "{n}");
        }
        for n in [99, 106, 150, 151, 211] {
            assert!(!c.contains(Some(n)), "{n}");
        }
        assert!(c.contains(None));
    }

    #[test]
    fn a_store_behind_catches_up_only_along_the_committed_chain() {
        // Local store at 103 (run A, 100). Run A went on to 105 and crashed
        // in 106; run B restored from 105 and committed up to 210.
        let l = lineage(&[(200, 105)]);
        let c = l.committed_since(210, 103).unwrap();
        for n in [104, 105, 200, 210] {
            assert!(c.contains(Some(n)), "{n}");
        }
        for n in [103, 106, 211] {
            assert!(!c.contains(Some(n)), "{n}");
        }
        // Same run, no restart: the numbers after the store's.
        let c = Lineage::default().committed_since(108, 103).unwrap();
        assert!(c.contains(Some(104)) && c.contains(Some(108)) && !c.contains(Some(109)));
        // A store ahead of the committed state, or on an abandoned branch
        // (run B restored from 101, so 102..=103 never committed): rebuild.
        assert!(Lineage::default().committed_since(102, 103).is_none());
        assert!(lineage(&[(200, 101)]).committed_since(210, 103).is_none());
    }

    #[test]
    fn nothing_committed_keeps_only_unnumbered_records() {
        let l = lineage(&[(100, 0)]);
        let c = l.committed(None);
        assert!(!c.contains(Some(100)));
        assert!(c.contains(None));
    }

    #[test]
    fn other_keys_are_not_run_records() {
        let mut l = Lineage::default();
        assert!(!l.observe(b"jcustomer_id:C-1", Some(b"x")));
        assert!(!l.observe(b"r/x", Some(b"1")));
        assert_eq!(run_start(Some(5), 3), 6);
        assert_eq!(run_start(None, 3), 3);
    }
}
