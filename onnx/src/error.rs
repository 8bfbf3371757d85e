//! Errors of the ONNX layer.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with ONNX Runtime, naming the library, the model or the
/// step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(
        "ONNX Runtime is not available: {reason}. Install it with `{install}` \
         (or point ORT_DYLIB_PATH at libonnxruntime.so)"
    )]
    RuntimeMissing {
        /// Why the library could not be used.
        reason: String,
        /// The project command that installs it.
        install: &'static str,
    },
    /// ONNX Runtime refused the model.
    #[error("ONNX Runtime rejected model {model}: {message}")]
    InvalidModel {
        /// The model (name or file) that was refused.
        model: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// An input tensor could not be built from the values given.
    #[error("building the input tensor: {source}")]
    Input {
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// ONNX Runtime failed to run the model on the inputs.
    #[error("ONNX Runtime failed: {source}")]
    Run {
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// An output is not a tensor of the element type it was read as.
    #[error("reading the model output: {source}")]
    Output {
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// An output was asked for by a position the model does not have.
    #[error("the model has no output {index}: it has {count}")]
    NoOutput {
        /// The position asked for.
        index: usize,
        /// How many outputs the model has.
        count: usize,
    },
}

impl Error {
    /// ONNX Runtime's own message, without this crate's account of the step
    /// that failed: for callers that name the step in their own words (the
    /// Open Inference Protocol's answers, the champion comparison). Errors
    /// that do not come from running a model give their whole message.
    pub fn runtime_message(&self) -> String {
        match self {
            Error::Input { source } | Error::Run { source } | Error::Output { source } => {
                source.to_string()
            }
            other => other.to_string(),
        }
    }
}
