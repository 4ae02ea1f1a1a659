//! The identity graph: union-find over identifiers with a deterministic key and guards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node_set::NodeSet;
use crate::nodes::Nodes;
use crate::{Identifier, Priority};

/// Identity guards: links that would break one are not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Guards {
    /// Values refused for any type, compared case-insensitively after trimming.
    /// The defaults (empty, `null`, `undefined`, `anonymous`, `0`, `-1`,
    /// `unknown`) always apply; this list adds to them.
    pub blocked_values: Vec<String>,
    /// At most this many identifiers of a type per customer (default: one `customer_id`).
    pub max_per_type: BTreeMap<String, usize>,
    /// At most this many identifiers per customer.
    pub max_identifiers: usize,
}

const DEFAULT_BLOCKED: [&str; 7] = ["", "null", "undefined", "anonymous", "0", "-1", "unknown"];
const LONGEST_DEFAULT_BLOCKED: usize = 9;

impl Default for Guards {
    fn default() -> Self {
        Guards {
            blocked_values: Vec::new(),
            max_per_type: BTreeMap::from([("customer_id".to_string(), 1)]),
            max_identifiers: 100,
        }
    }
}

impl Guards {
    /// Whether a (normalised) value is blocked.
    pub fn is_blocked(&self, value: &str) -> bool {
        let v = if crate::identifier::needs_trim(value) {
            value.trim()
        } else {
            value
        };
        if self.blocked_values.is_empty() && v.len() > LONGEST_DEFAULT_BLOCKED {
            // Most values: longer than every blocked one.
            return false;
        }
        DEFAULT_BLOCKED.iter().any(|b| v.eq_ignore_ascii_case(b))
            || self
                .blocked_values
                .iter()
                .any(|b| v.eq_ignore_ascii_case(b.trim()))
    }
}

/// Why a link (or an identifier) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The value is on the blocked list.
    BlockedValue,
    /// The merged customer would hold too many identifiers of one type.
    MaxPerType,
    /// The merged customer would hold too many identifiers.
    MaxIdentifiers,
}

impl RejectReason {
    /// A stable reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BlockedValue => "blocked_value",
            RejectReason::MaxPerType => "max_per_type",
            RejectReason::MaxIdentifiers => "max_identifiers",
        }
    }
}

/// A refused link between the event's anchor identifier and another identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The event's highest-priority usable identifier.
    pub anchor: Identifier,
    /// The identifier that was not linked.
    pub other: Identifier,
    /// Which guard refused it.
    pub reason: RejectReason,
}

/// What linking the identifiers of one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOutcome {
    /// Key identifier of the customer the event belongs to, after linking.
    pub key: Identifier,
    /// Key identifiers of customers that existed before and are now part of
    /// `key` (never `key` itself).
    pub absorbed: Vec<Identifier>,
    /// Links applied that joined two previously separate sets (or a new identifier).
    pub linked: Vec<(Identifier, Identifier)>,
    /// Links refused by a guard.
    pub rejected: Vec<Rejection>,
}

/// What [`IdentityGraph::link_nodes`] did, by node number and by index
/// into the identifiers linked.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeLinks {
    /// Key node of the customer the identifiers belong to, after linking.
    pub key: u32,
    /// Key nodes of customers that existed before and are now part of
    /// `key` (never `key` itself).
    pub absorbed: Vec<u32>,
    /// Indices of the identifiers joined to the first one's set (new, or
    /// of another set).
    pub linked: Vec<usize>,
    /// Indices of the identifiers a guard kept out, and why.
    pub rejected: Vec<(usize, RejectReason)>,
}

/// A node's place in the union-find: 16 bytes per identifier, no
/// allocation of its own.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Union-find parent (itself at a root).
    parent: u32,
    /// The next member of the node's set: the members form a ring, so two
    /// sets join by swapping two `next`s.
    next: u32,
    /// At a root: the set's key node.
    key: u32,
    /// At a root: the number of members (0 for a forgotten node).
    size: u32,
}

impl Link {
    fn alone(n: u32) -> Link {
        Link {
            parent: n,
            next: n,
            key: n,
            size: 1,
        }
    }
}

