//! Stage models as data: stages, rules and inactivity timers, loaded from TOML or YAML.

use std::collections::HashSet;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

use crate::{Millis, ModelError, Name, Touchpoint};

/// Index of a stage in its model.
pub type StageId = u8;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ModelFile {
    name: String,
    #[serde(default)]
    description: String,
    stages: Vec<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    timers: Vec<TimerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default, rename = "where")]
    predicates: Vec<String>,
    from: Option<Vec<String>>,
    #[serde(default)]
    count_types: Vec<String>,
    min_count: Option<u32>,
    max_count: Option<u32>,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TimerFile {
    name: String,
    #[serde(with = "humantime_serde")]
    after: Duration,
    from: Vec<String>,
    to: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
struct Predicate {
    property: String,
    op: Op,
    value: String,
    number: Option<f64>,
}

impl Predicate {
    fn parse(text: &str) -> Result<Self, String> {
        const OPS: [(&str, Op); 6] = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("==", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        for (sym, op) in OPS {
            if let Some((l, r)) = text.split_once(sym) {
                let property = l.trim().to_string();
                let value = r.trim().trim_matches('"').to_string();
                if property.is_empty() || value.is_empty() {
                    break;
                }
                let number = value.parse::<f64>().ok();
                if number.is_none() && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(format!(
                        "predicate {text:?}: `{sym}` needs a number on the right"
                    ));
                }
                return Ok(Predicate {
                    property,
                    op,
                    value,
                    number,
                });
            }
        }
        Err(format!(
            "predicate {text:?} is not `property OP value` with OP one of >= > <= < == !="
        ))
    }

    fn matches(&self, tp: &Touchpoint) -> bool {
        let Some(actual) = tp.properties.get(&self.property) else {
            return false;
        };
        match (self.number, actual.trim().parse::<f64>().ok()) {
            (Some(want), Some(got)) => match self.op {
                Op::Ge => got >= want,
                Op::Gt => got > want,
                Op::Le => got <= want,
                Op::Lt => got < want,
                Op::Eq => got == want,
                Op::Ne => got != want,
            },
            _ => match self.op {
                Op::Eq => actual == self.value,
                Op::Ne => actual != self.value,
                _ => false,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    channels: FxHashSet<String>,
    predicates: Vec<Predicate>,
    /// `None`: any stage; otherwise the allowed current stages (`None` inside = no stage).
    from: Option<Vec<Option<StageId>>>,
    count_slot: Option<usize>,
    min_count: Option<u32>,
    max_count: Option<u32>,
    to: StageId,
}

/// What evaluating a touchpoint of one event type needs: the rules that may
/// match it (in rule order) and the count slots it increments.
#[derive(Debug, Clone, Default, PartialEq)]
struct TypeDispatch {
    rules: Vec<usize>,
    count_slots: Vec<usize>,
}

/// Event type → [`TypeDispatch`], built once when the model is compiled, so
/// that a touchpoint costs one hash lookup per model rather than one per rule.
#[derive(Debug, Clone, Default, PartialEq)]
struct Dispatch {
    by_type: FxHashMap<String, TypeDispatch>,
    /// Types no rule or count names: only rules without `event-types` apply.
    other: TypeDispatch,
}

impl Dispatch {
    fn build(rule_types: &[Vec<String>], count_types: &[HashSet<String>]) -> Self {
        let mut named: Vec<&String> = rule_types.iter().flatten().collect();
        named.extend(count_types.iter().flatten());
        named.sort_unstable();
        named.dedup();
        let for_type = |ty: Option<&str>| TypeDispatch {
            rules: (0..rule_types.len())
                .filter(|&i| {
                    rule_types[i].is_empty()
                        || ty.is_some_and(|t| rule_types[i].iter().any(|x| x == t))
                })
                .collect(),
            count_slots: (0..count_types.len())
                .filter(|&i| ty.is_some_and(|t| count_types[i].contains(t)))
                .collect(),
        };
        Dispatch {
            by_type: named
                .into_iter()
                .map(|t| (t.clone(), for_type(Some(t))))
                .collect(),
            other: for_type(None),
        }
    }

    fn get(&self, event_type: &str) -> &TypeDispatch {
        self.by_type.get(event_type).unwrap_or(&self.other)
    }
}

/// A stage model: ordered stages, rules applied to each touchpoint in event-time
/// order (the first rule that matches and allows the current stage wins), and
/// inactivity timers measured from the last touchpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct StageModel {
    name: String,
    description: String,
    stages: Vec<String>,
    /// The name and the stage names, shared with every transition.
    names: (Name, Vec<Name>),
    rules: Vec<Rule>,
    count_types: Vec<HashSet<String>>,
    dispatch: Dispatch,
    /// The inactivity timers by the stage they start from: `(after, to)`.
    /// Most stages have none, found without looking at any timer.
    timers_from: Vec<Vec<(Millis, StageId)>>,
}

/// The evaluation state of one model for one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelState {
    /// Current stage (`None` before the first stage).
    pub stage: Option<StageId>,
    /// Event time at which the current stage was entered.
    pub entered_at: Millis,
    /// Counters of the rules' `count-types`.
    pub counts: Vec<u32>,
    /// Event time of the last timer that fired (`i64::MIN` if none).
    pub last_timer: Millis,
}

/// A stage change found by evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub from: Option<StageId>,
    pub to: StageId,
    pub at: Millis,
    pub previous_entered: Millis,
}

const BUILTIN: [(&str, &str); 3] = [
    ("funnel5", include_str!("../models/funnel5.toml")),
    ("loyalty5", include_str!("../models/loyalty5.toml")),
    ("decision4", include_str!("../models/decision4.toml")),
];

/// The models shipped with the product: `funnel5` (default), `loyalty5` and `decision4`.
pub fn builtin_models() -> Vec<StageModel> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            StageModel::from_toml(&format!("builtin:{name}"), text)
                .expect("builtin models are valid")
        })
        .collect()
}

