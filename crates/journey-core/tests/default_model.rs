//! Table-driven tests of the default `funnel5` model and of the engine's
//! handling of merges, guards, late events, duplicates, timers and retention.

mod support;

use journey_core::{Cause, Engine, EngineConfig, Output, RejectReason, Submitted};
use support::*;

fn s(key: &str, from: &str, to: &str, cause: &str) -> (String, String, String, String) {
    (key.into(), from.into(), to.into(), cause.into())
}

#[test]
fn every_rule_of_the_default_model() {
    // (name, event types in order, expected (from, to) transitions)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let table: &[Case] = &[
        ("awareness", &["ad_impression"], &[("-", "awareness")]),
        (
            "every awareness type",
            &["email_open", "page_view"],
            &[("-", "awareness")],
        ),
        (
            "consideration from awareness",
            &["page_view", "product_view"],
            &[("-", "awareness"), ("awareness", "consideration")],
        ),
        (
            "consideration skips awareness",
            &["store_visit"],
            &[("-", "consideration")],
        ),
        (
            "awareness types do not move back",
            &["product_view", "page_view"],
            &[("-", "consideration")],
        ),
        (
            "first purchase",
            &["product_view", "purchase"],
            &[("-", "consideration"), ("consideration", "purchase")],
        ),
        (
            "walk-in purchase skips stages",
            &["purchase"],
            &[("-", "purchase")],
        ),
        (
            "second purchase is retention",
            &["purchase", "purchase"],
            &[("-", "purchase"), ("purchase", "retention")],
        ),
        (
            "renewal is retention",
            &["purchase", "subscription_renewal"],
            &[("-", "purchase"), ("purchase", "retention")],
        ),
        (
            "loyalty join is retention",
            &["purchase", "loyalty_join"],
            &[("-", "purchase"), ("purchase", "retention")],
        ),
        (
            "renewal without purchase does nothing",
            &["page_view", "subscription_renewal"],
            &[("-", "awareness")],
        ),
        (
            "advocacy from purchase",
            &["purchase", "referral_sent"],
            &[("-", "purchase"), ("purchase", "advocacy")],
        ),
        (
            "advocacy from retention",
            &["purchase", "purchase", "social_share"],
            &[
                ("-", "purchase"),
                ("purchase", "retention"),
                ("retention", "advocacy"),
            ],
        ),
        (
            "testimonial",
            &["purchase", "testimonial"],
            &[("-", "purchase"), ("purchase", "advocacy")],
        ),
        (
            "advocacy needs a purchase",
            &["page_view", "social_share"],
            &[("-", "awareness")],
        ),
        (
            "purchase in advocacy stays",
            &["purchase", "social_share", "purchase"],
            &[("-", "purchase"), ("purchase", "advocacy")],
        ),
        (
            "unknown types change nothing",
            &["page_view", "weird_thing"],
            &[("-", "awareness")],
        ),
    ];
    for (name, types, expected) in table {
        let mut e = engine(0);
        let events = types.iter().enumerate().map(|(i, t)| {
            ev(
                &format!("e{i}"),
                T0 + i as i64 * HOUR,
                "web",
                t,
                &[("anonymous_id", "a1")],
            )
        });
        let got: Vec<(String, String)> = summary(&run(&mut e, events))
            .into_iter()
            .map(|(_, f, t, _)| (f, t))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn good_reviews_advocate_and_bad_ones_do_not() {
    let mut e = engine(0);
    let out = run(
        &mut e,
        [
            ev("p", T0, "store", "purchase", &[("customer_id", "C-1")]),
            with_prop(
                ev(
                    "r1",
                    T0 + HOUR,
                    "review_site",
                    "review_written",
                    &[("customer_id", "C-1")],
                ),
                "rating",
                "2",
            ),
            with_prop(
                ev(
                    "r2",
                    T0 + 2 * HOUR,
                    "review_site",
                    "review_written",
                    &[("customer_id", "C-1")],
                ),
                "rating",
                "5",
            ),
        ],
    );
    let t = transitions(&out);
    assert_eq!(t.len(), 2);
    assert_eq!(&*t[1].to, "advocacy");
    assert_eq!(t[1].trigger.as_ref().unwrap().event_id, "r2");
}

#[test]
fn transitions_carry_sequence_duration_counts_and_ids() {
    let mut e = engine(0);
    let out = run(
        &mut e,
        [
            ev(
                "a",
                T0,
                "display_ads",
                "ad_click",
                &[("customer_id", "C-17")],
            ),
            ev(
                "b",
                T0 + DAY,
                "web",
                "page_view",
                &[("customer_id", "C-17")],
            ),
            ev(
                "c",
                T0 + 3 * DAY + 4 * HOUR,
                "store",
                "purchase",
                &[("customer_id", "C-17")],
            ),
        ],
    );
    let t = transitions(&out);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].sequence, 1);
    assert_eq!(t[0].previous_stage_ms, None);
    assert_eq!(t[1].sequence, 2);
    assert_eq!(t[1].previous_stage_ms, Some(3 * DAY + 4 * HOUR));
    assert_eq!(t[1].touchpoints, 3);
    assert_eq!(t[1].channel_counts.get("store"), Some(1));
    assert_eq!(t[1].id(), "customer_id:C-17|funnel5|2");
    assert_eq!(t[1].time, T0 + 3 * DAY + 4 * HOUR);
}

