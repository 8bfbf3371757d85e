//! Errors of the feature store.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the feature store, with the input that caused it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A polars computation failed.
    #[error("{context}: {source}")]
    Polars {
        /// What was being done.
        context: String,
        /// The polars error.
        source: polars::error::PolarsError,
    },
    /// Reading or writing a Delta table failed. Boxed: the Delta layer's
    /// error is large, and every `Result` of this crate would carry its size.
    #[error(transparent)]
    Delta(Box<delta::Error>),
    /// A silver batch did not meet a quality gate: gold was not advanced.
    /// The run's report says what was committed.
    #[error("quality gate: {message}")]
    QualityGate {
        /// The checks that failed.
        message: String,
        /// What the run did (the held views are not in it).
        report: Box<crate::pipeline::PipelineReport>,
    },
    /// Data does not have the shape a feature view declares.
    #[error("feature view {view}: {message}")]
    Schema {
        /// The feature view.
        view: String,
        /// What does not fit.
        message: String,
    },
    /// A feature view or feature is not registered.
    #[error("unknown feature reference {0:?}: expected view:feature of a registered view")]
    UnknownFeature(String),
    /// The project file is invalid.
    #[error("{}:{line}: {}{message}", path.display(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Project {
        /// The project file.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: usize,
        /// The field, e.g. `feature_view[0].entity`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No project file was found.
    #[error("no aurum.toml in {} or any directory above it; run `aurum init DIR` to create a project", .0.display())]
    ProjectMissing(PathBuf),
    /// A bronze file cannot be parsed.
    #[error("cannot parse {}{}: {message}; no bronze rows of this source were committed", file.display(), row.map(|r| format!(" at row {r}")).unwrap_or_default())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The 1-based data row (the header is row 0), when known.
        row: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A Delta table source cannot be ingested as declared (a declared
    /// column missing, a type bronze cannot hold as text).
    #[error(
        "source {source_name}: Delta table {table} at version {version}: {message}; no bronze rows of this source were committed"
    )]
    DeltaSource {
        /// The source.
        source_name: String,
        /// The table location, without credentials.
        table: String,
        /// The table version read.
        version: u64,
        /// What is wrong, naming the column.
        message: String,
    },
    /// Pushed rows do not fit the feature view's schema.
    #[error("push to feature view {view}: {message}; nothing was applied")]
    InvalidPush {
        /// The feature view.
        view: String,
        /// What is wrong, naming the row and column.
        message: String,
    },
    /// An offline push was asked of a server without gold tables.
    #[error("cannot push {view} offline: this server was started without gold tables")]
    NoOfflineStore {
        /// The feature view.
        view: String,
    },
    /// Committing pushed rows to a gold table failed.
    #[error("committing pushed rows to the gold table of {view}: {message}")]
    OfflineWrite {
        /// The feature view.
        view: String,
        /// The commit's error.
        message: String,
    },
    /// A training-set spine lacks a column the request needs, or has it
    /// with the wrong type.
    #[error("{message}")]
    InvalidSpine {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A request is malformed (an empty or repeated feature list, a version
    /// pinned for a view not requested, …).
    #[error("{0}")]
    InvalidRequest(String),
    /// The shared online tier (Redis) is unreachable, timed out or refused a
    /// command; the URL in the message has its password redacted.
    #[error("online tier: {message}")]
    OnlineTier {
        /// What failed, naming the server.
        message: String,
    },
    /// A row in the shared online tier does not decode (written by another
    /// version of aurum, or by something else).
    #[error("online tier: the row of {view} for entity {entity:?} does not decode: {message}")]
    OnlineTierValue {
        /// The feature view.
        view: String,
        /// The entity key.
        entity: String,
        /// What does not fit.
        message: String,
    },
    /// A bug: an invariant of aurum's own code does not hold.
    #[error("internal error (a bug, please report): {0}")]
    Internal(String),
    /// Reading or writing a file failed.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether a commit lost the race to another run of the same step
    /// (nothing of it was committed; re-planning from the tables is safe).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Delta(e) if e.is_conflict())
    }

    /// Wraps a polars error with what was being done.
    pub fn polars(context: impl Into<String>) -> impl FnOnce(polars::error::PolarsError) -> Self {
        let context = context.into();
        move |source| Error::Polars { context, source }
    }
}

impl From<delta::Error> for Error {
    fn from(e: delta::Error) -> Self {
        Error::Delta(Box::new(e))
    }
}