impl StageModel {
    /// A shipped model by name.
    pub fn builtin(name: &str) -> Option<StageModel> {
        builtin_models().into_iter().find(|m| m.name == name)
    }

    /// Parses and validates a model written in TOML; `source` names it in errors.
    pub fn from_toml(source: &str, text: &str) -> Result<StageModel, ModelError> {
        let file: ModelFile = toml::from_str(text).map_err(|e| ModelError {
            source_name: source.into(),
            location: "syntax".into(),
            problem: e.to_string().trim().to_string(),
        })?;
        Self::compile(source, file)
    }

    /// Parses and validates a model written in YAML; `source` names it in errors.
    pub fn from_yaml(source: &str, text: &str) -> Result<StageModel, ModelError> {
        let file: ModelFile = serde_yaml::from_str(text).map_err(|e| ModelError {
            source_name: source.into(),
            location: "syntax".into(),
            problem: e.to_string(),
        })?;
        Self::compile(source, file)
    }

    fn compile(source: &str, file: ModelFile) -> Result<StageModel, ModelError> {
        let err = |location: String, problem: String| ModelError {
            source_name: source.into(),
            location,
            problem,
        };
        if file.name.trim().is_empty() {
            return Err(err("name".into(), "the model needs a name".into()));
        }
        if file.stages.is_empty() || file.stages.len() > 64 {
            return Err(err("stages".into(), "a model needs 1 to 64 stages".into()));
        }
        let mut seen = HashSet::new();
        for s in &file.stages {
            if s == "none" || s.trim().is_empty() || !seen.insert(s) {
                return Err(err(
                    "stages".into(),
                    format!("stage {s:?} is empty, reserved (`none`) or repeated"),
                ));
            }
        }
        let stage = |s: &str, location: &str| -> Result<StageId, ModelError> {
            file.stages
                .iter()
                .position(|x| x == s)
                .map(|i| i as StageId)
                .ok_or_else(|| {
                    err(
                        location.into(),
                        format!(
                            "unknown stage {s:?} (stages are {})",
                            file.stages.join(", ")
                        ),
                    )
                })
        };
        let mut rules = Vec::new();
        let mut rule_types: Vec<Vec<String>> = Vec::new();
        let mut count_types: Vec<HashSet<String>> = Vec::new();
        for r in &file.rules {
            let loc = format!("rule {:?}", r.name);
            if r.event_types.is_empty() && r.channels.is_empty() && r.predicates.is_empty() {
                return Err(err(
                    loc,
                    "matches every touchpoint: give event-types, channels or where".into(),
                ));
            }
            let predicates = r
                .predicates
                .iter()
                .map(|p| Predicate::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(loc.clone(), e))?;
            let from = match &r.from {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(err(
                        loc,
                        "`from` is empty: omit it to allow any stage".into(),
                    ));
                }
                Some(list) => Some(
                    list.iter()
                        .map(|s| {
                            if s == "none" {
                                Ok(None)
                            } else {
                                stage(s, &loc).map(Some)
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let has_bounds = r.min_count.is_some() || r.max_count.is_some();
            if has_bounds == r.count_types.is_empty() {
                return Err(err(
                    loc,
                    "`count-types` and `min-count`/`max-count` go together".into(),
                ));
            }
            if let (Some(min), Some(max)) = (r.min_count, r.max_count)
                && min > max
            {
                return Err(err(loc, format!("min-count {min} exceeds max-count {max}")));
            }
            let count_slot = (!r.count_types.is_empty()).then(|| {
                let set: HashSet<String> = r.count_types.iter().cloned().collect();
                count_types
                    .iter()
                    .position(|c| *c == set)
                    .unwrap_or_else(|| {
                        count_types.push(set);
                        count_types.len() - 1
                    })
            });
            rule_types.push(r.event_types.clone());
            rules.push(Rule {
                name: r.name.clone(),
                channels: r.channels.iter().cloned().collect(),
                predicates,
                from,
                count_slot,
                min_count: r.min_count,
                max_count: r.max_count,
                to: stage(&r.to, &loc)?,
            });
        }
        let mut timers_from = vec![Vec::new(); file.stages.len()];
        for t in &file.timers {
            let loc = format!("timer {:?}", t.name);
            let after = t.after.as_millis() as Millis;
            if after <= 0 {
                return Err(err(loc, "`after` must be positive".into()));
            }
            let to = stage(&t.to, &loc)?;
            let from = t
                .from
                .iter()
                .map(|s| stage(s, &loc))
                .collect::<Result<Vec<_>, _>>()?;
            if from.is_empty() || from.contains(&to) {
                return Err(err(
                    loc,
                    "`from` must name at least one stage and not the target stage".into(),
                ));
            }
            for f in from {
                timers_from[f as usize].push((after, to));
            }
        }
        let dispatch = Dispatch::build(&rule_types, &count_types);
        Ok(StageModel {
            names: (
                file.name.as_str().into(),
                file.stages.iter().map(|s| s.as_str().into()).collect(),
            ),
            name: file.name,
            description: file.description,
            stages: file.stages,
            rules,
            count_types,
            dispatch,
            timers_from,
        })
    }

    /// Model name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Human description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Stage names in order.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }

    /// Name of a stage id.
    pub fn stage_name(&self, id: StageId) -> &str {
        &self.stages[id as usize]
    }

    /// The model's name, shared.
    pub(crate) fn shared_name(&self) -> &Name {
        &self.names.0
    }

    /// Name of a stage id, shared.
    pub(crate) fn shared_stage(&self, id: StageId) -> &Name {
        &self.names.1[id as usize]
    }

    /// Names of the rules in evaluation order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The state of a journey without touchpoints.
    pub fn initial_state(&self) -> ModelState {
        ModelState {
            stage: None,
            entered_at: Millis::MIN,
            counts: vec![0; self.count_types.len()],
            last_timer: Millis::MIN,
        }
    }

    /// Applies one touchpoint; returns the stage change it causes, if any.
    pub(crate) fn step(&self, state: &mut ModelState, tp: &Touchpoint) -> Option<Change> {
        let dispatch = self.dispatch.get(&tp.event_type);
        for &slot in &dispatch.count_slots {
            state.counts[slot] += 1;
        }
        let rule = dispatch
            .rules
            .iter()
            .map(|&i| &self.rules[i])
            .find(|r| Self::rule_applies(r, state, tp))?;
        if state.stage == Some(rule.to) {
            return None;
        }
        let change = Change {
            from: state.stage,
            to: rule.to,
            at: tp.time,
            previous_entered: state.entered_at,
        };
        state.stage = Some(rule.to);
        state.entered_at = tp.time;
        Some(change)
    }

    /// Whether a rule whose event types admit the touchpoint (see
    /// [`Dispatch`]) applies to it in this state.
    fn rule_applies(r: &Rule, state: &ModelState, tp: &Touchpoint) -> bool {
        (r.channels.is_empty() || r.channels.contains(&*tp.channel))
            && r.from.as_ref().is_none_or(|f| f.contains(&state.stage))
            && r.count_slot.is_none_or(|slot| {
                let n = state.counts[slot];
                r.min_count.is_none_or(|m| n >= m) && r.max_count.is_none_or(|m| n <= m)
            })
            && r.predicates.iter().all(|p| p.matches(tp))
    }

    /// The next inactivity timer due for this state, given the last touchpoint time.
    pub(crate) fn next_timer(
        &self,
        state: &ModelState,
        last_touch: Millis,
    ) -> Option<(Millis, StageId)> {
        let stage = state.stage?;
        self.timers_from
            .get(stage as usize)?
            .iter()
            .map(|&(after, to)| (last_touch.saturating_add(after), to))
            .filter(|(due, _)| *due > state.last_timer)
            .min()
    }

    /// Fires every timer due at or before `until`, in order.
    pub(crate) fn fire_timers(
        &self,
        state: &mut ModelState,
        last_touch: Millis,
        until: Millis,
        changes: &mut Vec<Change>,
    ) {
        while let Some((due, to)) = self.next_timer(state, last_touch) {
            if due > until {
                break;
            }
            changes.push(Change {
                from: state.stage,
                to,
                at: due,
                previous_entered: state.entered_at,
            });
            state.stage = Some(to);
            state.entered_at = due;
            state.last_timer = due;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_models_load() {
        let names: Vec<String> = builtin_models()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        assert_eq!(names, ["funnel5", "loyalty5", "decision4"]);
    }

    #[test]
    fn errors_name_the_source_rule_and_problem() {
        let text = r#"
name = "m"
stages = ["a", "b"]
[[rules]]
name = "to-c"
event-types = ["x"]
to = "c"
"#;
        let e = StageModel::from_toml("models/m.toml", text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("models/m.toml"), "{msg}");
        assert!(msg.contains("rule \"to-c\""), "{msg}");
        assert!(msg.contains("unknown stage \"c\""), "{msg}");
    }

    #[test]
    fn rejects_bad_predicates_unknown_keys_and_self_timers() {
        let bad_pred =
            "name='m'\nstages=['a']\n[[rules]]\nname='r'\nwhere=['rating ~ 4']\nto='a'\n";
        assert!(
            StageModel::from_toml("f", bad_pred)
                .unwrap_err()
                .problem
                .contains("predicate")
        );
        let unknown = "name='m'\nstages=['a']\nstagez=['b']\n";
        assert!(
            StageModel::from_toml("f", unknown)
                .unwrap_err()
                .problem
                .contains("stagez")
        );
        let timer =
            "name='m'\nstages=['a']\n[[timers]]\nname='t'\nafter='1d'\nfrom=['a']\nto='a'\n";
        assert!(
            StageModel::from_toml("f", timer)
                .unwrap_err()
                .location
                .contains("timer")
        );
    }

    #[test]
    fn rules_without_event_types_keep_their_place_among_typed_ones() {
        let text = r#"
name = "m"
stages = ["a", "b", "c"]
[[rules]]
name = "store-first"
channels = ["store"]
to = "c"
[[rules]]
name = "view"
event-types = ["view"]
count-types = ["view", "buy"]
min-count = 2
to = "b"
[[rules]]
name = "any-view"
event-types = ["view"]
to = "a"
"#;
        let m = StageModel::from_toml("m.toml", text).unwrap();
        let tp = |ty: &str, channel: &str| Touchpoint {
            event_id: "e".into(),
            time: 1,
            channel: channel.into(),
            event_type: ty.into(),
            offline: false,
            properties: Default::default(),
        };
        let mut s = m.initial_state();
        // The channel rule comes first whatever the type, also for types
        // no rule names.
        assert_eq!(m.step(&mut s, &tp("other", "store")).map(|c| c.to), Some(2));
        let mut s = m.initial_state();
        assert_eq!(m.step(&mut s, &tp("view", "web")).map(|c| c.to), Some(0));
        // `buy` only counts (no rule names it as its type): it moves nothing
        // but makes the next view the second counted one.
        assert_eq!(m.step(&mut s, &tp("buy", "web")), None);
        assert_eq!(s.counts, vec![2]);
        assert_eq!(m.step(&mut s, &tp("view", "web")).map(|c| c.to), Some(1));
    }

    #[test]
    fn yaml_models_load() {
        let text =
            "name: y\nstages: [a, b]\nrules:\n  - name: r\n    event-types: [x]\n    to: b\n";
        let m = StageModel::from_yaml("y.yaml", text).unwrap();
        assert_eq!(m.stages(), ["a", "b"]);
    }

    #[test]
    fn predicates_compare_numbers_and_strings() {
        let mut tp = Touchpoint {
            event_id: "e".into(),
            time: 0,
            channel: "web".into(),
            event_type: "t".into(),
            offline: false,
            properties: Default::default(),
        };
        let ge = Predicate::parse("rating >= 4").unwrap();
        assert!(!ge.matches(&tp), "missing property never matches");
        tp.properties.insert("rating".into(), "4.5".into());
        assert!(ge.matches(&tp));
        tp.properties.insert("rating".into(), "3".into());
        assert!(!ge.matches(&tp));
        let eq = Predicate::parse("tier == \"gold\"").unwrap();
        tp.properties.insert("tier".into(), "gold".into());
        assert!(eq.matches(&tp));
    }
}
