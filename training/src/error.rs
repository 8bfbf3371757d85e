//! Errors of training.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while training, with the input that caused it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `[model.training]` table that cannot be used.
    #[error("{0}")]
    Spec(String),
    /// The training set is unusable.
    #[error("training set: {0}")]
    TrainingSet(String),
    /// Reading the training frame failed.
    #[error("{context}: {source}")]
    Data {
        /// What was being read.
        context: String,
        /// The polars error.
        source: polars::error::PolarsError,
    },
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Registration failed.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// ONNX Runtime could not load a model (the champion, when comparing
    /// against it).
    #[error(transparent)]
    Onnx(#[from] onnx::Error),
    /// A step of training broke an invariant of its own: a bug, please
    /// report it.
    #[error("internal error (a bug): {0}")]
    Internal(String),
}