#[test]
fn lapse_timer_fires_at_last_touch_plus_180_days_and_win_back() {
    let mut e = engine(0);
    let mut out = run(
        &mut e,
        [ev("p", T0, "web", "purchase", &[("email", "x@y")])],
    );
    e.advance_watermark(T0 + 180 * DAY - 1, &mut out);
    assert_eq!(transitions(&out).len(), 1, "not yet due");
    e.advance_watermark(T0 + 181 * DAY, &mut out);
    let t = transitions(&out);
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[1].from.as_deref(), &*t[1].to, t[1].cause),
        (Some("purchase"), "lapsed", Cause::Timer)
    );
    assert_eq!(t[1].time, T0 + 180 * DAY);
    assert!(t[1].trigger.is_none());
    // Win-back: a purchase from lapsed is retention.
    let more = run(
        &mut e,
        [ev(
            "p2",
            T0 + 200 * DAY,
            "web",
            "purchase",
            &[("email", "x@y")],
        )],
    );
    assert_eq!(
        summary(&more),
        vec![s("email:x@y", "lapsed", "retention", "touchpoint")]
    );
}

#[test]
fn a_touchpoint_after_the_gap_fires_the_timer_first() {
    // The watermark never passed the due time, but the next touchpoint did.
    let mut e = engine(0);
    let out = run(
        &mut e,
        [
            ev("p", T0, "web", "purchase", &[("email", "x@y")]),
            ev("v", T0 + 300 * DAY, "web", "page_view", &[("email", "x@y")]),
        ],
    );
    assert_eq!(
        summary(&out),
        vec![
            s("email:x@y", "-", "purchase", "touchpoint"),
            s("email:x@y", "purchase", "lapsed", "timer")
        ]
    );
}

#[test]
fn activity_resets_the_lapse_timer() {
    let mut e = engine(0);
    let mut out = run(
        &mut e,
        [
            ev("p", T0, "web", "purchase", &[("email", "x@y")]),
            ev("v", T0 + 100 * DAY, "web", "page_view", &[("email", "x@y")]),
        ],
    );
    e.advance_watermark(T0 + 200 * DAY, &mut out);
    assert_eq!(transitions(&out).len(), 1);
    e.advance_watermark(T0 + 281 * DAY, &mut out);
    assert_eq!(transitions(&out)[1].time, T0 + 280 * DAY);
}

#[test]
fn merge_unites_journeys_and_emits_one_merge_transition() {
    let mut e = engine(0);
    let mut out = run(
        &mut e,
        [
            ev(
                "1",
                T0,
                "web",
                "product_view",
                &[("anonymous_id", "cookie-1")],
            ),
            ev("2", T0 + HOUR, "store", "purchase", &[("email", "ana@x")]),
        ],
    );
    out.clear();
    let linked = run(
        &mut e,
        [ev(
            "3",
            T0 + 2 * HOUR,
            "web",
            "login",
            &[("anonymous_id", "cookie-1"), ("email", "ana@x")],
        )],
    );
    out.extend(linked);
    let merges: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Merge(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].surviving_key, "email:ana@x");
    assert_eq!(merges[0].absorbed_key, "anonymous_id:cookie-1");
    // Replaying consideration then purchase gives purchase: what the survivor
    // already emitted, so no transition.
    assert!(transitions(&out).is_empty());
    let j = e.journey("email:ana@x").unwrap();
    assert_eq!(j.touchpoints.len(), 3);
    assert!(e.journey("anonymous_id:cookie-1").is_none());
}

