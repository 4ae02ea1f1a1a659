use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::Name;

/// An identifier of a person: `(type, value)`, e.g. `(email, ana@example.com)`.
///
/// Build it with [`Identifier::new`], which normalises: the type is trimmed and
/// lower-cased, the value trimmed, and e-mail values lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// Identifier type, e.g. `customer_id`, `email`, `anonymous_id`
    /// (written `type` in JSON, as in the Avro schema). A shared name: the
    /// types are few, so the engine's copies of an identifier (in
    /// transitions, merges, links) share one type string.
    #[serde(rename = "type")]
    pub kind: Name,
    /// Identifier value.
    pub value: String,
}

impl Identifier {
    /// A normalised identifier.
    pub fn new(kind: &str, value: &str) -> Self {
        let kind = kind.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = if kind == "email" {
            value.to_lowercase()
        } else {
            value.to_owned()
        };
        Identifier {
            kind: Identifier::type_name(&kind),
            value,
        }
    }

    /// A type name as identifiers hold it: the default priority's types
    /// (`customer_id`, `email`, ...) are one shared copy each, so an
    /// identifier of one of them holds no type string of its own (and the
    /// identity graph recognises its type by pointer); others are a new name.
    /// Taken as given: no normalisation.
    pub fn type_name(kind: &str) -> Name {
        match shared_types().iter().find(|k| ***k == *kind) {
            Some(shared) => shared.clone(),
            None => kind.into(),
        }
    }

    /// Normalises in place, allocating only when something changes.
    pub fn normalize(&mut self) {
        let shared = shared_types();
        // A shared default type is normalised already: recognised by pointer.
        let is_shared = shared.iter().any(|k| Name::ptr_eq(k, &self.kind));
        let kind_ok = is_shared
            || !needs_trim(&self.kind) && !self.kind.bytes().any(|b| b.is_ascii_uppercase());
        if !kind_ok {
            self.kind = Identifier::type_name(&self.kind.trim().to_ascii_lowercase());
        }
        let is_email = if is_shared {
            Name::ptr_eq(&self.kind, &shared[EMAIL])
        } else {
            &*self.kind == "email"
        };
        let value_ok = !needs_trim(&self.value) && (!is_email || !lowercase_changes(&self.value));
        if !value_ok {
            *self = Identifier::new(&self.kind, &self.value);
        }
    }

    /// The written form `type:value`, which is also a customer key.
    pub fn key(&self) -> String {
        key_of(&self.kind, &self.value)
    }

    /// [`Identifier::key`] written into `buf` (cleared first), reusing its
    /// allocation.
    pub fn write_key(&self, buf: &mut String) {
        write_key(&self.kind, &self.value, buf);
    }

    /// The identifier of a customer key (the inverse of [`Identifier::key`],
    /// taken as written: no normalisation); none without a `:`.
    pub fn from_key(key: &str) -> Option<Identifier> {
        let (kind, value) = key.split_once(':')?;
        Some(Identifier {
            kind: kind.into(),
            value: value.into(),
        })
    }
}

/// Whether `s` is empty or white space only, without a trim in the common
/// case (text that starts with a printable ASCII character).
pub(crate) fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_graphic() => false,
        Some(_) => s.trim().is_empty(),
    }
}

/// Whether `s` starts or ends with white space (what `str::trim` removes),
/// looking at its first and last characters only.
pub(crate) fn needs_trim(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(char::is_whitespace);
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&a), Some(&b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => false,
        _ => edge(s.chars().next()) || edge(s.chars().next_back()),
    }
}

/// Whether `s` has a character that `to_lowercase` changes (upper case,
/// and title case such as `ǅ`): one pass over the bytes, by character only
/// from the first non-ASCII one.
fn lowercase_changes(s: &str) -> bool {
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_uppercase() {
            return true;
        }
        if !b.is_ascii() {
            return s[i..].chars().any(|c| {
                let mut lower = c.to_lowercase();
                !(lower.next() == Some(c) && lower.next().is_none())
            });
        }
    }
    false
}

/// The customer key `kind:value`, in a string of its size.
pub(crate) fn key_of(kind: &str, value: &str) -> String {
    // Sized up front: `write_key`'s reserve is then only a check.
    let mut key = String::with_capacity(kind.len() + 1 + value.len());
    write_key(kind, value, &mut key);
    key
}

