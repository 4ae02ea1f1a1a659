//! The identity graph's node table: every known identifier once, compact,
//! with an index from identifier to node number.
//!
//! Types are few and values many, so a node is 12 bytes: its type as a
//! number into a small table of type names, and where its value lies in one
//! shared text arena. The index holds node numbers only, hashed and compared
//! through the table, so no identifier is stored twice and adding one
//! allocates nothing of its own (the arena and the tables grow by doubling).
//! Values of forgotten nodes stay in the arena as garbage until it is
//! compacted, which happens once they are more than half of it. Slots
//! released (see [`Nodes::release`]) are reused by the next nodes added.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use crate::{Identifier, Name, Priority};

/// A type number that names no type: the slot of a forgotten identifier.
const NO_KIND: u32 = u32::MAX;

/// Garbage below this many bytes is never worth a compaction.
const MIN_COMPACTION: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: u32,
    /// Start of the value in the arena.
    start: u32,
    /// Length of the value in bytes.
    len: u32,
}

/// Identifiers by node number (see the module documentation).
#[derive(Clone, Default)]
pub(crate) struct Nodes {
    kinds: Vec<Name>,
    /// Each type's rank in the priority its nodes were added with.
    ranks: Vec<usize>,
    nodes: Vec<Node>,
    /// Every live node's value, back to back.
    arena: String,
    /// Bytes of the arena no live node uses.
    garbage: usize,
    /// Released slots, reused before the table grows.
    free: Vec<u32>,
    index: hashbrown::HashTable<u32>,
    hasher: rustc_hash::FxBuildHasher,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nodes({} identifiers of {} types)",
            self.index.len(),
            self.kinds.len()
        )
    }
}

impl Nodes {
    fn hash(&self, kind: u32, value: &str) -> u64 {
        self.hasher.hash_one((kind, value))
    }

    /// The number of a type name, if any identifier of that type was seen.
    pub(crate) fn kind_id(&self, kind: &str) -> Option<u32> {
        self.kinds
            .iter()
            .position(|k| &**k == kind)
            .map(|i| i as u32)
    }

    /// The node of an identifier, if known. Its type is looked up by the
    /// shared name's pointer first (see [`Identifier::type_name`]).
    pub(crate) fn find(&self, id: &Identifier) -> Option<u32> {
        self.find_in(self.kind_number(&id.kind)?, &id.value)
    }

    /// [`Nodes::kind_id`] of a shared name: by its pointer first.
    fn kind_number(&self, kind: &Name) -> Option<u32> {
        match self.kinds.iter().position(|k| Name::ptr_eq(k, kind)) {
            Some(k) => Some(k as u32),
            None => self.kind_id(kind),
        }
    }

    /// The node of the identifier `kind:value`, if known.
    pub(crate) fn find_parts(&self, kind: &str, value: &str) -> Option<u32> {
        self.find_in(self.kind_id(kind)?, value)
    }

    fn find_in(&self, kind: u32, value: &str) -> Option<u32> {
        self.index
            .find(self.hash(kind, value), |&n| {
                let node = self.nodes[n as usize];
                node.kind == kind && self.text(node) == value
            })
            .copied()
    }

    fn text(&self, node: Node) -> &str {
        text_in(&self.arena, node)
    }