#[test]
fn merge_that_changes_the_stage_emits_cause_merge() {
    let mut e = engine(0);
    run(
        &mut e,
        [
            ev("1", T0, "store", "purchase", &[("anonymous_id", "c1")]),
            ev(
                "2",
                T0 + HOUR,
                "store",
                "purchase",
                &[("customer_id", "C-9")],
            ),
        ],
    );
    let out = run(
        &mut e,
        [ev(
            "3",
            T0 + 2 * HOUR,
            "web",
            "login",
            &[("anonymous_id", "c1"), ("customer_id", "C-9")],
        )],
    );
    // Two purchases replayed: retention.
    assert_eq!(
        summary(&out),
        vec![s("customer_id:C-9", "purchase", "retention", "merge")]
    );
    let t = &transitions(&out)[0];
    assert_eq!(t.sequence, 2, "sequence continues the survivor's");
    assert_eq!(
        t.touchpoints, 2,
        "the linking event is applied after the merge"
    );
}

#[test]
fn key_change_moves_the_journey_and_reports_it() {
    let mut e = engine(0);
    run(
        &mut e,
        [ev("1", T0, "web", "page_view", &[("anonymous_id", "c1")])],
    );
    let out = run(
        &mut e,
        [ev(
            "2",
            T0 + HOUR,
            "web",
            "newsletter_signup",
            &[("anonymous_id", "c1"), ("email", "a@b")],
        )],
    );
    assert!(out.iter().any(|o| matches!(o, Output::Merge(m) if m.absorbed_key == "anonymous_id:c1" && m.surviving_key == "email:a@b")));
    let t = transitions(&out);
    assert_eq!(
        summary(&out),
        vec![s("email:a@b", "awareness", "consideration", "touchpoint")]
    );
    assert_eq!(t[0].sequence, 2);
    assert_eq!(t[0].identifiers.len(), 2);
}

#[test]
fn guards_refuse_links_but_still_process_the_event() {
    let mut e = engine(0);
    run(
        &mut e,
        [ev(
            "1",
            T0,
            "web",
            "page_view",
            &[("customer_id", "C-1"), ("email", "shared@x")],
        )],
    );
    let out = run(
        &mut e,
        [ev(
            "2",
            T0 + HOUR,
            "store",
            "purchase",
            &[
                ("customer_id", "C-2"),
                ("email", "shared@x"),
                ("email", "null"),
            ],
        )],
    );
    let rejected: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Rejected { rejection, .. } => Some(rejection.reason),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, vec![RejectReason::MaxPerType]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Blocked { identifier, .. } if identifier.value == "null"))
    );
    assert_eq!(
        summary(&out),
        vec![s("customer_id:C-2", "-", "purchase", "touchpoint")]
    );
    assert_eq!(e.stats().rejected_links, 1);
    assert_eq!(e.stats().blocked_identifiers, 1);
}

#[test]
fn events_without_usable_identifiers_are_refused() {
    let mut e = engine(0);
    let mut out = Vec::new();
    let err = e
        .submit(
            ev(
                "1",
                T0,
                "web",
                "page_view",
                &[("email", " "), ("anonymous_id", "UNDEFINED")],
            ),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.code(), "all_identifiers_blocked");
    let err = e
        .submit(ev("2", T0, "web", "page_view", &[]), &mut out)
        .unwrap_err();
    assert_eq!(err.code(), "no_identifier");
    let err = e
        .submit(
            ev("", T0, "web", "page_view", &[("email", "a@b")]),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.code(), "empty_event_id");
}

#[test]
fn duplicates_change_nothing_buffered_or_applied() {
    let mut e = engine(HOUR);
    let mut out = Vec::new();
    let a = ev("1", T0, "web", "purchase", &[("email", "a@b")]);
    assert_eq!(e.submit(a.clone(), &mut out).unwrap(), Submitted::Buffered);
    assert_eq!(e.submit(a.clone(), &mut out).unwrap(), Submitted::Duplicate);
    e.flush(&mut out);
    e.submit(
        ev("2", T0 + 10 * HOUR, "web", "page_view", &[("email", "a@b")]),
        &mut out,
    )
    .unwrap();
    assert_eq!(e.submit(a, &mut out).unwrap(), Submitted::Late);
    e.flush(&mut out);
    assert_eq!(transitions(&out).len(), 1);
    assert_eq!(e.stats().duplicates, 2);
    assert_eq!(e.stats().applied, 2);
    assert_eq!(e.journey("email:a@b").unwrap().touch_count, 2);
}