/// Union-find over identifiers. Every set's key is its highest-priority member,
/// so the key does not depend on the order in which links arrived.
#[derive(Debug, Clone)]
pub struct IdentityGraph {
    priority: Priority,
    guards: Guards,
    nodes: Nodes,
    links: Vec<Link>,
    /// Number of sets (customers).
    customers: usize,
    /// Identifiers whose customer key changed since the last `take_dirty`.
    dirty: Vec<u32>,
    /// Identifiers forgotten since the last `take_dirty`.
    forgotten: Vec<Identifier>,
    /// Nodes added since the last `take_dirty` (never written as a
    /// customer key, so a key they lose needs no deletion).
    fresh: NodeSet,
    /// Nodes that stopped being their customer's key since the last
    /// `take_dirty`.
    deposed: NodeSet,
    /// Keys of customers forgotten since the last `take_dirty`.
    forgotten_keys: Vec<String>,
    /// Slots of forgotten nodes, reusable once nothing refers to them
    /// (see [`IdentityGraph::recycle_forgotten`]).
    forgotten_slots: Vec<u32>,
}

/// What changed in the graph since the last take: the records a state
/// store writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityChanges {
    /// Identifiers whose key changed (or that are new), with their key
    /// identifier; forgotten ones first, with none.
    pub identities: Vec<(Identifier, Option<Identifier>)>,
    /// Customers whose members changed, by key, with all their members
    /// (sorted); customers that no longer exist under a key (merged into
    /// another, or forgotten), with none. In key order.
    pub customers: Vec<(String, Option<Vec<Identifier>>)>,
}

impl IdentityGraph {
    /// An empty graph.
    pub fn new(priority: Priority, guards: Guards) -> Self {
        IdentityGraph {
            priority,
            guards,
            nodes: Nodes::default(),
            links: Vec::new(),
            customers: 0,
            dirty: Vec::new(),
            forgotten: Vec::new(),
            fresh: Default::default(),
            deposed: Default::default(),
            forgotten_keys: Vec::new(),
            forgotten_slots: Vec::new(),
        }
    }

    /// Rebuilds a graph from `(identifier, key identifier)` pairs, as stored by
    /// [`IdentityGraph::take_dirty`]. Every set is taken as it was: guards are
    /// not re-checked.
    pub fn restore(
        priority: Priority,
        guards: Guards,
        pairs: impl IntoIterator<Item = (Identifier, Identifier)>,
    ) -> Self {
        let mut g = IdentityGraph::new(priority, guards);
        for (id, key) in pairs {
            let (k, _) = g.intern(&key);
            let (n, _) = g.intern(&id);
            let (rk, rn) = (g.find(k), g.find(n));
            if rk != rn {
                g.union(rk, rn);
            }
        }
        g.settle();
        g
    }

    /// Forgets what changed so far: the graph is as stored.
    fn settle(&mut self) {
        self.dirty.clear();
        self.fresh.clear();
        self.deposed.clear();
    }

    /// Identifiers whose customer key changed (or that are new) since the last
    /// call, with their current key identifier; forgotten ones (see
    /// [`IdentityGraph::forget`]) first, with none.
    pub fn take_dirty(&mut self) -> Vec<(Identifier, Option<Identifier>)> {
        self.take_changes().identities
    }

