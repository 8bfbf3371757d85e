//! What happens to predictions after they are served: the prediction log,
//! live drift monitoring, true outcomes matched to predictions, live model
//! quality, and the inputs of the A/B analysis.
//!
//! - [`PredictionLog`]: a bounded queue the request path hands its
//!   [`PredictionRecord`]s to without waiting, and one writer task that
//!   commits them to the [`predictions`] Delta table and then hands them to
//!   the [`Monitor`].
//! - [`Monitor`]: per model version, a sliding window of served features
//!   and predictions compared with the version's reference profile, with
//!   alert hysteresis; the most recent predictions, so that outcomes can be
//!   matched to them ([`Monitor::apply_outcomes`]); live quality per version
//!   and arm ([`PerformanceRow`]).
//! - [`predictions`] and [`feedback`]: the two Delta tables this crate owns,
//!   their schemas, their writers and typed readers.
//! - [`ab`]: per-arm tallies of the outcomes, ready for [`drift::ab`].
//!
//! This crate speaks no HTTP: the model server maps its results to
//! answers, renders its metrics and delivers alert webhooks.

pub mod ab;
mod error;
pub mod feedback;
mod log;
mod monitor;
mod outcome;
mod performance;
pub mod predictions;
mod recent;
mod record;
mod tables;
mod window;

pub use error::{Error, Result};
pub use log::{LogOptions, LogStats, PredictionLog};
pub use monitor::{
    Alert, AlertHook, Monitor, MonitorCounts, MonitorOptions, VersionState, reference_profile,
};
pub use outcome::{Applied, NotApplied, OutcomeError, OutcomeTarget};
pub use performance::PerformanceRow;
pub use record::{PredictionRecord, headline};

/// The directory, under a project's data directory, that holds the
/// [`predictions`] and [`feedback`] tables.
pub const LOG_DIR: &str = "logs";
