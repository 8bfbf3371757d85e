//! Why a prediction could not be made. The variants name the input that was
//! wrong; `crate::error` alone decides which HTTP status and code each one
//! is answered with.

use feature_store::FeatureStatus;
use feature_store::online::EntityKeyError;
use registry::mlflow_client::FEATURES_TAG;

/// A result of the inference layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a prediction could not be made. Cloned once per waiting request
/// when a micro-batched inference fails, so it holds no live handles.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No model is served under the requested name.
    #[error("model {model:?} is not served (served: {})", .served.join(", "))]
    ModelNotServed {
        /// The name asked for.
        model: String,
        /// The names that are served, sorted.
        served: Vec<String>,
    },
    /// The version has no registered feature list to assemble its input
    /// from.
    #[error(
        "model {model} v{version} was registered without a feature list (the {tag} tag when \
         registered through MLflow), so /predict cannot assemble its input",
        tag = FEATURES_TAG
    )]
    NoFeatureList {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
    },
    /// The request supplies a feature the model does not read.
    #[error("model {model} v{version} does not read feature {feature:?}; it reads {}", .reads.join(", "))]
    UnknownFeature {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
        /// The supplied column.
        feature: String,
        /// The features the version reads, in input order.
        reads: Vec<String>,
    },
    /// A supplied feature value is a number outside a 32-bit float's range.
    #[error("feature {feature:?} row {row}: {value} does not fit a 32-bit float")]
    FeatureValueOutOfRange {
        /// The feature reference.
        feature: String,
        /// The request row.
        row: usize,
        /// The value as sent (JSON).
        value: String,
    },
    /// A supplied feature value is neither a number, a boolean nor null.
    #[error("feature {feature:?} row {row}: {value} is not a number")]
    FeatureValueNotNumber {
        /// The feature reference.
        feature: String,
        /// The request row.
        row: usize,
        /// The value as sent (JSON).
        value: String,
    },
    /// The request lacks an entity key column a feature view needs.
    #[error("model {model} needs entity key {key:?} for feature view {view:?}")]
    MissingEntityKey {
        /// The model name.
        model: String,
        /// The join key.
        key: String,
        /// The view keyed by it.
        view: String,
    },
    /// An entity key value is neither an integer nor a string.
    #[error(transparent)]
    InvalidEntityKey(EntityKeyError),
    /// Under `missing_features = "reject"`: rows had features that were
    /// missing, null or stale (the first five such rows).
    #[error(
        "model {model} serves with missing_features = \"reject\" and features are missing: {}",
        describe_missing(.rows)
    )]
    MissingFeatures {
        /// The model name.
        model: String,
        /// Each row (request index) with its features that were not
        /// present, and their status.
        rows: Vec<(usize, Vec<(String, FeatureStatus)>)>,
    },
    /// The version reads a view the online store does not hold (a
    /// deployment fault, not the caller's).
    #[error(
        "model {model} v{version} reads features of view {view:?} that the online store \
         does not hold"
    )]
    ViewNotOnline {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
        /// The view.
        view: String,
    },
    /// The online store failed to answer a lookup.
    #[error("model {model} v{version} cannot be fed: {reason}")]
    LookupFailed {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
        /// The store's error.
        reason: String,
    },
    /// The shared online tier (Redis) cannot be read now.
    #[error("model {model} v{version} cannot be fed: {reason}")]
    OnlineTierUnavailable {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
        /// The tier's error (URL redacted).
        reason: String,
    },
    /// A stored feature the model reads holds a value that is not a number.
    #[error("feature {feature:?} holds a non-numeric value {value}")]
    NonNumericFeature {
        /// The feature reference.
        feature: String,
        /// The stored value (JSON).
        value: String,
    },
    /// The assembled input does not have one value per row and feature.
    #[error("assembled {values} values for {rows} rows of {width} features")]
    InputShape {
        /// Values assembled.
        values: usize,
        /// Rows asked for.
        rows: usize,
        /// Features per row.
        width: usize,
    },
    /// The model has no float output to answer with.
    #[error("the model has no float output for /predict to answer with")]
    NoFloatOutput,
    /// ONNX Runtime failed to build the input, run, or read the output (its
    /// message reads "building the input tensor: …", "ONNX Runtime failed:
    /// …" or "reading the model output: …").
    #[error("{message}")]
    Runtime {
        /// The onnx crate's message.
        message: String,
    },
    /// The model's output does not split into one part per row.
    #[error("model output shape {shape:?} does not split into {rows} rows")]
    OutputShape {
        /// The output's shape.
        shape: Vec<i64>,
        /// Rows run.
        rows: usize,
    },
    /// The micro-batcher's queue refused the request (it is full).
    #[error("the model's batching queue is full; retry shortly")]
    QueueFull,
    /// The micro-batcher's worker went away before answering.
    #[error("the batching worker stopped")]
    QueueClosed,
}

impl From<onnx::Error> for Error {
    fn from(e: onnx::Error) -> Self {
        Error::Runtime {
            message: e.to_string(),
        }
    }
}

impl Error {
    /// Whether the error arose while the input was assembled (before any
    /// inference ran).
    pub fn is_input(&self) -> bool {
        match self {
            Error::ModelNotServed { .. }
            | Error::NoFeatureList { .. }
            | Error::UnknownFeature { .. }
            | Error::FeatureValueOutOfRange { .. }
            | Error::FeatureValueNotNumber { .. }
            | Error::MissingEntityKey { .. }
            | Error::InvalidEntityKey(_)
            | Error::MissingFeatures { .. }
            | Error::ViewNotOnline { .. }
            | Error::LookupFailed { .. }
            | Error::NonNumericFeature { .. } => true,
            Error::InputShape { .. }
            | Error::NoFloatOutput
            | Error::OnlineTierUnavailable { .. }
            | Error::Runtime { .. }
            | Error::OutputShape { .. }
            | Error::QueueFull
            | Error::QueueClosed => false,
        }
    }
}

/// `row 3: v:x1 NotFound, v:x2 NullValue; row 7: …`
fn describe_missing(rows: &[(usize, Vec<(String, FeatureStatus)>)]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|(row, features)| {
            let list: Vec<String> = features
                .iter()
                .map(|(feature, status)| format!("{feature} {status:?}"))
                .collect();
            format!("row {row}: {}", list.join(", "))
        })
        .collect();
    rows.join("; ")
}
