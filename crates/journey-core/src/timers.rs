//! The engine's timer queue: `(due, key node)` entries in due order.

use std::collections::BTreeSet;

use crate::Millis;

/// Timer entries in due order, with the earliest due time kept apart: the
/// engine asks "is anything due?" twice per event, and the answer is nearly
/// always no, which a comparison gives without a walk down the tree.
#[derive(Debug, Clone)]
pub(crate) struct TimerQueue {
    entries: BTreeSet<(Millis, u32)>,
    /// Due time of the first entry.
    first_due: Option<Millis>,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            entries: BTreeSet::new(),
            first_due: None,
        }
    }

    /// Whether an entry is due at or before `until`.
    pub(crate) fn any_due(&self, until: Millis) -> bool {
        self.first_due.is_some_and(|due| due <= until)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn insert(&mut self, due: Millis, node: u32) {
        self.entries.insert((due, node));
        self.first_due = Some(self.first_due.map_or(due, |first| first.min(due)));
    }

    pub(crate) fn remove(&mut self, due: Millis, node: u32) {
        if self.entries.remove(&(due, node)) && Some(due) == self.first_due {
            self.refresh();
        }
    }

    /// The first entry, if it is due at or before `until`, taken out.
    pub(crate) fn pop_due(&mut self, until: Millis) -> Option<(Millis, u32)> {
        if !self.any_due(until) {
            return None;
        }
        let first = self.entries.pop_first();
        self.refresh();
        first
    }

    fn refresh(&mut self) {
        self.first_due = self.entries.first().map(|&(due, _)| due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_out_in_due_order_and_only_when_due() {
        let mut q = TimerQueue::new();
        assert!(!q.any_due(Millis::MAX));
        q.insert(30, 1);
        q.insert(10, 2);
        q.insert(20, 3);
        q.insert(10, 1);
        assert!(q.any_due(10) && !q.any_due(9));
        q.remove(10, 1);
        assert!(q.any_due(10), "another entry is due at 10");
        q.remove(10, 2);
        assert!(!q.any_due(19) && q.any_due(20));
        q.remove(99, 9);
        assert_eq!(q.pop_due(25), Some((20, 3)));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(Millis::MAX), Some((30, 1)));
        assert!(!q.any_due(Millis::MAX));
        assert_eq!(q.len(), 0);
    }
}