#[test]
fn late_event_beyond_the_bound_replays_and_emits_late_event() {
    let mut e = engine(HOUR);
    let mut out = run(
        &mut e,
        [
            ev("1", T0, "store", "purchase", &[("customer_id", "C-1")]),
            ev(
                "2",
                T0 + 10 * DAY,
                "web",
                "page_view",
                &[("customer_id", "C-1")],
            ),
        ],
    );
    out.clear();
    // An offline purchase from before arrives days late: two purchases → retention.
    let mut late = ev(
        "0",
        T0 - DAY,
        "store",
        "purchase",
        &[("customer_id", "C-1")],
    );
    late.offline = true;
    assert_eq!(e.submit(late, &mut out).unwrap(), Submitted::Late);
    assert_eq!(
        summary(&out),
        vec![s("customer_id:C-1", "purchase", "retention", "late_event")]
    );
}

#[test]
fn late_event_that_does_not_change_the_stage_is_silent() {
    let mut e = engine(0);
    let mut out = run(
        &mut e,
        [
            ev("1", T0, "web", "page_view", &[("customer_id", "C-1")]),
            ev(
                "2",
                T0 + DAY,
                "web",
                "product_view",
                &[("customer_id", "C-1")],
            ),
        ],
    );
    out.clear();
    e.submit(
        ev("0", T0 - DAY, "web", "ad_click", &[("customer_id", "C-1")]),
        &mut out,
    )
    .unwrap();
    assert!(transitions(&out).is_empty());
    assert_eq!(e.stats().late, 1);
}

#[test]
fn shuffled_within_the_bound_is_the_same_as_sorted() {
    let events = vec![
        ev("1", T0, "web", "page_view", &[("anonymous_id", "a")]),
        ev(
            "2",
            T0 + 1000,
            "web",
            "product_view",
            &[("anonymous_id", "a")],
        ),
        ev(
            "3",
            T0 + 2000,
            "web",
            "purchase",
            &[("anonymous_id", "a"), ("email", "e@x")],
        ),
    ];
    let mut sorted = engine(5000);
    let a = run(&mut sorted, events.clone());
    let mut shuffled = engine(5000);
    let b = run(
        &mut shuffled,
        [events[2].clone(), events[0].clone(), events[1].clone()],
    );
    assert_eq!(transitions(&a), transitions(&b));
    assert_eq!(transitions(&a).len(), 3);
}

#[test]
fn retention_trims_history_without_changing_the_stage() {
    let mut e = Engine::new(
        EngineConfig {
            out_of_order_ms: 0,
            max_touchpoints: 3,
            ..EngineConfig::default()
        },
        funnel(),
    );
    let mut events = vec![ev("p0", T0, "web", "purchase", &[("email", "a@b")])];
    for i in 1..10 {
        events.push(ev(
            &format!("v{i}"),
            T0 + i * HOUR,
            "web",
            "page_view",
            &[("email", "a@b")],
        ));
    }
    run(&mut e, events);
    let j = e.journey("email:a@b").unwrap();
    assert_eq!(j.touchpoints.len(), 3);
    assert_eq!(j.touch_count, 10);
    // A late second purchase replays from the trimmed summary: retention.
    let out = run(
        &mut e,
        [ev(
            "p1",
            T0 + 5 * HOUR + 1,
            "web",
            "purchase",
            &[("email", "a@b")],
        )],
    );
    assert_eq!(
        summary(&out),
        vec![s("email:a@b", "purchase", "retention", "late_event")]
    );
}