    /// Adds an identifier not known yet as a new node, indexed; returns its
    /// number. Every node of a table must be added with the same priority
    /// (see [`Nodes::compare`]).
    ///
    /// Panics if the values held would pass 4 GiB.
    pub(crate) fn push(&mut self, id: &Identifier, priority: &Priority) -> u32 {
        debug_assert!(self.find(id).is_none(), "{id} is already known");
        let kind = match self.kind_number(&id.kind) {
            Some(k) => k,
            None => {
                self.kinds.push(id.kind.clone());
                self.ranks.push(priority.rank(&id.kind));
                (self.kinds.len() - 1) as u32
            }
        };
        if self.garbage > MIN_COMPACTION && self.garbage > self.arena.len() / 2 {
            self.compact();
        }
        assert!(
            self.arena.len() + id.value.len() <= u32::MAX as usize,
            "the identity graph holds at most 4 GiB of identifier values"
        );
        let start = self.arena.len() as u32;
        self.arena.push_str(&id.value);
        let node = Node {
            kind,
            start,
            len: id.value.len() as u32,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let (hasher, nodes, arena) = (&self.hasher, &self.nodes, &self.arena);
        let rehash = |&m: &u32| {
            let node = nodes[m as usize];
            hasher.hash_one((node.kind, text_in(arena, node)))
        };
        self.index.insert_unique(rehash(&n), n, rehash);
        n
    }

    /// Rewrites the arena with the live values only.
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        for node in self.nodes.iter_mut().filter(|n| n.kind != NO_KIND) {
            let at = arena.len() as u32;
            arena.push_str(text_in(&self.arena, *node));
            node.start = at;
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Removes node `n`, the last one added (an identifier that could not
    /// join): its slot is free again.
    pub(crate) fn unpush(&mut self, n: u32) {
        self.unindex(n);
        let node = self.nodes[n as usize];
        if node.start as usize + node.len as usize == self.arena.len() {
            self.arena.truncate(node.start as usize);
        } else {
            self.garbage += node.len as usize;
        }
        if n as usize + 1 == self.nodes.len() {
            self.nodes.pop();
        } else {
            self.clear(n);
            self.free.push(n);
        }
    }

    /// Empties slot `n` (forgotten or released).
    fn clear(&mut self, n: u32) {
        self.nodes[n as usize] = Node {
            kind: NO_KIND,
            start: 0,
            len: 0,
        };
    }

    /// Drops live node `n` from the table: no longer indexed, and its slot
    /// is reused by a later [`Nodes::push`]. Whoever refers to `n` must be
    /// done with it.
    pub(crate) fn release(&mut self, n: u32) {
        debug_assert!(self.is_live(n));
        self.unindex(n);
        self.garbage += self.nodes[n as usize].len as usize;
        self.clear(n);
        self.free.push(n);
    }

    /// Makes the slot of forgotten node `n` reusable.
    pub(crate) fn recycle(&mut self, n: u32) {
        debug_assert!(!self.is_live(n));
        self.free.push(n);
    }

    /// Forgets node `n`: it is no longer indexed and its slot stays empty.
    /// Returns the identifier it was.
    pub(crate) fn forget(&mut self, n: u32) -> Identifier {
        let id = self.identifier(n);
        self.unindex(n);
        self.garbage += self.nodes[n as usize].len as usize;
        self.clear(n);
        id
    }

    fn unindex(&mut self, n: u32) {
        let node = self.nodes[n as usize];
        let hash = self.hash(node.kind, self.text(node));
        if let Ok(entry) = self.index.find_entry(hash, |&m| m == n) {
            entry.remove();
        }
    }

    /// Whether node `n` holds a live identifier (not forgotten).
    pub(crate) fn is_live(&self, n: u32) -> bool {
        self.nodes[n as usize].kind != NO_KIND
    }

    /// Number of node slots (live or forgotten): the next node's number.
    pub(crate) fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Number of identifiers known.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes of the live nodes' values.
    pub(crate) fn value_bytes(&self) -> usize {
        self.arena.len() - self.garbage
    }

    /// The type name of node `n`.
    pub(crate) fn kind(&self, n: u32) -> &str {
        &self.kinds[self.nodes[n as usize].kind as usize]
    }

    /// The type number of node `n`.
    pub(crate) fn kind_of(&self, n: u32) -> u32 {
        self.nodes[n as usize].kind
    }

    /// The value of node `n`.
    pub(crate) fn value(&self, n: u32) -> &str {
        self.text(self.nodes[n as usize])
    }

    /// The identifier of node `n`.
    pub(crate) fn identifier(&self, n: u32) -> Identifier {
        Identifier {
            kind: self.kinds[self.nodes[n as usize].kind as usize].clone(),
            value: self.value(n).to_owned(),
        }
    }

    /// Node `n` as a customer key, `type:value`.
    pub(crate) fn key(&self, n: u32) -> String {
        crate::identifier::key_of(self.kind(n), self.value(n))
    }

    /// `Less` when node `a` has the higher priority (see
    /// [`Priority::compare`]; the priority is the one the nodes were added
    /// with, each type's rank taken when its first node was).
    pub(crate) fn compare(&self, a: u32, b: u32) -> Ordering {
        let (ka, kb) = (self.kind_of(a), self.kind_of(b));
        if ka != kb {
            // Different type numbers are different type names.
            let (ra, rb) = (self.ranks[ka as usize], self.ranks[kb as usize]);
            return ra.cmp(&rb).then_with(|| self.kind(a).cmp(self.kind(b)));
        }
        self.value(a).cmp(self.value(b))
    }
}

/// The value of `node` in `arena`.
fn text_in(arena: &str, node: Node) -> &str {
    let start = node.start as usize;
    &arena[start..start + node.len as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_and_forgets() {
        let (mut nodes, p) = (Nodes::default(), Priority::default());
        let a = nodes.push(&Identifier::new("email", "a@x"), &p);
        let b = nodes.push(&Identifier::new("anonymous_id", "a@x"), &p);
        assert_eq!(nodes.find(&Identifier::new("email", "a@x")), Some(a));
        assert_eq!(nodes.find_parts("anonymous_id", "a@x"), Some(b));
        assert_eq!(nodes.find_parts("phone", "a@x"), None, "unknown type");
        assert_eq!(nodes.key(b), "anonymous_id:a@x");
        assert_eq!(nodes.forget(a), Identifier::new("email", "a@x"));
        assert_eq!(nodes.find(&Identifier::new("email", "a@x")), None);
        assert!(!nodes.is_live(a) && nodes.is_live(b));
        assert_eq!((nodes.len(), nodes.slots()), (1, 2));
        nodes.unpush(b);
        assert_eq!((nodes.len(), nodes.slots()), (0, 1));
    }

    #[test]
    fn released_slots_are_reused() {
        let (mut nodes, p) = (Nodes::default(), Priority::default());
        let a = nodes.push(&Identifier::new("email", "a@x"), &p);
        let b = nodes.push(&Identifier::new("email", "b@x"), &p);
        nodes.release(a);
        assert_eq!(nodes.find(&Identifier::new("email", "a@x")), None);
        let c = nodes.push(&Identifier::new("phone", "123"), &p);
        assert_eq!(c, a, "the released slot");
        assert_eq!(nodes.key(c), "phone:123");
        assert_eq!(nodes.find_parts("email", "b@x"), Some(b));
        // Removing the last slot shrinks the table.
        nodes.unpush(b);
        let d = nodes.push(&Identifier::new("email", "d@x"), &p);
        assert_eq!((d, nodes.slots(), nodes.len()), (b, 2, 2));
    }

    #[test]
    fn compaction_keeps_every_live_value() {
        let (mut nodes, p) = (Nodes::default(), Priority::default());
        let value = |i: usize| format!("{i:0>1000}");
        let ids: Vec<u32> = (0..4000)
            .map(|i| nodes.push(&Identifier::new("anonymous_id", &value(i)), &p))
            .collect();
        // Forget three in four: more than half the arena is garbage, so
        // the next push compacts.
        for &n in ids.iter().filter(|&&n| n % 4 != 0) {
            nodes.forget(n);
        }
        let before = nodes.arena.len();
        let extra = nodes.push(&Identifier::new("email", "new@x"), &p);
        assert!(nodes.arena.len() < before / 2, "compacted");
        for (i, &n) in ids.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
            assert_eq!(nodes.value(n), value(i));
            assert_eq!(nodes.find_parts("anonymous_id", &value(i)), Some(n));
        }
        assert_eq!(nodes.find_parts("anonymous_id", &value(1)), None);
        assert_eq!(nodes.value(extra), "new@x");
        assert_eq!(nodes.len(), 1001);
    }
}
