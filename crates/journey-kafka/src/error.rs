use thiserror::Error;

/// Errors of the Kafka layer.
#[derive(Debug, Error)]
pub enum Error {
    /// A librdkafka call failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic exists with a layout the pipeline cannot use.
    #[error("topic {topic}: {problem}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What is wrong.
        problem: String,
    },
    /// Encoding an output record failed (a bug: outputs are built from valid data).
    #[error("avro encode of {record}: {message}")]
    Encode {
        /// Record name.
        record: &'static str,
        /// The encoder's message.
        message: String,
    },
}

impl Error {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    /// Whether the error means this producer was fenced by a newer instance or
    /// the transaction can only be aborted (the caller rewinds and resumes).
    pub fn is_txn_abortable(&self) -> bool {
        match self {
            Error::Kafka {
                source: rdkafka::error::KafkaError::Transaction(e),
                ..
            } => e.txn_requires_abort(),
            _ => false,
        }
    }
}

/// Result with the Kafka layer's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
