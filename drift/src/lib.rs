//! Drift detection, live model quality and A/B statistics for aurum.
//!
//! - [`profile`]: a reference [`Profile`] of a dataset (per column: type,
//!   quantile sketch and bins, mean/std, null rate, category counts; the
//!   model's prediction distribution), small enough to keep beside a model
//!   version.
//! - [`stats`]: Kolmogorov–Smirnov, chi-squared, PSI, Jensen–Shannon,
//!   Wasserstein, Welch's t and the two-proportion z-test, checked against
//!   scipy.
//! - [`report`]: a dataset compared with a profile, column by column with
//!   Evidently-like defaults, and the dataset's verdict.
//! - [`metrics`]: model-quality metrics of scores against outcomes (ROC
//!   AUC, average precision, log loss, accuracy, calibration; RMSE, MAE,
//!   R²), the one implementation live monitoring and training's validation
//!   share.
//! - [`performance`]: live quality from outcomes, with [`metrics`].
//! - [`ab`]: A/B analysis with a fixed-horizon design.
//! - [`html`]: a report as a self-contained HTML page with SVG charts.
//!
//! This crate knows nothing of models, feature stores, Delta or HTTP: it
//! takes columns of numbers and labels and returns serializable results.

pub mod ab;
pub mod html;
pub mod metrics;
pub mod performance;
pub mod profile;
pub mod report;
pub mod sort;
pub mod stats;

pub use profile::{Column, ColumnProfile, Profile, Values};
pub use report::{ColumnDrift, ColumnTest, DriftOptions, DriftReport, Method, Status};

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
