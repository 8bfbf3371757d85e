//! aurum's one door to ONNX Runtime, and its ONNX writer.
//!
//! - [`runtime`]: finding and loading `libonnxruntime.so` (`ORT_DYLIB_PATH`,
//!   else `.tools/onnxruntime/` above the executable or the current
//!   directory) into the one environment a process may have, created on first
//!   use; a missing library is an error naming `make onnxruntime`.
//! - [`Model`]: a model loaded into a session built one way for the whole
//!   product (full graph optimisation, one intra-op thread unless
//!   [`SessionOptions`] say otherwise), with the [`Signature`] the session
//!   reports; it runs on a borrowed float32 [`Matrix`] (the `/predict` and
//!   training path, no copy) or on named [`Inputs`], and answers
//!   [`Outputs`] read in place.
//! - [`graph`]: writing ONNX models (the few protobuf messages aurum needs),
//!   used to export trained models.
//!
//! The registry validates models with it, training exports and checks them,
//! serving runs them; no other aurum crate talks to ONNX Runtime (the `ort`
//! crate) itself. It depends on no aurum crate.

pub mod error;
pub mod graph;
pub mod model;
pub mod runtime;
pub mod tensor;

pub use error::{Error, Result};
pub use graph::{Dim, GraphBuilder, OPSET};
pub use model::{Model, SessionOptions, Signature, TensorSpec};
pub use runtime::{DYLIB_ENV, INSTALL_COMMAND, PROJECT_DYLIB, init, locate};
pub use tensor::{Inputs, Matrix, Output, Outputs, TensorData, TensorSlice};
