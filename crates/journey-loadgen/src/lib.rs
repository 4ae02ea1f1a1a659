//! `journey-loadgen`: a seeded, plausible multichannel interaction workload.
//!
//! Customers move through journeys across channels: anonymous web and app
//! visits, later linked to an e-mail by a sign-up or login and to a customer id
//! by a purchase; a second device joins by login; offline store and call-centre
//! events arrive late; a few percent of records are duplicates or malformed.
//! Activity is skewed (a few customers do a lot). Pure: no IO and no clock
//! reads; the same settings and seed give the same stream.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use journey_core::{Event, Identifier, Millis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;

/// Settings of the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Number of distinct customers.
    pub customers: u64,
    /// Seed of the random stream.
    pub seed: u64,
    /// Event time at which the first customers appear.
    pub start_time: Millis,
    /// Customers' first visits spread over this many days.
    pub span_days: u32,
    /// Fraction of records that repeat an earlier event (same event id).
    pub duplicate_rate: f64,
    /// Fraction of records that are malformed.
    pub malformed_rate: f64,
    /// Offline events arrive up to this late (event time behind the stream).
    pub max_offline_delay: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            customers: 10_000,
            seed: 42,
            start_time: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            span_days: 60,
            duplicate_rate: 0.01,
            malformed_rate: 0.001,
            max_offline_delay: 6 * HOUR,
        }
    }
}

/// A kind of malformed record, which the producer turns into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Random bytes, not Avro at all.
    RandomBytes,
    /// A valid frame with a schema id nobody registered.
    UnknownSchemaId,
    /// A valid event cut short.
    Truncated,
    /// A valid Avro event without any identifier.
    NoIdentifier,
}

/// One record of the workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A new event.
    Event(Event),
    /// An event sent again (same id).
    Duplicate(Event),
    /// A malformed record; the event is a valid one to mangle.
    Malformed(Malformed, Event),
}

/// Counters of what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// New events.
    pub events: u64,
    /// Repeats.
    pub duplicates: u64,
    /// Malformed records by kind.
    pub malformed: BTreeMap<String, u64>,
    /// Offline events emitted behind the stream.
    pub late_offline: u64,
}

/// A customer's state, held in the queue entry of its next event: 16
/// bytes, so that millions of customers cost little memory next to what
/// they feed (a store benchmark's peak RSS includes the generator).
/// Ordered by id first, so the queue orders by (time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Customer {
    id: u64,
    phase: u8,
    /// Events left (at most 401).
    remaining: u16,
    has_email: bool,
    has_customer_id: bool,
    second_device: bool,
    /// Purchases so far (at most one per event).
    purchases: u16,
}

/// The generator: an endless, seeded iterator of [`Record`]s in roughly
/// event-time order.
pub struct Generator {
    s: Settings,
    rng: ChaCha8Rng,
    /// Every customer, by the time of its next event.
    queue: BinaryHeap<Reverse<(Millis, Customer)>>,
    next_customer: u64,
    next_event: u64,
    recent: Vec<Event>,
    delayed: BinaryHeap<Reverse<(Millis, u64)>>,
    delayed_events: BTreeMap<u64, Event>,
    now: Millis,
    summary: Summary,
}

