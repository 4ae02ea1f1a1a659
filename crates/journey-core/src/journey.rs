//! One customer's journey: touchpoints in event-time order and per-model state.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Change, StageModel};
use crate::names::Names;
use crate::{ChannelCounts, Millis, Touchpoint};

pub use crate::model::ModelState;

/// What was last emitted for one model: the sequence and the stage downstream knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emitted {
    /// Last sequence number used (0: nothing emitted yet).
    pub sequence: u64,
    /// Stage of the last emitted transition.
    pub stage: Option<u8>,
    /// Event time of the last emitted transition.
    pub at: Millis,
}

/// A customer's journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    /// Touchpoints kept by the retention policy, ordered by (event time, event id).
    pub touchpoints: Vec<Touchpoint>,
    /// Per-model state after the touchpoints that retention trimmed away.
    pub base: Vec<ModelState>,
    /// Time of the last trimmed touchpoint (`Millis::MIN` if none).
    pub base_last_touch: Millis,
    /// Current per-model state.
    pub models: Vec<ModelState>,
    /// Per-model emission state.
    pub emitted: Vec<Emitted>,
    /// Touchpoints ever applied (trimmed ones included).
    pub touch_count: u64,
    /// Touchpoints ever applied, per channel (shared with the transitions
    /// that report them, copied on write).
    pub channel_counts: Arc<ChannelCounts>,
    /// Due time of this journey's entry in the engine's timer queue, if any
    /// (the real next timer may be later; it is re-checked when the entry pops).
    pub next_due: Option<Millis>,
    /// The due time under which the store's timer index has this journey
    /// (see [`crate::StateChanges::timers`]).
    #[serde(skip)]
    pub(crate) stored_due: StoredDue,
}

/// The due time of a journey's row in the timer index as last reported
/// (none: no row). Not part of the journey's value: not encoded (a journey
/// read back is given its `next_due`), and equal whatever it holds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoredDue(pub(crate) Option<Millis>);

impl PartialEq for StoredDue {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Journey {
    pub(crate) fn new(models: &[StageModel]) -> Self {
        let initial: Vec<ModelState> = models.iter().map(StageModel::initial_state).collect();
        Journey {
            touchpoints: Vec::new(),
            base: initial.clone(),
            base_last_touch: Millis::MIN,
            models: initial,
            emitted: vec![Emitted::default(); models.len()],
            touch_count: 0,
            channel_counts: Arc::default(),
            next_due: None,
            stored_due: StoredDue::default(),
        }
    }

    /// Time of the latest touchpoint (trimmed ones included).
    pub fn last_touch(&self) -> Millis {
        self.touchpoints
            .last()
            .map_or(self.base_last_touch, |t| t.time)
    }

    /// Whether a touchpoint with this time and event id is in the journey.
    pub fn contains(&self, time: Millis, event_id: &str) -> bool {
        let key = (time, event_id);
        // Most touchpoints come after the latest: no search.
        self.touchpoints
            .last()
            .is_some_and(|l| l.order_key() >= key)
            && self
                .touchpoints
                .binary_search_by(|t| t.order_key().cmp(&key))
                .is_ok()
    }

    /// Whether the touchpoint sorts after everything the journey has seen,
    /// timers included, so it can be applied without a replay.
    pub(crate) fn is_in_order(&self, tp: &Touchpoint) -> bool {
        let after_last = self
            .touchpoints
            .last()
            .is_none_or(|l| l.order_key() < tp.order_key())
            && tp.time > self.base_last_touch;
        after_last && self.models.iter().all(|m| tp.time > m.last_timer)
    }

    pub(crate) fn count(&mut self, tp: &Touchpoint) {
        self.touch_count += 1;
        Arc::make_mut(&mut self.channel_counts).add(&tp.channel, 1);
    }

