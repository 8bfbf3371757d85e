//! The messages of the Open Inference Protocol's gRPC service
//! (`inference.GRPCInferenceService`, KServe's `grpc_predict_v2.proto`, the
//! part Triton shares), declared with prost from the specification's field
//! numbers. Only the calls aurum answers are here.

use std::collections::HashMap;

/// `ServerLive` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveRequest {}

/// `ServerLive` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerLiveResponse {
    /// Whether the server is live.
    #[prost(bool, tag = "1")]
    pub live: bool,
}

/// `ServerReady` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyRequest {}

/// `ServerReady` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReadyResponse {
    /// Whether the server is ready.
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ModelReady` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyRequest {
    /// The model.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version (empty: the served one).
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `ModelReady` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelReadyResponse {
    /// Whether the model is ready.
    #[prost(bool, tag = "1")]
    pub ready: bool,
}

/// `ServerMetadata` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataRequest {}

/// `ServerMetadata` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMetadataResponse {
    /// The server's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// The protocol extensions it supports.
    #[prost(string, repeated, tag = "3")]
    pub extensions: Vec<String>,
}

/// `ModelMetadata` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataRequest {
    /// The model.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version (empty: the served one).
    #[prost(string, tag = "2")]
    pub version: String,
}

/// A tensor's name, datatype and shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMetadata {
    /// The tensor's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The protocol's datatype (`FP32`, …).
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// The shape; -1 for a dimension of any size.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
}

/// `ModelMetadata` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataResponse {
    /// The model.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its versions.
    #[prost(string, repeated, tag = "2")]
    pub versions: Vec<String>,
    /// The platform.
    #[prost(string, tag = "3")]
    pub platform: String,
    /// The inputs.
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TensorMetadata>,
    /// The outputs.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorMetadata>,
}

/// A request or tensor parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    /// The value.
    #[prost(oneof = "ParameterChoice", tags = "1, 2, 3, 4, 5")]
    pub parameter_choice: Option<ParameterChoice>,
}

/// A parameter's value.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterChoice {
    /// A boolean.
    #[prost(bool, tag = "1")]
    BoolParam(bool),
    /// A signed integer.
    #[prost(int64, tag = "2")]
    Int64Param(i64),
    /// A string.
    #[prost(string, tag = "3")]
    StringParam(String),
    /// A double.
    #[prost(double, tag = "4")]
    DoubleParam(f64),
    /// An unsigned integer.
    #[prost(uint64, tag = "5")]
    Uint64Param(u64),
}

/// A tensor's values, typed (the alternative to raw contents).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    /// BOOL.
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    /// INT8, INT16, INT32.
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    /// INT64.
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    /// UINT8, UINT16, UINT32.
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    /// UINT64.
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    /// FP32.
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    /// FP64.
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    /// BYTES.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// An input tensor of a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    /// The input's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its datatype.
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// Its shape.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Its parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// Its values, typed (or in the request's `raw_input_contents`).
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// An output a request asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its parameters.
    #[prost(map = "string, message", tag = "2")]
    pub parameters: HashMap<String, InferParameter>,
}

/// `ModelInfer` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    /// The model.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// Its version (empty: the served one).
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// The request's id, echoed.
    #[prost(string, tag = "3")]
    pub id: String,
    /// Request parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The inputs.
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    /// The outputs asked for (all when empty).
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    /// The inputs' values as little-endian bytes, one entry per input, in
    /// input order (when given, for every input).
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

/// An output tensor of an answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    /// The output's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its datatype.
    #[prost(string, tag = "2")]
    pub datatype: String,
    /// Its shape.
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    /// Its parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// Typed values (aurum answers with raw contents instead).
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// `ModelInfer` answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    /// The model.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// The version that answered.
    #[prost(string, tag = "2")]
    pub model_version: String,
    /// The request's id.
    #[prost(string, tag = "3")]
    pub id: String,
    /// Answer parameters.
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    /// The outputs.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    /// The outputs' values as little-endian bytes, one entry per output.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}