#[test]
fn several_models_run_at_once() {
    let mut e = all_models_engine(0);
    let out = run(
        &mut e,
        [
            ev("1", T0, "web", "page_view", &[("email", "a@b")]),
            ev("2", T0 + 1, "web", "add_to_cart", &[("email", "a@b")]),
        ],
    );
    let t = transitions(&out);
    let got: Vec<(String, String)> = t
        .iter()
        .map(|t| (t.model.to_string(), t.to.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("funnel5", "awareness"),
            ("loyalty5", "familiarity"),
            ("decision4", "awareness"),
            ("funnel5", "consideration"),
            ("loyalty5", "consideration"),
            ("decision4", "decision")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

fn expiring_engine(ttl_days: i64) -> Engine {
    Engine::new(
        EngineConfig {
            out_of_order_ms: 0,
            customer_ttl_ms: ttl_days * DAY,
            ..EngineConfig::default()
        },
        funnel(),
    )
}

/// An engine expiring customers after 30 days, holding one customer
/// (`email:x@y` with `anonymous_id:c1`) seen once at T0, its changes taken.
fn one_customer_expiring_in_30_days() -> Engine {
    let mut e = expiring_engine(30);
    let ids = [("email", "x@y"), ("anonymous_id", "c1")];
    run(&mut e, [ev("v", T0, "web", "page_view", &ids)]);
    e.take_changes();
    e
}

#[test]
fn an_inactive_customer_expires_with_its_identifiers() {
    let mut e = one_customer_expiring_in_30_days();
    let mut out = Vec::new();
    e.advance_watermark(T0 + 30 * DAY - 1, &mut out);
    assert!(e.journey("email:x@y").is_some(), "not yet due");
    e.advance_watermark(T0 + 30 * DAY, &mut out);
    let expired: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Expired {
                customer_key,
                last_touch,
                identifiers,
            } => Some((customer_key.as_str(), *last_touch, *identifiers)),
            _ => None,
        })
        .collect();
    assert_eq!(expired, vec![("email:x@y", T0, 2)]);
    assert!(e.journey("email:x@y").is_none());
    assert_eq!(e.identity().identifier_count(), 0);
    // The deletions are state changes: tombstones for the journey and both identifiers.
    let changes = e.take_changes();
    assert_eq!(changes.journeys, vec![("email:x@y".to_string(), None)]);
    let mut gone: Vec<_> = changes
        .identities
        .iter()
        .map(|(id, key)| (id.key(), key.is_none()))
        .collect();
    gone.sort();
    assert_eq!(
        gone,
        vec![("anonymous_id:c1".into(), true), ("email:x@y".into(), true)]
    );
    // A later event starts a new customer from no stage.
    let more = run(
        &mut e,
        [ev(
            "v2",
            T0 + 40 * DAY,
            "web",
            "page_view",
            &[("anonymous_id", "c1")],
        )],
    );
    assert_eq!(
        summary(&more),
        vec![s("anonymous_id:c1", "-", "awareness", "touchpoint")]
    );
}

#[test]
fn a_customer_that_expires_and_returns_before_a_commit_is_one_write() {
    // Journeys are held by identity node; the returning customer gets a new
    // node for the same key, and the commit must carry one change for it:
    // the new journey, not a tombstone after or before it.
    let mut e = one_customer_expiring_in_30_days();
    let mut out = Vec::new();
    e.advance_watermark(T0 + 31 * DAY, &mut out);
    run(
        &mut e,
        [ev(
            "w",
            T0 + 32 * DAY,
            "web",
            "page_view",
            &[("email", "x@y")],
        )],
    );
    let changes = e.take_changes();
    let keys: Vec<(&str, bool)> = changes
        .journeys
        .iter()
        .map(|(k, j)| (k.as_str(), j.is_some()))
        .collect();
    assert_eq!(keys, vec![("email:x@y", true)]);
    assert_eq!(changes.journeys[0].1.as_ref().unwrap().touch_count, 1);
}

#[test]
fn activity_postpones_expiry_and_timers_before_it_still_fire() {
    let mut e = expiring_engine(200);
    let id = [("email", "x@y")];
    run(
        &mut e,
        [
            ev("p", T0, "web", "purchase", &id),
            ev("v", T0 + 10 * DAY, "web", "page_view", &id),
        ],
    );
    let mut out = Vec::new();
    e.advance_watermark(T0 + 205 * DAY, &mut out);
    assert!(
        e.journey("email:x@y").is_some(),
        "the page view moved expiry to day 210"
    );
    e.advance_watermark(T0 + 400 * DAY, &mut out);
    // The lapse (day 190) happened before expiry (day 210).
    let kinds: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(&*t.to),
            Output::Expired { .. } => Some("expired"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["lapsed", "expired"]);
    // With expiry before the lapse date, the lapse never fires.
    let mut e = expiring_engine(100);
    run(&mut e, [ev("p", T0, "web", "purchase", &id)]);
    let mut out = Vec::new();
    e.advance_watermark(T0 + 400 * DAY, &mut out);
    assert!(transitions(&out).is_empty());
    assert!(out.iter().any(|o| matches!(o, Output::Expired { .. })));
}
