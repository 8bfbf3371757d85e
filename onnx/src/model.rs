//! Models loaded into ONNX Runtime sessions, with their signatures.

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Outlet, ValueType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime;
use crate::tensor::{Inputs, Matrix, Outputs};

/// The input and output tensors of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Inputs in the order the model declares them.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in the order the model declares them.
    pub outputs: Vec<TensorSpec>,
}

/// One tensor of a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The tensor name.
    pub name: String,
    /// The element type as ONNX Runtime names it (e.g. `f32`).
    pub dtype: String,
    /// The shape; `-1` marks a dynamic dimension.
    pub shape: Vec<i64>,
}

/// How a session is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads one inference may use inside an operator.
    pub intra_threads: usize,
}

impl Default for SessionOptions {
    /// Tuned for low-latency serving: one intra-op thread, because requests
    /// run in parallel across sessions instead.
    fn default() -> Self {
        SessionOptions { intra_threads: 1 }
    }
}

/// A model loaded into one ONNX Runtime session, with the signature the
/// session reports. Running it needs `&mut`, so callers that serve
/// concurrent requests keep several.
pub struct Model {
    session: Session,
    signature: Signature,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a model from memory with the default [`SessionOptions`];
    /// `name` names it in errors.
    pub fn load(name: &str, bytes: &[u8]) -> Result<Self> {
        Self::load_with(name, bytes, SessionOptions::default())
    }

    /// Loads a model from memory into a session built with `options` and
    /// full graph optimisation; `name` names it in errors.
    pub fn load_with(name: &str, bytes: &[u8], options: SessionOptions) -> Result<Self> {
        let env = runtime::environment()?;
        let invalid = |e: ort::Error| Error::InvalidModel {
            model: name.to_string(),
            message: e.to_string(),
        };
        let session = Session::builder(env)
            .map_err(invalid)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| invalid(e.into()))?
            .with_intra_threads(options.intra_threads)
            .map_err(|e| invalid(e.into()))?
            .commit_from_memory(bytes)
            .map_err(invalid)?;
        let signature = read_signature(&session);
        Ok(Model { session, signature })
    }

    /// The model's input and output tensors, as the session reports them.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signature, dropping the session (for callers that load a model
    /// only to validate it).
    pub fn into_signature(self) -> Signature {
        self.signature
    }

    /// Runs the model with `input` as its first (only) input.
    #[inline]
    pub fn run_matrix(&mut self, input: Matrix<'_>) -> Result<Outputs<'_>> {
        self.session
            .run(ort::inputs![input.tensor])
            .map(|inner| Outputs { inner })
            .map_err(|source| Error::Run { source })
    }

    /// Runs the model on named inputs.
    pub fn run(&mut self, inputs: Inputs) -> Result<Outputs<'_>> {
        self.session
            .run(inputs.values)
            .map(|inner| Outputs { inner })
            .map_err(|source| Error::Run { source })
    }
}

/// Reads a loaded session's input and output tensors.
fn read_signature(session: &Session) -> Signature {
    let spec = |outlet: &Outlet| match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: outlet.name().to_string(),
            dtype: ty.to_string(),
            shape: shape.iter().copied().collect(),
        },
        other => TensorSpec {
            name: outlet.name().to_string(),
            dtype: other.to_string(),
            shape: Vec::new(),
        },
    };
    Signature {
        inputs: session.inputs().iter().map(spec).collect(),
        outputs: session.outputs().iter().map(spec).collect(),
    }
}
