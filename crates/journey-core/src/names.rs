//! Shared names: channels, event types, models and stages.
//!
//! A journey holds a channel and an event type per touchpoint and a counter
//! per channel; a transition names its model, stages, channels and trigger.
//! These names are few and repeated endlessly, so they are shared
//! ([`Name`]: cloning one copies a pointer) and an engine keeps one copy of
//! each ([`Names`]).

use std::sync::Arc;

/// A shared name: serialised as a plain string, cloned by reference count.
pub type Name = Arc<str>;

/// At most this many distinct names are kept shared; names beyond it (a
/// stream of ever-new channel strings, say) are still correct, only not
/// shared, so memory stays bounded whatever the input.
const MAX_SHARED: usize = 4096;

/// Slots of the cache in front of the set (a power of two).
const RECENT: usize = 64;

/// The names an engine has seen, one copy each (bounded: see `MAX_SHARED`).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    known: rustc_hash::FxHashSet<Name>,
    /// Names found lately, each in a slot picked from its length and a few
    /// of its bytes: an event's channel and type are two of a few dozen
    /// names, mostly found here by one comparison instead of a hash lookup.
    recent: Box<[Option<Name>]>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            known: Default::default(),
            recent: vec![None; RECENT].into_boxed_slice(),
        }
    }
}

/// The cache slot of `name` (any function of the name would be correct).
fn slot(name: &str) -> usize {
    let b = name.as_bytes();
    let (first, mid, last) = match b {
        [] => (0, 0, 0),
        _ => (b[0], b[b.len() / 2], b[b.len() - 1]),
    };
    (b.len() ^ (first as usize) << 1 ^ (mid as usize) << 2 ^ (last as usize) << 3) % RECENT
}

/// `a == b`, for the short names of the cache without a call to `memcmp`:
/// up to 16 bytes are compared as two overlapping words.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

impl Names {
    /// The shared copy of `name`, added if new (and there is room).
    pub(crate) fn get(&mut self, name: &str) -> Name {
        let slot = &mut self.recent[slot(name)];
        if let Some(hit) = slot.as_ref().filter(|n| same(n, name)) {
            return hit.clone();
        }
        if let Some(known) = self.known.get(name) {
            *slot = Some(known.clone());
            return known.clone();
        }
        let fresh: Name = name.into();
        if self.known.len() < MAX_SHARED {
            self.known.insert(fresh.clone());
            *slot = Some(fresh.clone());
        }
        fresh
    }

    /// [`Names::get`] for a name already held as a [`Name`] (read back
    /// from storage, say): the shared copy if there is one, else this one,
    /// kept.
    pub(crate) fn share(&mut self, name: &mut Name) {
        match self.known.get(&**name) {
            Some(known) => *name = known.clone(),
            None if self.known.len() < MAX_SHARED => {
                self.known.insert(name.clone());
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_name_and_bounded() {
        let mut names = Names::default();
        let a = names.get("web");
        let b = names.get("web");
        assert!(Arc::ptr_eq(&a, &b));
        let mut c: Name = "web".into();
        names.share(&mut c);
        assert!(Arc::ptr_eq(&a, &c));
        for i in 0..MAX_SHARED + 10 {
            assert_eq!(&*names.get(&format!("n{i}")), format!("n{i}"));
        }
        assert_eq!(names.known.len(), MAX_SHARED);
        // Names the set is full for are never cached as shared ones.
        let late = format!("n{}", MAX_SHARED + 5);
        assert!(!Arc::ptr_eq(&names.get(&late), &names.get(&late)));
    }

    #[test]
    fn names_that_share_a_cache_slot_each_get_their_own_copy() {
        let mut names = Names::default();
        let words: Vec<String> = (0..500).map(|i| format!("name-{i}")).collect();
        let first: Vec<Name> = words.iter().map(|w| names.get(w)).collect();
        for _ in 0..2 {
            for (w, f) in words.iter().zip(&first) {
                let again = names.get(w);
                assert_eq!(&*again, w.as_str());
                assert!(Arc::ptr_eq(&again, f));
            }
        }
        assert!(Arc::ptr_eq(&names.get(""), &names.get("")));
    }

    #[test]
    fn same_compares_every_byte_at_every_length() {
        for n in 0..40 {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same(&a, &a.clone()));
            assert!(!same(&a, &format!("{a}x")));
            for i in 0..n {
                let mut b = a.clone().into_bytes();
                b[i] = b'Z';
                assert!(!same(&a, std::str::from_utf8(&b).unwrap()), "{a} at {i}");
            }
        }
    }
}