    /// What changed since the last call (or [`IdentityGraph::take_dirty`]):
    /// identifiers and customers.
    pub fn take_changes(&mut self) -> IdentityChanges {
        let mut nodes = std::mem::take(&mut self.dirty);
        nodes.sort_unstable();
        nodes.dedup();
        nodes.retain(|&n| self.nodes.is_live(n));
        let forgotten = std::mem::take(&mut self.forgotten);
        let identities: Vec<(Identifier, Option<Identifier>)> = forgotten
            .into_iter()
            .map(|id| (id, None))
            .chain(nodes.iter().map(|&n| {
                let key = self.key_readonly(n);
                (self.nodes.identifier(n), Some(self.nodes.identifier(key)))
            }))
            .collect();
        let mut roots: Vec<u32> = nodes.iter().map(|&n| self.find_readonly(n)).collect();
        roots.sort_unstable();
        roots.dedup();
        let mut customers: Vec<(String, Option<Vec<Identifier>>)> =
            std::mem::take(&mut self.forgotten_keys)
                .into_iter()
                .map(|key| (key, None))
                .collect();
        for n in self.deposed.drain() {
            if self.nodes.is_live(n) && !self.fresh.contains(n) && self.key_readonly(n) != n {
                customers.push((self.nodes.key(n), None));
            }
        }
        self.fresh.clear();
        for r in roots {
            let key = self.links[r as usize].key;
            customers.push((self.nodes.key(key), Some(self.members_of_node(r))));
        }
        // One record per key, a customer's members over its deletion (a
        // key forgotten and linked again since the last take): members
        // sort first and are kept.
        customers.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.is_some().cmp(&a.1.is_some())));
        customers.dedup_by(|later, kept| later.0 == kept.0);
        IdentityChanges {
            identities,
            customers,
        }
    }

    /// Whether anything changed since the last take.
    pub(crate) fn has_changes(&self) -> bool {
        !(self.dirty.is_empty()
            && self.forgotten.is_empty()
            && self.deposed.is_empty()
            && self.forgotten_keys.is_empty())
    }

    /// Adds a stored customer (its members, as [`IdentityChanges::customers`]
    /// gives them) without reporting it as changed: the graph pages it in.
    /// Members already known are joined too (guards are not re-checked).
    pub(crate) fn adopt(&mut self, members: &[Identifier]) {
        let mut root = None;
        for id in members {
            let n = match self.nodes.find(id) {
                Some(n) => n,
                None => self.add(id),
            };
            let r = self.find(n);
            root = Some(match root {
                Some(root) if root != r => self.join(root, r, false),
                _ => r,
            });
        }
    }

    /// Drops the customer of live node `n` from memory without reporting
    /// it (its stored state is current): the graph pages it out. Returns
    /// how many identifiers it held. Its slots are reused: whoever refers
    /// to them must be done with them.
    pub(crate) fn evict(&mut self, n: u32) -> usize {
        let members = self.ring(n).collect::<Vec<u32>>();
        for &m in &members {
            self.nodes.release(m);
            self.links[m as usize] = Link {
                size: 0,
                ..Link::alone(m)
            };
        }
        self.customers -= 1;
        members.len()
    }

    /// The key nodes of the customers held, for eviction.
    pub(crate) fn key_nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.links
            .iter()
            .enumerate()
            .filter(|&(i, l)| l.parent == i as u32 && l.size > 0)
            .map(|(_, l)| l.key)
    }

    /// Makes the slots of nodes forgotten so far reusable: call only when
    /// nothing refers to them any more (their changes are written).
    pub(crate) fn recycle_forgotten(&mut self) {
        for n in std::mem::take(&mut self.forgotten_slots) {
            self.nodes.recycle(n);
        }
    }

    /// Estimated bytes the graph holds in memory: per identifier its node,
    /// link, index entry and value.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.len() * 40 + self.nodes.value_bytes()
    }

    /// Forgets the customer an identifier belongs to: all its identifiers
    /// become unknown (reported by [`IdentityGraph::take_dirty`] with no key).
    /// Returns them, sorted. Their slots stay allocated, empty, until the
    /// graph is rebuilt from storage (or, in a paging engine, the change is
    /// written).
    pub fn forget(&mut self, id: &Identifier) -> Vec<Identifier> {
        match self.nodes.find(id) {
            Some(n) => self.forget_node(n),
            None => Vec::new(),
        }
    }

    /// [`IdentityGraph::forget`] the customer of node `n`.
    pub(crate) fn forget_node(&mut self, n: u32) -> Vec<Identifier> {
        let root = self.find(n);
        let members = self.ring(root).collect::<Vec<u32>>();
        let mut out = Vec::with_capacity(members.len());
        self.forgotten_keys
            .push(self.nodes.key(self.links[root as usize].key));
        for &m in &members {
            // A key it lost since the last take goes with it.
            if self.deposed.remove(m) && !self.fresh.contains(m) {
                self.forgotten_keys.push(self.nodes.key(m));
            }
        }
        for m in members {
            out.push(self.nodes.forget(m));
            self.links[m as usize] = Link {
                size: 0,
                ..Link::alone(m)
            };
            self.forgotten_slots.push(m);
        }
        self.customers -= 1;
        out.sort();
        self.forgotten.extend(out.iter().cloned());
        out
    }

    /// The priority used for keys.
    pub fn priority(&self) -> &Priority {
        &self.priority
    }

    /// Number of identifiers known.
    pub fn identifier_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of customers (connected sets).
    pub fn customer_count(&self) -> usize {
        self.customers
    }

    fn find(&mut self, mut x: u32) -> u32 {
        let mut root = x;
        while self.links[root as usize].parent != root {
            root = self.links[root as usize].parent;
        }
        while self.links[x as usize].parent != root {
            let next = self.links[x as usize].parent;
            self.links[x as usize].parent = root;
            x = next;
        }
        root
    }

    fn find_readonly(&self, mut x: u32) -> u32 {
        while self.links[x as usize].parent != x {
            x = self.links[x as usize].parent;
        }
        x
    }

    /// The key node of node `n`'s set.
    fn key_readonly(&self, n: u32) -> u32 {
        self.links[self.find_readonly(n) as usize].key
    }

    /// The members of node `n`'s set, starting at `n`.
    fn ring(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        ring(&self.links, n)
    }

    /// The customer key of an identifier, if it is known.
    pub fn key_of(&self, id: &Identifier) -> Option<String> {
        let n = self.nodes.find(id)?;
        Some(self.nodes.key(self.key_readonly(n)))
    }

    /// The key identifier a set of identifiers would have if they were linked
    /// now, without linking them (guards not applied): the best of their
    /// current keys. None for an empty list.
    pub fn resolve(&self, ids: &[Identifier]) -> Option<Identifier> {
        ids.iter()
            .map(|id| match self.nodes.find(id) {
                Some(n) => self.nodes.identifier(self.key_readonly(n)),
                None => id.clone(),
            })
            .min_by(|a, b| self.priority.compare(a, b))
    }

    /// All identifiers of the customer an identifier belongs to, sorted.
    pub fn members_of(&self, id: &Identifier) -> Vec<Identifier> {
        self.nodes
            .find(id)
            .map(|n| self.members_of_node(n))
            .unwrap_or_default()
    }

    /// All identifiers of the customer node `n` belongs to, sorted.
    pub(crate) fn members_of_node(&self, n: u32) -> Vec<Identifier> {
        let mut out: Vec<Identifier> = self.ring(n).map(|m| self.nodes.identifier(m)).collect();
        out.sort_unstable();
        out
    }

    /// The key node of the customer all of `ids` already belong to, if they
    /// are all known and in one set: linking them would change nothing.
    /// Allocates nothing (the hot path of the engine: most events carry
    /// identifiers seen before).
    pub(crate) fn settled_node(&mut self, ids: &[Identifier]) -> Option<u32> {
        let (first, rest) = ids.split_first()?;
        let n = self.nodes.find(first)?;
        let root = self.find(n);
        for other in rest {
            match self.nodes.find(other) {
                Some(m) if self.find(m) == root => {}
                _ => return None,
            }
        }
        Some(self.links[root as usize].key)
    }

    /// The node of a customer key as written (`type:value`, see
    /// [`Identifier::from_key`]): a journey read from storage is held under
    /// it. A key the graph does not know (state written without its
    /// identifiers) becomes a customer of its own, not reported as changed.
    pub(crate) fn key_node(&mut self, key: &str) -> u32 {
        if let Some(n) = self.node_of_key(key) {
            return n;
        }
        let id = Identifier::from_key(key).unwrap_or_else(|| Identifier {
            kind: "".into(),
            value: key.to_string(),
        });
        let (n, _) = self.intern(&id);
        self.dirty.retain(|&d| d != n);
        self.fresh.remove(n);
        n
    }

    /// The nodes of the customer node `n` belongs to.
    pub(crate) fn member_nodes(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        self.ring(n)
    }

    /// Whether node `n` is a live identifier (not forgotten).
    pub(crate) fn is_live(&self, n: u32) -> bool {
        self.nodes.is_live(n)
    }

    /// The node of a customer key as written, if known.
    pub(crate) fn node_of_key(&self, key: &str) -> Option<u32> {
        let (kind, value) = key.split_once(':')?;
        self.nodes.find_parts(kind, value)
    }

    /// Splits identifiers into usable (normalised, deduplicated, highest priority
    /// first) and blocked ones.
    pub fn usable(&self, ids: &[Identifier]) -> (Vec<Identifier>, Vec<Identifier>) {
        self.usable_owned(ids.to_vec())
    }

    /// [`IdentityGraph::usable`] on an owned list, normalising in place.
    pub fn usable_owned(&self, mut ids: Vec<Identifier>) -> (Vec<Identifier>, Vec<Identifier>) {
        ids.iter_mut().for_each(Identifier::normalize);
        let usable = |i: &Identifier| !i.kind.is_empty() && !self.guards.is_blocked(&i.value);
        if ids.iter().all(usable) {
            // The common case, without a second list.
            ids.sort_by(|a, b| self.priority.compare(a, b));
            ids.dedup();
            return (ids, Vec::new());
        }
        let (mut ok, blocked): (Vec<Identifier>, Vec<Identifier>) =
            ids.into_iter().partition(|i| usable(i));
        ok.sort_by(|a, b| self.priority.compare(a, b));
        ok.dedup();
        (ok, blocked)
    }

    fn intern(&mut self, id: &Identifier) -> (u32, bool) {
        if let Some(n) = self.nodes.find(id) {
            return (n, false);
        }
        let n = self.add(id);
        self.dirty.push(n);
        self.fresh.insert(n);
        (n, true)
    }

    /// Adds an identifier not known yet as a customer of its own.
    fn add(&mut self, id: &Identifier) -> u32 {
        let n = self.nodes.push(id, &self.priority);
        match self.links.get_mut(n as usize) {
            Some(slot) => *slot = Link::alone(n),
            None => self.links.push(Link::alone(n)),
        }
        self.customers += 1;
        n
    }

    /// Why the sets of roots `a` and `b` may not join, if a guard refuses.
    fn guard(&self, a: u32, b: u32) -> Option<RejectReason> {
        let size = |r: u32| self.links[r as usize].size as usize;
        if size(a) + size(b) > self.guards.max_identifiers {
            return Some(RejectReason::MaxIdentifiers);
        }
        for (kind, &max) in &self.guards.max_per_type {
            let Some(kind) = self.nodes.kind_id(kind) else {
                continue;
            };
            let count = self
                .ring(a)
                .chain(self.ring(b))
                .filter(|&m| self.nodes.kind_of(m) == kind)
                .count();
            if count > max {
                return Some(RejectReason::MaxPerType);
            }
        }
        None
    }

    /// Links usable identifiers (as returned by [`IdentityGraph::usable`], highest
    /// priority first): each is joined to the first one's set unless a guard refuses.
    ///
    /// Panics if `ids` is empty.
    pub fn link(&mut self, ids: &[Identifier]) -> LinkOutcome {
        let mut links = NodeLinks::default();
        self.link_nodes(ids, &mut links);
        LinkOutcome {
            key: self.nodes.identifier(links.key),
            absorbed: links
                .absorbed
                .iter()
                .map(|&n| self.nodes.identifier(n))
                .collect(),
            linked: links
                .linked
                .iter()
                .map(|&i| (ids[0].clone(), ids[i].clone()))
                .collect(),
            rejected: links
                .rejected
                .iter()
                .map(|&(i, reason)| Rejection {
                    anchor: ids[0].clone(),
                    other: ids[i].clone(),
                    reason,
                })
                .collect(),
        }
    }

    /// [`IdentityGraph::link`] by node number, into `out` (cleared first, so
    /// a caller can reuse its lists): copies no identifier.
    pub(crate) fn link_nodes(&mut self, ids: &[Identifier], out: &mut NodeLinks) {
        out.absorbed.clear();
        out.linked.clear();
        out.rejected.clear();
        if let [only] = ids
            && let Some(n) = self.nodes.find(only)
        {
            let root = self.find(n);
            out.key = self.links[root as usize].key;
            return;
        }
        let (anchor, _) = self.intern(&ids[0]);
        let mut root = self.find(anchor);
        out.absorbed.push(self.links[root as usize].key);
        for (i, other) in ids.iter().enumerate().skip(1) {
            let (n, fresh) = self.intern(other);
            let other_root = self.find(n);
            if other_root == root {
                continue;
            }
            if let Some(reason) = self.guard(root, other_root) {
                if fresh {
                    // A fresh identifier that could not join stays unknown.
                    self.forget_fresh(n);
                }
                out.rejected.push((i, reason));
                continue;
            }
            if !fresh {
                out.absorbed.push(self.links[other_root as usize].key);
            }
            out.linked.push(i);
            root = self.union(root, other_root);
        }
        let key = self.links[root as usize].key;
        out.key = key;
        out.absorbed.retain(|&k| k != key);
    }

    /// The node of an identifier, if known.
    pub(crate) fn node(&self, id: &Identifier) -> Option<u32> {
        self.nodes.find(id)
    }

    /// Node `n` written as a customer key, `type:value`.
    pub(crate) fn node_key(&self, n: u32) -> String {
        self.nodes.key(n)
    }

    /// `Less` when node `a` has the higher priority.
    pub(crate) fn compare_nodes(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.nodes.compare(a, b)
    }

    /// Removes node `n`, just added and still alone.
    fn forget_fresh(&mut self, n: u32) {
        self.nodes.unpush(n);
        if n as usize >= self.nodes.slots() {
            self.links.truncate(self.nodes.slots());
        }
        self.customers -= 1;
        self.dirty.retain(|&d| d != n);
        self.fresh.remove(n);
    }

    /// Joins the sets of roots `a` and `b`, reporting the members whose key
    /// changes (and the key they lose); returns the new root.
    fn union(&mut self, a: u32, b: u32) -> u32 {
        self.join(a, b, true)
    }

    /// Joins the sets of roots `a` and `b`, reporting the change or not;
    /// returns the new root.
    fn join(&mut self, a: u32, b: u32, report: bool) -> u32 {
        let (la, lb) = (self.links[a as usize], self.links[b as usize]);
        let (big, small) = if la.size >= lb.size { (a, b) } else { (b, a) };
        let (big_key, small_key) = (self.links[big as usize].key, self.links[small as usize].key);
        // The members whose key changes are the other set's.
        let (changed, key) = if self.nodes.compare(small_key, big_key) == std::cmp::Ordering::Less {
            (big, small_key)
        } else {
            (small, big_key)
        };
        if report {
            self.dirty.extend(ring(&self.links, changed));
            self.deposed.insert(self.links[changed as usize].key);
        }
        // Join the rings, then hang the small tree under the big one.
        self.links[a as usize].next = lb.next;
        self.links[b as usize].next = la.next;
        let root = &mut self.links[big as usize];
        root.key = key;
        root.size = la.size + lb.size;
        self.links[small as usize].parent = big;
        self.customers -= 1;
        big
    }
}

