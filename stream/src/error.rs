//! What can go wrong while landing a stream.

/// A `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the stream consumer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source's settings cannot make a consumer (a missing password
    /// variable, a setting librdkafka refuses). Retrying does not help.
    #[error("source {source_name}: {message}")]
    Config {
        /// The source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The brokers could not be reached, refused the credentials, or do not
    /// have the topic. Retried with backoff.
    #[error("Kafka {brokers}, topic {topic}: {message}")]
    Kafka {
        /// The bootstrap servers (no credentials: they are never in them).
        brokers: String,
        /// The topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// Bronze and the topic disagree in a way going on would lose or
    /// repeat events (bronze records offsets beyond the topic's end: the
    /// topic was deleted and recreated, or truncated). Retrying does not
    /// help; someone must decide where the stream resumes.
    #[error("Kafka {brokers}, topic {topic}: {message}")]
    Offsets {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// What disagrees, with the partition and offsets.
        message: String,
    },
    /// Reading or writing the bronze table failed. Boxed: the Delta
    /// layer's error is large.
    #[error(transparent)]
    Delta(Box<delta::Error>),
    /// Building the bronze batch failed.
    #[error("source {source_name}: building a bronze batch: {message}")]
    Batch {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// Bringing the window tiles up to bronze at a start failed (reading
    /// silver's history or bronze's rows since it).
    #[error("source {source_name}: catching the window tiles up with bronze: {message}")]
    Tiles {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// A bug: an invariant of this crate does not hold.
    #[error("internal error (a bug, please report): {0}")]
    Internal(String),
}

impl From<delta::Error> for Error {
    fn from(e: delta::Error) -> Self {
        Error::Delta(Box::new(e))
    }
}

impl Error {
    /// Whether trying again later may succeed (brokers or storage that are
    /// down now), as opposed to settings that must be fixed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka { .. } | Error::Delta(_) => true,
            Error::Config { .. }
            | Error::Offsets { .. }
            | Error::Batch { .. }
            | Error::Tiles { .. }
            | Error::Internal(_) => false,
        }
    }
}
