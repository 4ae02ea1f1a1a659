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

/// The names an engine has seen, one copy each (bounded: see `MAX_SHARED`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    known: rustc_hash::FxHashSet<Name>,
}

impl Names {
    /// The shared copy of `name`, added if new (and there is room).
    pub(crate) fn get(&mut self, name: &str) -> Name {
        if let Some(known) = self.known.get(name) {
            return known.clone();
        }
        let fresh: Name = name.into();
        if self.known.len() < MAX_SHARED {
            self.known.insert(fresh.clone());
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
    }
}