    /// Replaces the journey's names by the engine's shared copies (a journey
    /// read back from storage holds a copy of each per touchpoint).
    pub(crate) fn share_names(&mut self, names: &mut Names) {
        for tp in &mut self.touchpoints {
            names.share(&mut tp.channel);
            names.share(&mut tp.event_type);
        }
        Arc::make_mut(&mut self.channel_counts).share_names(names);
    }

    /// Applies an in-order touchpoint: due timers first (unless the caller
    /// knows none is due: `timers_due` false), then the rules.
    pub(crate) fn apply_in_order(
        &mut self,
        models: &[StageModel],
        tp: Touchpoint,
        timers_due: bool,
        changes: &mut Vec<(usize, Change, bool)>,
    ) {
        let last = self.last_touch();
        let mut buf = Vec::new();
        for (i, m) in models.iter().enumerate() {
            if timers_due {
                m.fire_timers(&mut self.models[i], last, tp.time - 1, &mut buf);
                changes.extend(buf.drain(..).map(|c| (i, c, true)));
            }
            if let Some(c) = m.step(&mut self.models[i], &tp) {
                changes.push((i, c, false));
            }
        }
        self.count(&tp);
        self.touchpoints.push(tp);
    }

    /// Recomputes every model from the base state over the kept touchpoints,
    /// firing timers up to `until`.
    pub(crate) fn replay(&self, models: &[StageModel], until: Millis) -> Vec<ModelState> {
        let mut scratch = Vec::new();
        models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut state = self.base[i].clone();
                let mut last = self.base_last_touch;
                for tp in &self.touchpoints {
                    m.fire_timers(&mut state, last, tp.time - 1, &mut scratch);
                    m.step(&mut state, tp);
                    last = last.max(tp.time);
                }
                m.fire_timers(&mut state, last, until, &mut scratch);
                scratch.clear();
                state
            })
            .collect()
    }

    /// Fires the timers due at or before `until`.
    pub(crate) fn fire_timers(
        &mut self,
        models: &[StageModel],
        until: Millis,
        changes: &mut Vec<(usize, Change, bool)>,
    ) {
        let last = self.last_touch();
        let mut buf = Vec::new();
        for (i, m) in models.iter().enumerate() {
            m.fire_timers(&mut self.models[i], last, until, &mut buf);
            changes.extend(buf.drain(..).map(|c| (i, c, true)));
        }
    }

    /// When the next timer is due, from the current state.
    pub(crate) fn compute_next_due(&self, models: &[StageModel]) -> Option<Millis> {
        let last = self.last_touch();
        models
            .iter()
            .zip(&self.models)
            .filter_map(|(m, s)| m.next_timer(s, last).map(|(due, _)| due))
            .min()
    }

    /// Folds the oldest touchpoints into the base state so that at most
    /// `max_count` remain and none is older than `min_time`. The current stage
    /// does not change.
    pub(crate) fn trim(&mut self, models: &[StageModel], max_count: usize, min_time: Millis) {
        let excess = self.touchpoints.len().saturating_sub(max_count);
        let old = if self.touchpoints.first().is_none_or(|t| t.time >= min_time) {
            0
        } else {
            self.touchpoints.partition_point(|t| t.time < min_time)
        };
        let n = excess
            .max(old)
            .min(self.touchpoints.len().saturating_sub(1));
        if n == 0 {
            return;
        }
        let mut scratch = Vec::new();
        for tp in self.touchpoints.drain(..n) {
            for (i, m) in models.iter().enumerate() {
                m.fire_timers(
                    &mut self.base[i],
                    self.base_last_touch,
                    tp.time - 1,
                    &mut scratch,
                );
                m.step(&mut self.base[i], &tp);
            }
            self.base_last_touch = self.base_last_touch.max(tp.time);
        }
    }

    /// Current stage name per model.
    pub fn stages<'m>(&self, models: &'m [StageModel]) -> Vec<(&'m str, Option<&'m str>)> {
        models
            .iter()
            .zip(&self.models)
            .map(|(m, s)| (m.name(), s.stage.map(|id| m.stage_name(id))))
            .collect()
    }
}
