//! Avro codecs for the bundled schemas, in the Confluent wire format.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use journey_core::{ChannelCounts, Event, Identifier, Millis, ProfileMerge, Transition};
use thiserror::Error;

use crate::{Error, Result};

/// First byte of every Confluent-framed payload.
pub const MAGIC: u8 = 0;

const SCHEMAS: [(&str, &str); 5] = [
    (
        "InteractionEvent",
        include_str!("../../../schemas/InteractionEvent.avsc"),
    ),
    (
        "StageTransition",
        include_str!("../../../schemas/StageTransition.avsc"),
    ),
    (
        "DeadLetter",
        include_str!("../../../schemas/DeadLetter.avsc"),
    ),
    (
        "ProfileMerge",
        include_str!("../../../schemas/ProfileMerge.avsc"),
    ),
    (
        "IdentityLink",
        include_str!("../../../schemas/IdentityLink.avsc"),
    ),
];

/// The text of a bundled schema (`InteractionEvent`, `StageTransition`, ...).
pub fn schema_text(name: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

const CHANNELS: [&str; 12] = [
    "web",
    "mobile_app",
    "email",
    "sms",
    "social",
    "paid_search",
    "organic_search",
    "display_ads",
    "review_site",
    "store",
    "call_center",
    "chat",
];

/// Schema ids written in (and accepted from) the Confluent frame. Without a
/// registry the bundled ids 1001–1005 are used; with one, set the ids it assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchemaIds {
    /// `InteractionEvent` (input).
    pub interaction_event: u32,
    /// `StageTransition`.
    pub stage_transition: u32,
    /// `DeadLetter`.
    pub dead_letter: u32,
    /// `ProfileMerge`.
    pub profile_merge: u32,
    /// `IdentityLink`.
    pub identity_link: u32,
}

impl Default for SchemaIds {
    fn default() -> Self {
        SchemaIds {
            interaction_event: 1001,
            stage_transition: 1002,
            dead_letter: 1003,
            profile_merge: 1004,
            identity_link: 1005,
        }
    }
}

/// Why an input payload could not be decoded (each has a stable reason code).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Too short, or the first byte is not the magic byte 0.
    #[error("payload is not Confluent-framed (magic byte 0 + 4-byte schema id)")]
    NotFramed,
    /// The schema id is not the one configured for the record.
    #[error("unknown schema id {found} (expected {expected})")]
    UnknownSchemaId {
        /// Id in the frame.
        found: u32,
        /// Id accepted.
        expected: u32,
    },
    /// The bytes are not a valid Avro datum of the schema.
    #[error("invalid avro: {0}")]
    InvalidAvro(String),
    /// The datum decoded but bytes were left over: written with another schema.
    #[error("{0} bytes left after the avro datum: not written with this schema")]
    TrailingBytes(usize),
    /// The record has no value or is larger than allowed.
    #[error("payload of {size} bytes is empty or above the limit of {limit}")]
    Oversized {
        /// Size of the payload.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
}

impl DecodeError {
    /// A stable reason code for dead letters and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::NotFramed => "not_confluent_framed",
            DecodeError::UnknownSchemaId { .. } => "unknown_schema_id",
            DecodeError::InvalidAvro(_) => "invalid_avro",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
            DecodeError::Oversized { .. } => "oversized",
        }
    }
}

/// Prefixes an Avro datum with the Confluent frame.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed payload into schema id and datum.
pub fn unframe(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if payload.len() < 5 || payload[0] != MAGIC {
        return Err(DecodeError::NotFramed);
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[5..]))
}

/// A record that could not be used, for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Reason code.
    pub reason: String,
    /// Explanation.
    pub detail: String,
    /// Step that refused it (`decode`, `validate`).
    pub stage: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Source Kafka timestamp.
    pub timestamp: Option<Millis>,
    /// Original key bytes.
    pub key: Option<Vec<u8>>,
    /// Original value bytes.
    pub value: Option<Vec<u8>>,
    /// When it failed (wall clock).
    pub failed_at: Millis,
}

