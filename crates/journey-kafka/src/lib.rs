//! `journey-kafka`: the Kafka layer of the journey pipeline.
//!
//! Avro codecs in the Confluent wire format (magic byte 0, 4-byte big-endian
//! schema id, Avro binary) for the bundled schemas in `schemas/`, and thin,
//! blocking wrappers over librdkafka for consuming, producing transactionally
//! and creating topics. rdkafka types never leave this crate.

mod admin;
mod client;
mod codec;
mod error;
mod membership;

pub use admin::{TopicSpec, ensure_topics};
pub use client::{
    BEGINNING, ClientConfig, Consumer, Header, InputRecord, OutputRecord, Partition, Producer,
    partition_for,
};
pub use codec::{
    Codec, DeadLetter, DecodeError, MAGIC, SchemaIds, frame, read_container_events, schema_text,
    unframe,
};
pub use error::{Error, Result};
pub use membership::{Membership, ShareOwner};
