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
mod error;
pub mod html;
pub mod metrics;
pub mod performance;
pub mod profile;
pub mod report;
pub mod sort;
pub mod stats;

pub use error::{Error, Result};
pub use profile::{Column, ColumnProfile, Profile, Values};
pub use report::{ColumnDrift, ColumnTest, DriftOptions, DriftReport, Method, Status};
