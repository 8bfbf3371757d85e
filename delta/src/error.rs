//! Errors of the Delta layer.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong reading or writing a Delta table, naming the table.
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
    /// deltalake refused or failed an operation on the table.
    #[error("Delta table {table}: {source}")]
    Delta {
        /// The table name or location.
        table: String,
        /// The deltalake error.
        source: deltalake::DeltaTableError,
    },
    /// Converting between polars and Arrow failed.
    #[error("Arrow conversion ({context}): {source}")]
    Arrow {
        /// What was being converted.
        context: String,
        /// The arrow error.
        source: arrow_schema::ArrowError,
    },
    /// A Delta table that should exist does not.
    #[error("Delta table {0} does not exist yet; run the pipeline first")]
    TableMissing(String),
    /// A read asked for a column the table does not have.
    #[error("table {table} has no column {column:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The missing column.
        column: String,
    },
    /// A write would change a table's schema in a way not allowed.
    #[error("table {table}: {message}")]
    SchemaChange {
        /// The table.
        table: String,
        /// The difference and what allows it.
        message: String,
    },
    /// A storage location could not be parsed or its object store built
    /// (the location is shown without credentials).
    #[error("storage location {location}: {message}")]
    Storage {
        /// The location, redacted.
        location: String,
        /// What was wrong.
        message: String,
    },
    /// The Delta kernel refused or failed to read a table: a reader feature
    /// it cannot honour (named in the message), a missing version, a broken
    /// log, or an unreachable store.
    #[error("Delta table {table}: {message}")]
    Protocol {
        /// The table location, redacted.
        table: String,
        /// The kernel's message.
        message: String,
    },
    /// Another writer committed the same step to the table after this
    /// writer planned its commit; nothing of this write was committed. The
    /// caller re-plans from the table's committed state.
    #[error("Delta table {table}: {message}; nothing of this write was committed")]
    Conflict {
        /// The table name or location.
        table: String,
        /// Which step, and what the other writer committed.
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
    /// Wraps a polars error with what was being done.
    pub fn polars(context: impl Into<String>) -> impl FnOnce(polars::error::PolarsError) -> Self {
        let context = context.into();
        move |source| Error::Polars { context, source }
    }

    pub(crate) fn delta(
        table: impl Into<String>,
    ) -> impl FnOnce(deltalake::DeltaTableError) -> Self {
        let table = table.into();
        move |source| Error::Delta { table, source }
    }

    /// Whether the write lost a race to another writer of the same step
    /// ([`Error::Conflict`]): retrying from the committed state is safe.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
