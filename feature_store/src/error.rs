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
    /// A Delta Lake operation failed.
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
    pub(crate) fn polars(
        context: impl Into<String>,
    ) -> impl FnOnce(polars::error::PolarsError) -> Self {
        let context = context.into();
        move |source| Error::Polars { context, source }
    }

    pub(crate) fn delta(
        table: impl Into<String>,
    ) -> impl FnOnce(deltalake::DeltaTableError) -> Self {
        let table = table.into();
        move |source| Error::Delta { table, source }
    }
}
