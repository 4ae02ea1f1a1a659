use thiserror::Error;

/// Errors of the core: invalid events and invalid stage models.
#[derive(Debug, Error)]
pub enum Error {
    /// An event cannot be processed (the worker dead-letters it).
    #[error(transparent)]
    Event(#[from] EventError),
    /// A stage model is invalid (rejected at start-up).
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Result with the core's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an event was refused; each variant has a stable reason code for dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// The event id is empty.
    #[error("event id is empty")]
    EmptyEventId,
    /// The event type is empty.
    #[error("event type is empty")]
    EmptyEventType,
    /// The event carries no identifier at all.
    #[error("event has no identifier")]
    NoIdentifier,
    /// Every identifier of the event is blocked by a guard (empty, `null`, ...).
    #[error("every identifier is blocked: {0}")]
    AllIdentifiersBlocked(String),
}

impl EventError {
    /// A stable, machine-readable reason code (used in dead letters and metrics).
    pub fn code(&self) -> &'static str {
        match self {
            EventError::EmptyEventId => "empty_event_id",
            EventError::EmptyEventType => "empty_event_type",
            EventError::NoIdentifier => "no_identifier",
            EventError::AllIdentifiersBlocked(_) => "all_identifiers_blocked",
        }
    }
}

/// A stage model that cannot be used, naming the source, the rule and the problem.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stage model {source_name}: {location}: {problem}")]
pub struct ModelError {
    /// Where the model came from (a file path or `builtin:NAME`).
    pub source_name: String,
    /// The rule, timer or field at fault (e.g. `rule "first-purchase"`).
    pub location: String,
    /// What is wrong.
    pub problem: String,
}
