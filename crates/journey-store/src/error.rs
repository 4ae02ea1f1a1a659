use thiserror::Error;

/// Errors of the state store.
#[derive(Debug, Error)]
pub enum Error {
    /// RocksDB refused an operation.
    #[error("rocksdb: {context}: {message}")]
    Db {
        /// What was being done.
        context: String,
        /// RocksDB's message.
        message: String,
    },
    /// A stored value cannot be decoded.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// Which value.
        what: String,
        /// Why.
        message: String,
    },
    /// A value was written by an unknown format version.
    #[error("{what} has format version {found}, this build reads version {expected}")]
    Version {
        /// Which value.
        what: String,
        /// Version found.
        found: u8,
        /// Version supported.
        expected: u8,
    },
    /// Filesystem operation on the data directory failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn db(context: impl Into<String>, e: rocksdb::Error) -> Self {
        Error::Db {
            context: context.into(),
            message: e.into_string(),
        }
    }
}

/// Result with the store's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
