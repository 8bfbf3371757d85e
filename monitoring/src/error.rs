//! Errors of the monitoring crate.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong setting up the monitor, reading or writing its tables,
/// or assembling an A/B analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The monitor's drift options are out of range.
    #[error(transparent)]
    InvalidDriftOptions(drift::Error),
    /// The alert webhook is not an http(s) URL. The URL is not repeated:
    /// webhook URLs carry secrets.
    #[error("the alert webhook is not an http(s) URL (it must start with http:// or https://)")]
    InvalidWebhook,
    /// An A/B metric name that is not `accuracy`, `outcome` or
    /// `absolute_error`.
    #[error("metric {0:?} is not accuracy, outcome or absolute_error")]
    UnknownMetric(String),
    /// The accuracy metric was asked for, but the outcomes are not all 0
    /// or 1.
    #[error("the accuracy metric needs 0/1 outcomes")]
    MetricNeedsBinary,
    /// The A/B control arm is not an alias of the model.
    #[error("there is no alias {0:?} to use as the control")]
    NoControl(String),
    /// A logged row does not have the shape its table promises.
    #[error("{0}")]
    Malformed(String),
    /// A reference profile could not be parsed.
    #[error("the reference profile is unreadable")]
    Profile(#[source] serde_json::Error),
    /// A background task stopped (panicked or was cancelled).
    #[error("{what} stopped: {message}")]
    Stopped {
        /// What the task was doing.
        what: &'static str,
        /// Why it stopped.
        message: String,
    },
    /// Reading or writing a Delta table failed. Boxed: the Delta layer's
    /// error is large, and every `Result` of this crate would carry its size.
    #[error(transparent)]
    Delta(Box<delta::Error>),
    /// A polars computation failed.
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
    /// A drift or A/B computation refused its input.
    #[error(transparent)]
    Drift(drift::Error),
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

impl From<delta::Error> for Error {
    fn from(e: delta::Error) -> Self {
        Error::Delta(Box::new(e))
    }
}