/// Writes the customer key `kind:value` into `buf` (cleared first): the one
/// place that knows how a key is written.
pub(crate) fn write_key(kind: &str, value: &str, buf: &mut String) {
    buf.clear();
    buf.reserve(kind.len() + 1 + value.len());
    buf.push_str(kind);
    buf.push(':');
    buf.push_str(value);
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Priority of identifier types: the customer key of a set of identifiers is its
/// highest-priority member (ties broken by the smallest value).
///
/// Types not listed rank below every listed type, ordered among themselves by
/// type name, so the key stays a deterministic function of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PriorityOrder", into = "PriorityOrder")]
pub struct Priority {
    order: Vec<String>,
    /// The rank of each shared default type ([`shared_types`]) in this
    /// order: an identifier of one is ranked by its type's pointer, without
    /// comparing type names.
    shared_ranks: [usize; DEFAULT_TYPES.len()],
}

/// How a [`Priority`] is written: its order only.
#[derive(Serialize, Deserialize)]
struct PriorityOrder {
    order: Vec<String>,
}

impl From<PriorityOrder> for Priority {
    fn from(p: PriorityOrder) -> Self {
        Priority::with_order(p.order)
    }
}

impl From<Priority> for PriorityOrder {
    fn from(p: Priority) -> Self {
        PriorityOrder { order: p.order }
    }
}

/// The rank of a type in `order`: its place, or after every type of the
/// order for one not in it.
fn rank_in(order: &[String], kind: &str) -> usize {
    order.iter().position(|k| k == kind).unwrap_or(order.len())
}

/// The default priority of identifier types, highest first.
const DEFAULT_TYPES: [&str; 6] = [
    "customer_id",
    "email",
    "phone",
    "loyalty_id",
    "device_id",
    "anonymous_id",
];

/// Where `email` is in [`DEFAULT_TYPES`].
const EMAIL: usize = 1;

/// [`DEFAULT_TYPES`] as shared names, one copy each for the process (see
/// [`Identifier::type_name`]).
fn shared_types() -> &'static [Name; DEFAULT_TYPES.len()] {
    static SHARED: LazyLock<[Name; DEFAULT_TYPES.len()]> =
        LazyLock::new(|| DEFAULT_TYPES.map(Name::from));
    &SHARED
}

impl Default for Priority {
    fn default() -> Self {
        Priority::new(DEFAULT_TYPES.iter().map(|s| s.to_string()).collect())
    }
}

impl Priority {
    /// Highest priority first.
    pub fn new(order: Vec<String>) -> Self {
        Priority::with_order(
            order
                .into_iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
        )
    }

    /// The priority of `order` as given.
    fn with_order(order: Vec<String>) -> Self {
        let shared_ranks = DEFAULT_TYPES.map(|kind| rank_in(&order, kind));
        Priority {
            order,
            shared_ranks,
        }
    }

    /// The configured types, highest priority first.
    pub fn types(&self) -> &[String] {
        &self.order
    }

    /// The rank of a type: its place in the order, or after every
    /// configured type for one not configured.
    pub(crate) fn rank(&self, kind: &str) -> usize {
        rank_in(&self.order, kind)
    }

    /// [`Priority::rank`] of a type name as identifiers hold it.
    fn rank_of(&self, kind: &Name) -> usize {
        match shared_types().iter().position(|k| Name::ptr_eq(k, kind)) {
            Some(i) => self.shared_ranks[i],
            None => self.rank(kind),
        }
    }

    /// `Less` means `a` has the higher priority (it would be the key).
    /// The same order as [`Priority::compare_parts`].
    pub fn compare(&self, a: &Identifier, b: &Identifier) -> Ordering {
        let kinds = || {
            if Name::ptr_eq(&a.kind, &b.kind) {
                Ordering::Equal
            } else {
                a.kind.cmp(&b.kind)
            }
        };
        self.rank_of(&a.kind)
            .cmp(&self.rank_of(&b.kind))
            .then_with(kinds)
            .then_with(|| a.value.cmp(&b.value))
    }

