//! Shared helpers for the core's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use journey_core::{
    Engine, EngineConfig, Event, Identifier, Output, StageModel, Transition, builtin_models,
};

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;
pub const T0: i64 = 1_700_000_000_000;

pub fn ev(id: &str, time: i64, channel: &str, event_type: &str, ids: &[(&str, &str)]) -> Event {
    Event {
        event_id: id.into(),
        time,
        channel: channel.into(),
        event_type: event_type.into(),
        offline: false,
        direct: true,
        identifiers: ids.iter().map(|(k, v)| Identifier::new(k, v)).collect(),
        value: None,
        currency: None,
        campaign: None,
        properties: BTreeMap::new(),
    }
}

pub fn with_prop(mut e: Event, k: &str, v: &str) -> Event {
    e.properties.insert(k.into(), v.into());
    e
}

pub fn funnel() -> Vec<StageModel> {
    vec![StageModel::builtin("funnel5").unwrap()]
}

pub fn engine(bound_ms: i64) -> Engine {
    Engine::new(
        EngineConfig {
            out_of_order_ms: bound_ms,
            ..EngineConfig::default()
        },
        funnel(),
    )
}

pub fn all_models_engine(bound_ms: i64) -> Engine {
    Engine::new(
        EngineConfig {
            out_of_order_ms: bound_ms,
            ..EngineConfig::default()
        },
        builtin_models(),
    )
}

/// Submits all events, flushes, and returns every output.
pub fn run(engine: &mut Engine, events: impl IntoIterator<Item = Event>) -> Vec<Output> {
    let mut out = Vec::new();
    for e in events {
        engine.submit(e, &mut out).expect("valid event");
    }
    engine.flush(&mut out);
    out
}

pub fn transitions(out: &[Output]) -> Vec<Transition> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// `(key, from, to, cause)` of each transition, compact for table tests.
pub fn summary(out: &[Output]) -> Vec<(String, String, String, String)> {
    transitions(out)
        .into_iter()
        .map(|t| {
            (
                t.customer_key,
                t.from.map_or_else(|| "-".into(), |f| f.to_string()),
                t.to.to_string(),
                t.cause.as_str().to_string(),
            )
        })
        .collect()
}

/// Final view of every journey: key → (stages per model, sorted touchpoint ids).
pub fn final_view(engine: &Engine) -> BTreeMap<String, (Vec<Option<String>>, Vec<String>)> {
    engine
        .journeys()
        .map(|(k, j)| {
            let stages = j
                .stages(engine.models())
                .into_iter()
                .map(|(_, s)| s.map(str::to_string))
                .collect();
            let mut ids: Vec<String> = j
                .touchpoints
                .iter()
                .map(|t| t.event_id.to_string())
                .collect();
            ids.sort();
            (k, (stages, ids))
        })
        .collect()
}