/// Encoder and decoder for the bundled schemas.
pub struct Codec {
    ids: SchemaIds,
    max_payload: usize,
    event: Schema,
    transition: Schema,
    dead_letter: Schema,
    merge: Schema,
    link: Schema,
}

/// Unframes a payload, checks its schema id and decodes exactly one datum.
fn datum(schema: &Schema, expected: u32, payload: &[u8]) -> Result<Value, DecodeError> {
    let (found, mut bytes) = unframe(payload)?;
    if found != expected {
        return Err(DecodeError::UnknownSchemaId { found, expected });
    }
    let value = from_avro_datum(schema, &mut bytes, None)
        .map_err(|e| DecodeError::InvalidAvro(e.to_string()))?;
    if !bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(bytes.len()));
    }
    Ok(value)
}

fn parse(name: &str) -> Schema {
    Schema::parse_str(schema_text(name).expect("bundled")).expect("bundled schemas are valid")
}

fn opt_str(v: Option<&str>) -> Value {
    match v {
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_string()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn identifier_value(id: &Identifier) -> Value {
    Value::Record(vec![
        ("type".into(), Value::String(id.kind.to_string())),
        ("value".into(), Value::String(id.value.clone())),
    ])
}

fn identifiers_value(ids: &[Identifier]) -> Value {
    Value::Array(ids.iter().map(identifier_value).collect())
}

impl Codec {
    /// A codec with the given schema ids and input payload limit in bytes.
    pub fn new(ids: SchemaIds, max_payload: usize) -> Self {
        Codec {
            ids,
            max_payload,
            event: parse("InteractionEvent"),
            transition: parse("StageTransition"),
            dead_letter: parse("DeadLetter"),
            merge: parse("ProfileMerge"),
            link: parse("IdentityLink"),
        }
    }

    /// The schema ids in use.
    pub fn ids(&self) -> SchemaIds {
        self.ids
    }

    fn encode(
        &self,
        record: &'static str,
        schema: &Schema,
        id: u32,
        value: Value,
    ) -> Result<Vec<u8>> {
        let datum = to_avro_datum(schema, value).map_err(|e| Error::Encode {
            record,
            message: e.to_string(),
        })?;
        Ok(frame(id, &datum))
    }

    /// Encodes an interaction event.
    pub fn encode_event(&self, e: &Event) -> Result<Vec<u8>> {
        let (channel, other) = match CHANNELS.iter().position(|c| *c == e.channel) {
            Some(i) => (Value::Enum(i as u32, e.channel.clone()), None),
            None => (Value::Enum(12, "other".into()), Some(e.channel.as_str())),
        };
        let value = Value::Record(vec![
            ("event_id".into(), Value::String(e.event_id.clone())),
            ("event_time".into(), Value::TimestampMillis(e.time)),
            ("channel".into(), channel),
            ("channel_other".into(), opt_str(other)),
            ("event_type".into(), Value::String(e.event_type.clone())),
            (
                "mode".into(),
                if e.offline {
                    Value::Enum(1, "offline".into())
                } else {
                    Value::Enum(0, "online".into())
                },
            ),
            (
                "touchpoint".into(),
                if e.direct {
                    Value::Enum(0, "direct".into())
                } else {
                    Value::Enum(1, "indirect".into())
                },
            ),
            ("identifiers".into(), identifiers_value(&e.identifiers)),
            (
                "value".into(),
                match e.value {
                    Some(v) => Value::Union(1, Box::new(Value::Double(v))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("currency".into(), opt_str(e.currency.as_deref())),
            ("campaign".into(), opt_str(e.campaign.as_deref())),
            (
                "properties".into(),
                Value::Map(
                    e.properties
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect::<HashMap<_, _>>(),
                ),
            ),
        ]);
        self.encode(
            "InteractionEvent",
            &self.event,
            self.ids.interaction_event,
            value,
        )
    }

    /// Decodes an interaction event from a Confluent-framed payload.
    pub fn decode_event(&self, payload: &[u8]) -> Result<Event, DecodeError> {
        if payload.is_empty() || payload.len() > self.max_payload {
            return Err(DecodeError::Oversized {
                size: payload.len(),
                limit: self.max_payload,
            });
        }
        let value = datum(&self.event, self.ids.interaction_event, payload)?;
        event_from_value(value).map_err(DecodeError::InvalidAvro)
    }

    /// Encodes a stage transition; `emit_time` is the wall clock.
    pub fn encode_transition(&self, t: &Transition, emit_time: Millis) -> Result<Vec<u8>> {
        let trig = t.trigger.as_ref();
        let value = Value::Record(vec![
            ("transition_id".into(), Value::String(t.id())),
            ("customer_key".into(), Value::String(t.customer_key.clone())),
            ("identifiers".into(), identifiers_value(&t.identifiers)),
            ("model".into(), Value::String(t.model.to_string())),
            ("from_stage".into(), opt_str(t.from.as_deref())),
            ("to_stage".into(), Value::String(t.to.to_string())),
            (
                "cause".into(),
                Value::Enum(t.cause as u32, t.cause.as_str().into()),
            ),
            ("event_time".into(), Value::TimestampMillis(t.time)),
            ("emit_time".into(), Value::TimestampMillis(emit_time)),
            (
                "trigger_event_id".into(),
                opt_str(trig.map(|x| x.event_id.as_str())),
            ),
            ("trigger_channel".into(), opt_str(trig.map(|x| &*x.channel))),
            (
                "trigger_event_type".into(),
                opt_str(trig.map(|x| &*x.event_type)),
            ),
            (
                "previous_stage_duration_ms".into(),
                match t.previous_stage_ms {
                    Some(v) => Value::Union(1, Box::new(Value::Long(v))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("sequence".into(), Value::Long(t.sequence as i64)),
            ("touchpoint_count".into(), Value::Long(t.touchpoints as i64)),
            (
                "channel_counts".into(),
                Value::Map(
                    t.channel_counts
                        .iter()
                        .map(|(k, v)| (k.to_string(), Value::Long(v as i64)))
                        .collect(),
                ),
            ),
        ]);
        self.encode(
            "StageTransition",
            &self.transition,
            self.ids.stage_transition,
            value,
        )
    }

    /// Decodes a stage transition (used by `journey tail` and tests).
    pub fn decode_transition(&self, payload: &[u8]) -> Result<Transition, DecodeError> {
        let value = datum(&self.transition, self.ids.stage_transition, payload)?;
        transition_from_value(value).map_err(DecodeError::InvalidAvro)
    }

    /// Encodes a dead letter.
    pub fn encode_dead_letter(&self, d: &DeadLetter) -> Result<Vec<u8>> {
        let bytes = |b: &Option<Vec<u8>>| match b {
            Some(b) => Value::Union(1, Box::new(Value::Bytes(b.clone()))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let value = Value::Record(vec![
            ("reason".into(), Value::String(d.reason.clone())),
            ("detail".into(), Value::String(d.detail.clone())),
            ("stage".into(), Value::String(d.stage.clone())),
            ("source_topic".into(), Value::String(d.topic.clone())),
            ("source_partition".into(), Value::Int(d.partition)),
            ("source_offset".into(), Value::Long(d.offset)),
            (
                "source_timestamp".into(),
                match d.timestamp {
                    Some(t) => Value::Union(1, Box::new(Value::TimestampMillis(t))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
            ("original_key".into(), bytes(&d.key)),
            ("original_value".into(), bytes(&d.value)),
            ("failed_at".into(), Value::TimestampMillis(d.failed_at)),
        ]);
        self.encode("DeadLetter", &self.dead_letter, self.ids.dead_letter, value)
    }

    /// Decodes a dead letter.
    pub fn decode_dead_letter(&self, payload: &[u8]) -> Result<DeadLetter, DecodeError> {
        let value = datum(&self.dead_letter, self.ids.dead_letter, payload)?;
        let f = fields(value).map_err(DecodeError::InvalidAvro)?;
        let bytes = |k: &str| match f.get(k).map(unwrap_union) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        };
        Ok(DeadLetter {
            reason: string(&f, "reason").map_err(DecodeError::InvalidAvro)?,
            detail: string(&f, "detail").map_err(DecodeError::InvalidAvro)?,
            stage: string(&f, "stage").map_err(DecodeError::InvalidAvro)?,
            topic: string(&f, "source_topic").map_err(DecodeError::InvalidAvro)?,
            partition: match f.get("source_partition") {
                Some(Value::Int(p)) => *p,
                _ => -1,
            },
            offset: long(&f, "source_offset").map_err(DecodeError::InvalidAvro)?,
            timestamp: long(&f, "source_timestamp").ok(),
            key: bytes("original_key"),
            value: bytes("original_value"),
            failed_at: long(&f, "failed_at").map_err(DecodeError::InvalidAvro)?,
        })
    }

    /// Encodes a profile merge.
    pub fn encode_merge(&self, m: &ProfileMerge, emit_time: Millis) -> Result<Vec<u8>> {
        let value = Value::Record(vec![
            (
                "surviving_key".into(),
                Value::String(m.surviving_key.clone()),
            ),
            ("absorbed_key".into(), Value::String(m.absorbed_key.clone())),
            ("identifiers".into(), identifiers_value(&m.identifiers)),
            ("event_time".into(), Value::TimestampMillis(m.time)),
            (
                "trigger_event_id".into(),
                Value::String(m.trigger_event_id.clone()),
            ),
            (
                "touchpoints_absorbed".into(),
                Value::Long(m.touchpoints_absorbed as i64),
            ),
            ("emit_time".into(), Value::TimestampMillis(emit_time)),
        ]);
        self.encode("ProfileMerge", &self.merge, self.ids.profile_merge, value)
    }

    /// Encodes an identity link (applied, or refused with a reason).
    pub fn encode_link(
        &self,
        a: &Identifier,
        b: &Identifier,
        event_id: &str,
        time: Millis,
        rejected: Option<&str>,
    ) -> Result<Vec<u8>> {
        let value = Value::Record(vec![
            ("a".into(), identifier_value(a)),
            ("b".into(), identifier_value(b)),
            ("event_id".into(), Value::String(event_id.into())),
            ("event_time".into(), Value::TimestampMillis(time)),
            ("accepted".into(), Value::Boolean(rejected.is_none())),
            ("rejected_reason".into(), opt_str(rejected)),
        ]);
        self.encode("IdentityLink", &self.link, self.ids.identity_link, value)
    }
}

/// Reads interaction events from an Avro object container file (as written
/// by any Avro library with `schemas/InteractionEvent.avsc`). Each item is an
/// event or why that record is not one.
pub fn read_container_events<R: std::io::Read>(
    reader: R,
) -> Result<impl Iterator<Item = Result<Event, String>>, String> {
    static SCHEMA: std::sync::LazyLock<Schema> =
        std::sync::LazyLock::new(|| parse("InteractionEvent"));
    // The reader resolves the file's writer schema into ours.
    let values = apache_avro::Reader::with_schema(&SCHEMA, reader).map_err(|e| e.to_string())?;
    Ok(values.map(|v| v.map_err(|e| e.to_string()).and_then(event_from_value)))
}

type Fields = BTreeMap<String, Value>;

fn fields(v: Value) -> Result<Fields, String> {
    match v {
        Value::Record(f) => Ok(f.into_iter().collect()),
        other => Err(format!("expected a record, got {other:?}")),
    }
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner,
        v => v,
    }
}

fn string(f: &Fields, k: &str) -> Result<String, String> {
    str_field(f, k).map(str::to_owned)
}

/// The text of string (or enum) field `k`, borrowed.
fn str_field<'f>(f: &'f Fields, k: &str) -> Result<&'f str, String> {
    match f.get(k).map(unwrap_union) {
        Some(Value::String(s)) | Some(Value::Enum(_, s)) => Ok(s),
        other => Err(format!("field {k}: expected a string, got {other:?}")),
    }
}

fn opt_string(f: &Fields, k: &str) -> Option<String> {
    string(f, k).ok()
}

fn long(f: &Fields, k: &str) -> Result<i64, String> {
    match f.get(k).map(unwrap_union) {
        Some(Value::Long(n)) | Some(Value::TimestampMillis(n)) => Ok(*n),
        Some(Value::Int(n)) => Ok(*n as i64),
        other => Err(format!("field {k}: expected a long, got {other:?}")),
    }
}

fn identifiers(f: &Fields, k: &str) -> Result<Vec<Identifier>, String> {
    let Some(Value::Array(items)) = f.get(k) else {
        return Err(format!("field {k}: expected an array"));
    };
    items
        .iter()
        .map(|i| {
            let f = fields(i.clone())?;
            Ok(Identifier {
                kind: Identifier::type_name(str_field(&f, "type")?),
                value: string(&f, "value")?,
            })
        })
        .collect()
}

fn event_from_value(v: Value) -> Result<Event, String> {
    let f = fields(v)?;
    let mut channel = string(&f, "channel")?;
    if channel == "other"
        && let Some(o) = opt_string(&f, "channel_other")
    {
        channel = o;
    }
    let properties = match f.get("properties") {
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("property {k}: expected a string, got {other:?}")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        _ => BTreeMap::new(),
    };
    Ok(Event {
        event_id: string(&f, "event_id")?,
        time: long(&f, "event_time")?,
        channel,
        event_type: string(&f, "event_type")?,
        offline: string(&f, "mode")? == "offline",
        direct: string(&f, "touchpoint")? == "direct",
        identifiers: identifiers(&f, "identifiers")?,
        value: match f.get("value").map(unwrap_union) {
            Some(Value::Double(d)) => Some(*d),
            _ => None,
        },
        currency: opt_string(&f, "currency"),
        campaign: opt_string(&f, "campaign"),
        properties,
    })
}

fn transition_from_value(v: Value) -> Result<Transition, String> {
    use journey_core::{Cause, TriggerRef};
    let f = fields(v)?;
    let cause = match string(&f, "cause")?.as_str() {
        "touchpoint" => Cause::Touchpoint,
        "merge" => Cause::Merge,
        "late_event" => Cause::LateEvent,
        "timer" => Cause::Timer,
        other => return Err(format!("unknown cause {other}")),
    };
    let trigger = opt_string(&f, "trigger_event_id").map(|event_id| TriggerRef {
        event_id,
        channel: opt_string(&f, "trigger_channel").unwrap_or_default().into(),
        event_type: opt_string(&f, "trigger_event_type")
            .unwrap_or_default()
            .into(),
    });
    let channel_counts = match f.get("channel_counts") {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Long(n) => Some((k.as_str(), *n as u64)),
                _ => None,
            })
            .collect(),
        _ => ChannelCounts::default(),
    };
    Ok(Transition {
        customer_key: string(&f, "customer_key")?,
        identifiers: identifiers(&f, "identifiers")?,
        model: string(&f, "model")?.into(),
        from: opt_string(&f, "from_stage").map(Into::into),
        to: string(&f, "to_stage")?.into(),
        cause,
        time: long(&f, "event_time")?,
        trigger,
        previous_stage_ms: long(&f, "previous_stage_duration_ms").ok(),
        sequence: long(&f, "sequence")? as u64,
        touchpoints: long(&f, "touchpoint_count")? as u64,
        channel_counts: channel_counts.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            event_id: "e-1".into(),
            time: 1_700_000_000_123,
            channel: "kiosk".into(),
            event_type: "purchase".into(),
            offline: true,
            direct: false,
            identifiers: vec![
                Identifier::new("email", "a@b"),
                Identifier::new("customer_id", "C-1"),
            ],
            value: Some(12.5),
            currency: Some("EUR".into()),
            campaign: None,
            properties: BTreeMap::from([("rating".into(), "5".into())]),
        }
    }

    #[test]
    fn event_round_trips_including_open_channel() {
        let c = Codec::new(SchemaIds::default(), 1 << 20);
        let bytes = c.encode_event(&event()).unwrap();
        assert_eq!(
            &bytes[..5],
            &[0, 0, 0, 0x03, 0xe9],
            "magic byte and id 1001"
        );
        assert_eq!(c.decode_event(&bytes).unwrap(), event());
        let mut web = event();
        web.channel = "web".into();
        assert_eq!(c.decode_event(&c.encode_event(&web).unwrap()).unwrap(), web);
    }

    #[test]
    fn bad_payloads_are_classified() {
        let c = Codec::new(SchemaIds::default(), 64);
        let good = Codec::new(SchemaIds::default(), 1 << 20)
            .encode_event(&event())
            .unwrap();
        assert_eq!(
            c.decode_event(b"hello").unwrap_err().code(),
            "not_confluent_framed"
        );
        assert_eq!(c.decode_event(&[]).unwrap_err().code(), "oversized");
        assert_eq!(c.decode_event(&good).unwrap_err().code(), "oversized");
        let c = Codec::new(SchemaIds::default(), 1 << 20);
        let mut wrong_id = good.clone();
        wrong_id[4] = 0xea;
        assert_eq!(
            c.decode_event(&wrong_id).unwrap_err().code(),
            "unknown_schema_id"
        );
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            c.decode_event(&trailing).unwrap_err().code(),
            "trailing_bytes"
        );
        let truncated = &good[..good.len() - 4];
        assert_eq!(
            c.decode_event(truncated).unwrap_err().code(),
            "invalid_avro"
        );
        assert_eq!(
            c.decode_event(&frame(1001, &[0xff; 8])).unwrap_err().code(),
            "invalid_avro"
        );
    }

    #[test]
    fn transition_round_trips() {
        let c = Codec::new(SchemaIds::default(), 1 << 20);
        let t = Transition {
            customer_key: "customer_id:C-1".into(),
            identifiers: vec![Identifier::new("customer_id", "C-1")],
            model: "funnel5".into(),
            from: Some("consideration".into()),
            to: "purchase".into(),
            cause: journey_core::Cause::LateEvent,
            time: 5,
            trigger: Some(journey_core::TriggerRef {
                event_id: "e".into(),
                channel: "store".into(),
                event_type: "purchase".into(),
            }),
            previous_stage_ms: Some(9),
            sequence: 3,
            touchpoints: 7,
            channel_counts: std::sync::Arc::new([("store", 7)].into_iter().collect()),
        };
        assert_eq!(
            c.decode_transition(&c.encode_transition(&t, 99).unwrap())
                .unwrap(),
            t
        );
    }

    #[test]
    fn dead_letters_keep_original_bytes() {
        let c = Codec::new(SchemaIds::default(), 1 << 20);
        let d = DeadLetter {
            reason: "invalid_avro".into(),
            detail: "x".into(),
            stage: "decode".into(),
            topic: "in".into(),
            partition: 2,
            offset: 41,
            timestamp: Some(7),
            key: None,
            value: Some(vec![0, 1, 2, 255]),
            failed_at: 8,
        };
        assert_eq!(
            c.decode_dead_letter(&c.encode_dead_letter(&d).unwrap())
                .unwrap(),
            d
        );
        c.encode_merge(
            &ProfileMerge {
                surviving_key: "a".into(),
                absorbed_key: "b".into(),
                identifiers: vec![],
                time: 1,
                trigger_event_id: "e".into(),
                touchpoints_absorbed: 2,
            },
            3,
        )
        .unwrap();
        c.encode_link(
            &Identifier::new("email", "a"),
            &Identifier::new("phone", "1"),
            "e",
            1,
            Some("max_per_type"),
        )
        .unwrap();
    }
}