    /// [`Priority::compare`] on `(type, value)` pairs.
    pub fn compare_parts(&self, (ka, va): (&str, &str), (kb, vb): (&str, &str)) -> Ordering {
        self.rank(ka)
            .cmp(&self.rank(kb))
            .then_with(|| ka.cmp(kb))
            .then_with(|| va.cmp(vb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_type_and_email() {
        let id = Identifier::new(" Email ", "  Ana@Example.COM ");
        assert_eq!(&*id.kind, "email");
        assert_eq!(id.value, "ana@example.com");
        let id = Identifier::new("customer_id", " C-1 ");
        assert_eq!(id.value, "C-1", "non-email values keep their case");
    }

    #[test]
    fn blank_and_trim_checks_agree_with_trim() {
        for s in [
            "",
            " ",
            "\t\n",
            "\u{a0}",
            "a",
            " a",
            "a ",
            "\u{2003}x",
            "é",
            "x\u{2003}",
            "ab",
        ] {
            assert_eq!(is_blank(s), s.trim().is_empty(), "{s:?}");
            assert_eq!(needs_trim(s), s.trim() != s, "{s:?}");
        }
    }

    #[test]
    fn normalize_in_place_agrees_with_new() {
        for (kind, value) in [
            ("email", "Ana@X.com"),
            ("email", "ana@x.com"),
            ("email", "ÁNA@x.com"),
            ("email", "ǅoe@x.com"),
            (" EMAIL", "a@x "),
            ("phone", "\u{a0}+1 555\u{2003}"),
            ("device_id", "Dev-1"),
            ("device_id", ""),
            ("", " "),
        ] {
            let mut id = Identifier {
                kind: kind.into(),
                value: value.into(),
            };
            id.normalize();
            assert_eq!(id, Identifier::new(kind, value), "{kind:?} {value:?}");
        }
    }

    #[test]
    fn priority_orders_known_then_unknown_types() {
        let p = Priority::default();
        let c = Identifier::new("customer_id", "Z");
        let e = Identifier::new("email", "a@x");
        let unknown_a = Identifier::new("aaa_id", "1");
        let unknown_z = Identifier::new("zzz_id", "1");
        let anon = Identifier::new("anonymous_id", "1");
        assert_eq!(p.compare(&c, &e), Ordering::Less);
        assert_eq!(p.compare(&anon, &unknown_a), Ordering::Less);
        assert_eq!(p.compare(&unknown_a, &unknown_z), Ordering::Less);
        let c2 = Identifier::new("customer_id", "A");
        assert_eq!(p.compare(&c2, &c), Ordering::Less, "ties by smallest value");
    }

    #[test]
    fn comparing_identifiers_agrees_with_comparing_their_parts() {
        // A configured order that moves, leaves out and adds types; type
        // names shared (built by `new`) and not (built from a fresh name).
        let orders = [
            Priority::default(),
            Priority::new(vec!["device_id".into(), "x_id".into(), "email".into()]),
            Priority::new(Vec::new()),
        ];
        let mut ids: Vec<Identifier> = DEFAULT_TYPES
            .iter()
            .chain(&["x_id", "a_id"])
            .flat_map(|k| [Identifier::new(k, "1"), Identifier::new(k, "2")])
            .collect();
        let unshared: Vec<Identifier> = ids
            .iter()
            .map(|i| Identifier {
                kind: Name::from(&*i.kind),
                value: i.value.clone(),
            })
            .collect();
        ids.extend(unshared);
        for p in &orders {
            for a in &ids {
                for b in &ids {
                    let parts = p.compare_parts((&a.kind, &a.value), (&b.kind, &b.value));
                    assert_eq!(p.compare(a, b), parts, "{a} vs {b} in {p:?}");
                }
            }
            let written = serde_json::to_string(p).unwrap();
            assert!(written.starts_with(r#"{"order":"#), "{written}");
            assert_eq!(&serde_json::from_str::<Priority>(&written).unwrap(), p);
        }
    }

    #[test]
    fn shared_types_normalise_as_their_text_does() {
        assert_eq!(DEFAULT_TYPES[EMAIL], "email");
        for kind in DEFAULT_TYPES.iter().chain(&["zzz_id", "Email"]) {
            for value in ["Ana@X.com", " v ", "v"] {
                let mut id = Identifier {
                    kind: Identifier::type_name(kind),
                    value: value.into(),
                };
                id.normalize();
                assert_eq!(id, Identifier::new(kind, value), "{kind:?} {value:?}");
            }
        }
        let email = Identifier::new("email", "a@x");
        assert!(Name::ptr_eq(
            &email.kind,
            &Identifier::new(" EMAIL", "b@x").kind
        ));
        assert!(!Name::ptr_eq(
            &Identifier::new("zzz_id", "1").kind,
            &Identifier::new("zzz_id", "1").kind
        ));
    }

    #[test]
    fn uppercase_check_agrees_with_lowercasing() {
        for s in [
            "",
            "ana@x.com",
            "Ana@x.com",
            "ana@X",
            "ána@x",
            "áNA",
            "ÁNA",
            "日本",
            "ǅ",
        ] {
            assert_eq!(lowercase_changes(s), s.to_lowercase() != s, "{s:?}");
        }
    }
}