/// The members of node `n`'s set in `links`, starting at `n`.
fn ring(links: &[Link], n: u32) -> impl Iterator<Item = u32> + '_ {
    let mut at = Some(n);
    std::iter::from_fn(move || {
        let here = at?;
        let next = links[here as usize].next;
        at = (next != n).then_some(next);
        Some(here)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &str, v: &str) -> Identifier {
        Identifier::new(k, v)
    }

    fn graph() -> IdentityGraph {
        IdentityGraph::new(Priority::default(), Guards::default())
    }

    fn link(g: &mut IdentityGraph, ids: &[Identifier]) -> LinkOutcome {
        let (ok, _) = g.usable(ids);
        g.link(&ok)
    }

    #[test]
    fn key_is_highest_priority_whatever_the_order() {
        let mut a = graph();
        link(&mut a, &[id("anonymous_id", "c1"), id("email", "x@y")]);
        link(&mut a, &[id("email", "x@y"), id("customer_id", "C-1")]);
        let mut b = graph();
        link(&mut b, &[id("email", "x@y"), id("customer_id", "C-1")]);
        link(&mut b, &[id("anonymous_id", "c1"), id("email", "x@y")]);
        for g in [&a, &b] {
            assert_eq!(
                g.key_of(&id("anonymous_id", "c1")).unwrap(),
                "customer_id:C-1"
            );
        }
    }

    #[test]
    fn merge_reports_absorbed_keys() {
        let mut g = graph();
        link(&mut g, &[id("anonymous_id", "a")]);
        link(&mut g, &[id("device_id", "d")]);
        let out = link(&mut g, &[id("anonymous_id", "a"), id("device_id", "d")]);
        assert_eq!(out.key, id("device_id", "d"));
        assert_eq!(out.absorbed, vec![id("anonymous_id", "a")]);
    }

    #[test]
    fn longest_default_blocked_value_is_the_one_the_fast_path_assumes() {
        let longest = DEFAULT_BLOCKED.iter().map(|b| b.len()).max();
        assert_eq!(longest, Some(LONGEST_DEFAULT_BLOCKED));
        assert!(Guards::default().is_blocked(" Undefined "));
        assert!(!Guards::default().is_blocked("undefined-but-longer"));
    }

    #[test]
    fn blocked_values_are_not_usable() {
        let g = graph();
        let (ok, blocked) = g.usable(&[
            id("email", " NULL "),
            id("anonymous_id", "x"),
            id("phone", "0"),
        ]);
        assert_eq!(ok, vec![id("anonymous_id", "x")]);
        assert_eq!(blocked.len(), 2);
        let custom = IdentityGraph::new(
            Priority::default(),
            Guards {
                blocked_values: vec!["test@test.com".into()],
                ..Guards::default()
            },
        );
        let (ok, _) = custom.usable(&[id("email", "TEST@test.com")]);
        assert!(ok.is_empty());
    }

    #[test]
    fn second_customer_id_is_refused() {
        let mut g = graph();
        link(&mut g, &[id("customer_id", "C-1"), id("email", "shared@x")]);
        link(&mut g, &[id("customer_id", "C-2")]);
        let out = link(&mut g, &[id("customer_id", "C-2"), id("email", "shared@x")]);
        assert_eq!(out.key, id("customer_id", "C-2"));
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].reason, RejectReason::MaxPerType);
        assert_eq!(
            g.key_of(&id("email", "shared@x")).unwrap(),
            "customer_id:C-1"
        );
    }

    #[test]
    fn identifier_cap_is_enforced_and_refused_fresh_ids_stay_unknown() {
        let mut g = IdentityGraph::new(
            Priority::default(),
            Guards {
                max_identifiers: 2,
                ..Guards::default()
            },
        );
        link(&mut g, &[id("email", "a@x"), id("anonymous_id", "1")]);
        let out = link(&mut g, &[id("email", "a@x"), id("anonymous_id", "2")]);
        assert_eq!(out.rejected[0].reason, RejectReason::MaxIdentifiers);
        assert_eq!(g.key_of(&id("anonymous_id", "2")), None);
        assert_eq!(g.members_of(&id("email", "a@x")).len(), 2);
    }

    #[test]
    fn customer_records_follow_merges_and_forgetting() {
        let mut g = graph();
        link(&mut g, &[id("anonymous_id", "a")]);
        link(&mut g, &[id("anonymous_id", "b")]);
        let first = g.take_changes();
        assert_eq!(
            first.customers,
            vec![
                ("anonymous_id:a".into(), Some(vec![id("anonymous_id", "a")])),
                ("anonymous_id:b".into(), Some(vec![id("anonymous_id", "b")])),
            ]
        );
        // An email joins both: the two stored keys are deleted, the new one
        // holds all three; the email's own fresh key never was written.
        link(&mut g, &[id("email", "x@y"), id("anonymous_id", "a")]);
        link(&mut g, &[id("email", "x@y"), id("anonymous_id", "b")]);
        let merged = vec![
            id("anonymous_id", "a"),
            id("anonymous_id", "b"),
            id("email", "x@y"),
        ];
        assert_eq!(
            g.take_changes().customers,
            vec![
                ("anonymous_id:a".into(), None),
                ("anonymous_id:b".into(), None),
                ("email:x@y".into(), Some(merged.clone())),
            ]
        );
        // Paged out and back in: the same customer, nothing to write.
        let n = g.node(&id("anonymous_id", "b")).unwrap();
        assert_eq!(g.evict(n), 3);
        assert_eq!((g.customer_count(), g.identifier_count()), (0, 0));
        g.adopt(&merged);
        assert_eq!(g.key_of(&id("anonymous_id", "a")).unwrap(), "email:x@y");
        assert_eq!(g.members_of(&id("email", "x@y")), merged);
        assert_eq!(g.take_changes(), IdentityChanges::default());
        g.forget(&id("email", "x@y"));
        assert_eq!(g.take_changes().customers, vec![("email:x@y".into(), None)]);
    }

    #[test]
    fn unknown_types_rank_below_known_ones() {
        let mut g = graph();
        let out = link(&mut g, &[id("zz_partner", "p1"), id("anonymous_id", "a")]);
        assert_eq!(out.key, id("anonymous_id", "a"));
        let out = link(&mut g, &[id("aa_partner", "p2")]);
        assert_eq!(out.key, id("aa_partner", "p2"));
    }
}
