//! A set of node numbers (identity graph nodes, which are dense): one bit
//! per node, and the list of those inserted so the set can be drained or
//! cleared in the time of its members rather than of all nodes.
//!
//! The engine's sets of changed nodes get one insert or test per event; a
//! bit in a dense array is one cache line shared by 512 nodes, where a hash
//! set's entry is a random probe into a table as large as the changes.

/// Node numbers (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSet {
    /// Per 64 nodes: which are members, and which are in `listed` (a node
    /// removed stays listed until the next drain, so inserting it again
    /// does not list it twice).
    words: Vec<[u64; 2]>,
    listed: Vec<u32>,
    len: usize,
}

const MEMBER: usize = 0;
const LISTED: usize = 1;

impl NodeSet {
    fn at(n: u32) -> (usize, u64) {
        ((n / 64) as usize, 1 << (n % 64))
    }

    /// Whether `n` is a member.
    pub(crate) fn contains(&self, n: u32) -> bool {
        let (word, bit) = Self::at(n);
        self.words.get(word).is_some_and(|w| w[MEMBER] & bit != 0)
    }

    /// Adds `n`; false if it was a member already.
    pub(crate) fn insert(&mut self, n: u32) -> bool {
        let (word, bit) = Self::at(n);
        if word >= self.words.len() {
            self.words.resize((word + 1).next_power_of_two(), [0; 2]);
        }
        let w = &mut self.words[word];
        if w[MEMBER] & bit != 0 {
            return false;
        }
        w[MEMBER] |= bit;
        if w[LISTED] & bit == 0 {
            w[LISTED] |= bit;
            self.listed.push(n);
        }
        self.len += 1;
        true
    }

    /// Removes `n`; false if it was not a member.
    pub(crate) fn remove(&mut self, n: u32) -> bool {
        let (word, bit) = Self::at(n);
        match self.words.get_mut(word) {
            Some(w) if w[MEMBER] & bit != 0 => {
                w[MEMBER] &= !bit;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The members, each once, in the order they were first inserted since
    /// the last drain.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.listed.iter().copied().filter(|&n| self.contains(n))
    }

    /// Removes and returns every member, each once, in the order of
    /// [`NodeSet::iter`].
    pub(crate) fn drain(&mut self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        self.empty(|n| out.push(n));
        out
    }

    /// Removes every member.
    pub(crate) fn clear(&mut self) {
        self.empty(|_| {});
    }

    /// Empties the set, telling `member` each member once; the list keeps
    /// its capacity for the next changes.
    fn empty(&mut self, mut member: impl FnMut(u32)) {
        for n in self.listed.drain(..) {
            let (word, bit) = Self::at(n);
            let w = &mut self.words[word];
            if w[MEMBER] & bit != 0 {
                member(n);
            }
            w[MEMBER] &= !bit;
            w[LISTED] &= !bit;
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::NodeSet;

    #[test]
    fn members_are_inserted_tested_and_removed_once() {
        let mut s = NodeSet::default();
        assert!(s.is_empty() && !s.contains(7) && !s.remove(7));
        assert!(s.insert(7));
        assert!(!s.insert(7));
        assert!(s.insert(1000));
        assert!(s.contains(7) && s.contains(1000) && !s.contains(8) && !s.contains(100_000));
        assert_eq!(s.iter().count(), 2);
        assert!(s.remove(7) && !s.remove(7));
        assert!(!s.contains(7));
        assert_eq!(s.iter().count(), 1);
    }

    #[test]
    fn a_node_removed_and_inserted_again_is_drained_once() {
        let mut s = NodeSet::default();
        for n in [3, 64, 65, 3] {
            s.insert(n);
        }
        s.remove(64);
        s.remove(3);
        s.insert(3);
        s.insert(3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 65]);
        assert_eq!(s.drain(), [3, 65]);
        assert!(s.is_empty() && !s.contains(3) && !s.contains(65));
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn clear_leaves_nothing_behind() {
        let mut s = NodeSet::default();
        for n in 0..300 {
            s.insert(n * 7);
        }
        s.clear();
        assert!(s.is_empty());
        assert!((0..2100).all(|n| !s.contains(n)));
        assert!(s.insert(14));
        assert_eq!(s.drain(), [14]);
    }
}
