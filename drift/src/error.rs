//! What can go wrong in a drift computation.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a drift computation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Two columns of one dataset have different lengths.
    #[error("column {column} has {rows} rows where the dataset has {expected}")]
    Ragged {
        /// The column.
        column: String,
        /// Its rows.
        rows: usize,
        /// The dataset's rows.
        expected: usize,
    },
    /// A dataset names a column twice.
    #[error("column {0} appears twice")]
    DuplicateColumn(String),
    /// A column is numeric on one side and categorical on the other.
    #[error("column {column} is {reference} in the reference but {current} in the current data")]
    TypeMismatch {
        /// The column.
        column: String,
        /// Its reference type.
        reference: &'static str,
        /// Its current type.
        current: &'static str,
    },
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
}