impl Generator {
    /// A generator with the given settings.
    pub fn new(s: Settings) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(s.seed);
        let now = s.start_time;
        // One queue entry per customer, always (one ending is replaced).
        let queue = BinaryHeap::with_capacity(s.customers as usize + 1);
        let mut g = Generator {
            s,
            rng,
            queue,
            next_customer: 0,
            next_event: 0,
            recent: Vec::new(),
            delayed: BinaryHeap::new(),
            delayed_events: BTreeMap::new(),
            now,
            summary: Summary::default(),
        };
        let arrivals = g.s.customers;
        for _ in 0..arrivals {
            let at = g.s.start_time + g.rng.gen_range(0..(g.s.span_days.max(1) as Millis * DAY));
            g.add_customer(at);
        }
        g
    }

    /// What was generated so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// About how many bytes the generator holds: its customers' queue, and
    /// the events it holds back (delayed offline events, recent events for
    /// duplicates), at a rough 256 bytes each.
    pub fn memory_bytes(&self) -> usize {
        self.queue.capacity() * std::mem::size_of::<Reverse<(Millis, Customer)>>()
            + (self.delayed_events.len() + self.recent.len()) * 256
    }

    fn add_customer(&mut self, at: Millis) {
        let id = self.next_customer;
        self.next_customer += 1;
        // Skewed activity: a few customers have long journeys.
        let u: f64 = self.rng.gen_range(0.0001..1.0);
        let remaining = (3.0 / u.powf(0.7)).min(400.0) as u16 + 1;
        let c = Customer {
            id,
            phase: 0,
            remaining,
            has_email: false,
            has_customer_id: false,
            second_device: false,
            purchases: 0,
        };
        self.queue.push(Reverse((at, c)));
    }

    fn event(
        &mut self,
        time: Millis,
        channel: &str,
        event_type: &str,
        ids: Vec<Identifier>,
    ) -> Event {
        self.next_event += 1;
        let offline = matches!(channel, "store" | "call_center");
        Event {
            event_id: format!("ev-{:x}-{}", self.s.seed, self.next_event),
            time,
            channel: channel.into(),
            event_type: event_type.into(),
            offline,
            direct: !matches!(channel, "review_site" | "social"),
            identifiers: ids,
            value: None,
            currency: None,
            campaign: None,
            properties: BTreeMap::new(),
        }
    }

    fn step(&mut self, c: &mut Customer, time: Millis) -> Event {
        let anon = Identifier::new(
            "anonymous_id",
            &format!("ck-{:x}", c.id.wrapping_mul(0x9e37_79b9)),
        );
        let dev2 = Identifier::new("device_id", &format!("dev-{}-b", c.id));
        let email = Identifier::new("email", &format!("user{}@example.com", c.id));
        let cust = Identifier::new("customer_id", &format!("C-{}", c.id));
        let r: f64 = self.rng.r#gen();
        let known = |c: &Customer| {
            let mut v = Vec::new();
            if c.has_customer_id {
                v.push(cust.clone());
            } else if c.has_email {
                v.push(email.clone());
            }
            v
        };
        let mut e = match c.phase {
            0 => {
                let (ch, ty) = *pick(
                    &mut self.rng,
                    &[
                        ("display_ads", "ad_impression"),
                        ("paid_search", "ad_click"),
                        ("organic_search", "search_visit"),
                        ("social", "social_mention"),
                        ("web", "page_view"),
                        ("email", "email_open"),
                        ("web", "content_view"),
                    ],
                );
                if r < 0.5 {
                    c.phase = 1;
                }
                self.event(time, ch, ty, vec![anon.clone()])
            }
            1 => {
                let (ch, ty) = *pick(
                    &mut self.rng,
                    &[
                        ("web", "product_view"),
                        ("web", "pricing_view"),
                        ("mobile_app", "product_view"),
                        ("review_site", "review_read"),
                        ("web", "add_to_cart"),
                        ("chat", "chat_inquiry"),
                        ("store", "store_visit"),
                        ("web", "wishlist_add"),
                    ],
                );
                if r < 0.25 && !c.has_email {
                    c.has_email = true;
                    self.event(
                        time,
                        "web",
                        "newsletter_signup",
                        vec![anon.clone(), email.clone()],
                    )
                } else if r < 0.3 && !c.second_device {
                    c.second_device = true;
                    let mut ids = vec![dev2.clone()];
                    ids.extend(known(c));
                    if ids.len() == 1 {
                        ids.push(anon.clone());
                    }
                    self.event(time, "mobile_app", "login", ids)
                } else {
                    if r > 0.7 {
                        c.phase = 2;
                    }
                    let mut ids = if ch == "store" {
                        known(c)
                    } else {
                        vec![anon.clone()]
                    };
                    if ids.is_empty() {
                        ids.push(anon.clone());
                    }
                    self.event(time, ch, ty, ids)
                }
            }
            2 => {
                c.purchases += 1;
                c.phase = 3;
                let first = !c.has_customer_id;
                c.has_customer_id = true;
                let mut e = if self.rng.gen_bool(0.3) {
                    self.event(
                        time,
                        "store",
                        "purchase",
                        vec![
                            cust.clone(),
                            Identifier::new("loyalty_id", &format!("L{}", c.id)),
                        ],
                    )
                } else {
                    let mut ids = vec![anon.clone(), cust.clone()];
                    if c.has_email || first {
                        ids.push(email.clone());
                        c.has_email = true;
                    }
                    self.event(time, "web", "purchase", ids)
                };
                e.value = Some((self.rng.gen_range(500..50_000) as f64) / 100.0);
                e.currency = Some("EUR".into());
                e
            }
            _ => {
                let (ch, ty) = *pick(
                    &mut self.rng,
                    &[
                        ("web", "purchase"),
                        ("store", "purchase"),
                        ("email", "subscription_renewal"),
                        ("store", "loyalty_join"),
                        ("review_site", "review_written"),
                        ("social", "social_share"),
                        ("web", "referral_sent"),
                        ("call_center", "support_call"),
                        ("email", "email_open"),
                        ("mobile_app", "page_view"),
                    ],
                );
                let mut ids = known(c);
                if ch == "mobile_app" && c.second_device {
                    ids.push(dev2.clone());
                }
                let mut e = self.event(time, ch, ty, ids);
                if ty == "review_written" {
                    e.properties
                        .insert("rating".into(), self.rng.gen_range(1..=5).to_string());
                }
                if ty == "purchase" {
                    c.purchases += 1;
                }
                e
            }
        };
        if self.rng.gen_bool(0.1) {
            e.campaign = Some(format!("cmp-{}", self.rng.gen_range(1..20)));
        }
        e
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            // Delayed offline events come out once the stream has moved past their delay.
            if let Some(&Reverse((due, n))) = self.delayed.peek() {
                let next_regular = self.queue.peek().map_or(Millis::MAX, |Reverse((t, _))| *t);
                if due <= next_regular {
                    self.delayed.pop();
                    self.summary.late_offline += 1;
                    return self.delayed_events.remove(&n);
                }
            }
            let Reverse((time, mut c)) = self.queue.pop()?;
            self.now = self.now.max(time);
            let e = self.step(&mut c, time);
            c.remaining = c.remaining.saturating_sub(1);
            if c.remaining > 0 {
                let gap = if self.rng.gen_bool(0.7) {
                    self.rng.gen_range(MINUTE..2 * HOUR)
                } else {
                    self.rng.gen_range(HOUR..20 * DAY)
                };
                self.queue.push(Reverse((time + gap, c)));
            } else {
                // A new customer replaces the one whose journey ended: endless stream.
                let at = time + self.rng.gen_range(0..DAY);
                self.add_customer(at);
            }
            if e.offline && self.s.max_offline_delay > 0 {
                let delay = self.rng.gen_range(0..self.s.max_offline_delay);
                let n = self.next_event;
                self.delayed.push(Reverse((e.time + delay, n)));
                self.delayed_events.insert(n, e);
                continue;
            }
            return Some(e);
        }
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let r: f64 = self.rng.r#gen();
        if r < self.s.malformed_rate {
            let e = self.next_event()?;
            let kind = *pick(
                &mut self.rng,
                &[
                    Malformed::RandomBytes,
                    Malformed::UnknownSchemaId,
                    Malformed::Truncated,
                    Malformed::NoIdentifier,
                ],
            );
            *self
                .summary
                .malformed
                .entry(format!("{kind:?}"))
                .or_default() += 1;
            return Some(Record::Malformed(kind, e));
        }
        if r < self.s.malformed_rate + self.s.duplicate_rate && !self.recent.is_empty() {
            let i = self.rng.gen_range(0..self.recent.len());
            self.summary.duplicates += 1;
            return Some(Record::Duplicate(self.recent[i].clone()));
        }
        let e = self.next_event()?;
        if self.recent.len() < 1024 {
            self.recent.push(e.clone());
        } else {
            let i = self.rng.gen_range(0..1024);
            self.recent[i] = e.clone();
        }
        self.summary.events += 1;
        Some(Record::Event(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<Record> = Generator::new(Settings::default()).take(2000).collect();
        let b: Vec<Record> = Generator::new(Settings::default()).take(2000).collect();
        assert_eq!(a, b);
        let c: Vec<Record> = Generator::new(Settings {
            seed: 7,
            ..Settings::default()
        })
        .take(2000)
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn workload_has_links_purchases_late_offline_duplicates_and_garbage() {
        let mut g = Generator::new(Settings {
            customers: 500,
            malformed_rate: 0.01,
            ..Settings::default()
        });
        let records: Vec<Record> = g.by_ref().take(20_000).collect();
        let events: Vec<&Event> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        assert!(
            events.iter().any(|e| e.identifiers.len() >= 2),
            "identity links"
        );
        assert!(
            events
                .iter()
                .any(|e| e.event_type == "purchase" && e.channel == "store")
        );
        let s = g.summary();
        assert!(
            s.late_offline > 0 && s.duplicates > 0 && !s.malformed.is_empty(),
            "{s:?}"
        );
        let mut max = Millis::MIN;
        let mut behind = 0;
        for e in &events {
            if e.time < max {
                behind += 1;
            }
            max = max.max(e.time);
        }
        assert!(behind > 0, "some events arrive behind the stream");
        assert!(events.iter().all(|e| !e.identifiers.is_empty()));
    }
}
