//! The Open Inference Protocol (KServe V2) REST endpoints.
//!
//! `GET /v2`, `/v2/health/live`, `/v2/health/ready`, model metadata and
//! readiness at `/v2/models/{m}[/versions/{v}][/ready]`, and
//! `POST /v2/models/{m}[/versions/{v}]/infer` with the protocol's tensor JSON
//! (`name`, `shape`, `datatype`, `data` flat or nested; `id` echoed;
//! `outputs` selecting outputs). Without a version, the model the server
//! serves under that name answers; with one, any `READY` version of the
//! registry, loaded on first use. Errors are `{"error": "..."}` with a 4xx
//! status for a client's mistake.
//!
//! The binary tensor data extension (tritonclient's default): with an
//! `Inference-Header-Content-Length: N` header, the body's first N bytes are
//! the JSON request and the rest the raw little-endian data of the inputs
//! whose `parameters.binary_data_size` gives their byte length, in order.
//! Outputs come back the same way when asked (`parameters.binary_data` on an
//! output, or `parameters.binary_data_output` on the request): the answer's
//! JSON gives each such output's `binary_data_size` and its bytes follow.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onnx::{Inputs, TensorData, TensorSlice};
use registry::{Signature, TensorSpec};
use serde_json::{Value, json};

use crate::error::AppError;
use crate::inference::{self, LoadedModel};
use crate::state::AppState;

/// The most tensor elements one request may send.
pub const MAX_ELEMENTS: usize = 1 << 24;

/// Sessions per version loaded on demand.
const ON_DEMAND_SESSIONS: usize = 2;

/// The routes, mounted by [`crate::app`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(version_infer),
        )
}

/// An error in the protocol's shape: `{"error": "..."}`.
#[derive(Debug)]
pub struct OipError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl OipError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        OipError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OipError {}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl OipError {
    /// The protocol's status for an error the server answers with
    /// `status` elsewhere: 404 stays, other client errors are 400.
    fn like(status: StatusCode, message: String) -> Self {
        let status = match status {
            StatusCode::NOT_FOUND => StatusCode::NOT_FOUND,
            s if s.is_client_error() => StatusCode::BAD_REQUEST,
            s => s,
        };
        OipError { status, message }
    }
}

impl From<registry::Error> for OipError {
    fn from(e: registry::Error) -> Self {
        let message = e.to_string();
        OipError::like(AppError::from(e).status, message)
    }
}

impl From<inference::Error> for OipError {
    fn from(e: inference::Error) -> Self {
        let message = e.to_string();
        OipError::like(AppError::from(e).status, message)
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "aurum", "version": env!("CARGO_PKG_VERSION"), "extensions": []}))
}

async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready})))
}

/// The model `name` at `version` (the served one when `None`).
pub(crate) async fn resolve(
    state: &Arc<AppState>,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, OipError> {
    let Some(version) = version else {
        return state.models.primary(name).map_err(OipError::from);
    };
    let number: u64 = version.parse().map_err(|_| OipError {
        status: StatusCode::NOT_FOUND,
        message: format!("model {name:?} has no version {version:?}: versions are numbers"),
    })?;
    let (state, name) = (state.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        state
            .models
            .version(&state.registry, &name, number, ON_DEMAND_SESSIONS)
    })
    .await
    .map_err(|e| OipError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("loading the model stopped: {e}"),
    })?
    .map_err(OipError::from)
}

pub(crate) fn datatype(dtype: &str) -> &str {
    match dtype {
        "f32" => "FP32",
        "f64" => "FP64",
        "f16" => "FP16",
        "i64" => "INT64",
        "i32" => "INT32",
        "i16" => "INT16",
        "i8" => "INT8",
        "u8" => "UINT8",
        "u16" => "UINT16",
        "u32" => "UINT32",
        "u64" => "UINT64",
        "bool" => "BOOL",
        "String" => "BYTES",
        other => other,
    }
}

fn tensor_metadata(spec: &TensorSpec) -> Value {
    json!({"name": spec.name, "datatype": datatype(&spec.dtype), "shape": spec.shape})
}

fn metadata(model: &LoadedModel) -> Json<Value> {
    let v = &model.version;
    Json(json!({
        "name": v.name,
        "versions": [v.version.to_string()],
        "platform": "onnxruntime_onnx",
        "inputs": v.signature.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "outputs": v.signature.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
    }))
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, OipError> {
    let model = resolve(&state, &model, None).await?;
    Ok(metadata(&model))
}

async fn version_metadata(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, OipError> {
    let model = resolve(&state, &model, Some(&version)).await?;
    Ok(metadata(&model))
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, OipError> {
    let m = resolve(&state, &model, None).await?;
    Ok(Json(json!({"name": m.version.name, "ready": true})))
}

async fn version_ready(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, OipError> {
    let m = resolve(&state, &model, Some(&version)).await?;
    Ok(Json(
        json!({"name": m.version.name, "version": m.version.version.to_string(), "ready": true}),
    ))
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OipError> {
    let model = resolve(&state, &model, None).await?;
    run(model, &headers, body).await
}

async fn version_infer(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OipError> {
    let model = resolve(&state, &model, Some(&version)).await?;
    run(model, &headers, body).await
}

/// The binary tensor data extension's header: the JSON part's length.
const HEADER_LENGTH: &str = "inference-header-content-length";

async fn run(
    model: Arc<LoadedModel>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, OipError> {
    let signature = &model.version.signature;
    let (request, prepared) = parse_request(signature, headers, &body)?;
    let id = request.get("id").cloned();
    let requested = requested_outputs(&request, signature)?;
    let binary_outputs = BinaryOutputs::of(&request);
    let outputs = execute_nearby(&model, prepared, requested, binary_outputs).await?;
    // The outputs' JSON, with the bytes of binary ones in order after it.
    let mut output_bytes = Vec::new();
    let outputs: Vec<Value> = outputs
        .into_iter()
        .map(|o| {
            let mut tensor = json!({"name": o.name, "datatype": o.datatype, "shape": o.shape});
            match o.data {
                OutputData::Json(data) => tensor["data"] = data,
                OutputData::Binary(bytes) => {
                    tensor["parameters"] = json!({"binary_data_size": bytes.len()});
                    output_bytes.extend_from_slice(&bytes);
                }
            }
            tensor
        })
        .collect();
    let any_binary = outputs.iter().any(|o| o.get("parameters").is_some());
    let mut answer = json!({
        "model_name": model.version.name,
        "model_version": model.version.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = id {
        answer["id"] = id;
    }
    if !any_binary {
        return Ok(Json(answer).into_response());
    }
    let mut bytes = serde_json::to_vec(&answer).map_err(|e| OipError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("encoding the answer: {e}"),
    })?;
    let json_length = bytes.len();
    bytes.extend_from_slice(&output_bytes);
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json_length));
    Ok(response)
}

/// Parses an infer request's body (JSON, or JSON then binary tensor data
/// when `headers` carry the extension's header) and checks its inputs
/// against `signature`: the request document and the inputs ready to run.
pub fn parse_request(
    signature: &Signature,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Vec<Prepared>), OipError> {
    let (json_part, binary) = split_body(headers, body)?;
    let request: Value = serde_json::from_slice(json_part)
        .map_err(|e| OipError::bad(format!("the request's JSON is not valid JSON: {e}")))?;
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| OipError::bad("the request needs \"inputs\": a list of tensors"))?;
    let mut cursor = BinaryCursor { bytes: binary };
    let prepared = prepare_inputs(signature, inputs, &mut cursor)?;
    if !cursor.bytes.is_empty() {
        return Err(OipError::bad(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            cursor.bytes.len()
        )));
    }
    Ok((request, prepared))
}

/// The body's JSON part and the binary data after it (none without the
/// extension's header).
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), OipError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            OipError::bad(format!(
                "Inference-Header-Content-Length {value:?} is not a byte count"
            ))
        })?;
    if length > body.len() {
        return Err(OipError::bad(format!(
            "Inference-Header-Content-Length is {length}, but the body holds {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// The binary data of a request not yet taken by its inputs.
struct BinaryCursor<'a> {
    bytes: &'a [u8],
}

impl<'a> BinaryCursor<'a> {
    /// The next `size` bytes, for input `name`.
    fn take(&mut self, name: &str, size: usize) -> Result<&'a [u8], OipError> {
        if size > self.bytes.len() {
            return Err(OipError::bad(format!(
                "input {name:?} declares {size} bytes of binary data; {} remain in the body",
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(size);
        self.bytes = rest;
        Ok(taken)
    }
}

/// Which outputs are answered as binary data: those whose request entry
/// says `binary_data`, else all when the request says
/// `binary_data_output`.
pub(crate) struct BinaryOutputs {
    default: bool,
    by_name: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// Every output as binary data (the gRPC protocol's raw contents).
    pub(crate) fn all() -> BinaryOutputs {
        BinaryOutputs {
            default: true,
            by_name: Vec::new(),
        }
    }

    fn of(request: &Value) -> BinaryOutputs {
        let default = request
            .pointer("/parameters/binary_data_output")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let by_name = request
            .get("outputs")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|o| {
                        let name = o.get("name")?.as_str()?.to_string();
                        let binary = o.pointer("/parameters/binary_data")?.as_bool()?;
                        Some((name, binary))
                    })
                    .collect()
            })
            .unwrap_or_default();
        BinaryOutputs { default, by_name }
    }

    fn binary(&self, name: &str) -> bool {
        self.by_name
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.default, |(_, binary)| *binary)
    }
}

/// An input checked against the signature: its name, shape and values.
pub type Prepared = (String, Vec<i64>, TensorData);

/// Every input of the request checked against `signature`, and every input
/// the signature names given.
fn prepare_inputs(
    signature: &Signature,
    inputs: &[Value],
    binary: &mut BinaryCursor<'_>,
) -> Result<Vec<Prepared>, OipError> {
    let mut prepared: Vec<Prepared> = Vec::with_capacity(inputs.len());
    let mut total = 0usize;
    for input in inputs {
        let tensor = prepare_input(signature, input, &prepared, &mut total, binary)?;
        prepared.push(tensor);
    }
    if let Some(missing) = signature
        .inputs
        .iter()
        .find(|s| !prepared.iter().any(|(n, _, _)| n == &s.name))
    {
        return Err(OipError::bad(format!(
            "the request lacks input {:?}",
            missing.name
        )));
    }
    Ok(prepared)
}

/// One input: a tensor of the signature, given once, of a shape the model
/// takes, within the size limit (`total` counts the elements so far), of
/// its declared datatype, with one value per element (in JSON, or as
/// binary data).
fn prepare_input(
    signature: &Signature,
    input: &Value,
    prepared: &[Prepared],
    total: &mut usize,
    binary: &mut BinaryCursor<'_>,
) -> Result<Prepared, OipError> {
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| OipError::bad("every input needs a \"name\""))?;
    let spec = input_spec(signature, name, prepared)?;
    let shape = input_shape(name, input, spec)?;
    let elements = count_elements(name, &shape, total)?;
    let given = input
        .get("datatype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wanted = datatype(&spec.dtype);
    if given != wanted {
        return Err(OipError::bad(format!(
            "input {name:?} is declared {given:?}; the model takes {wanted}"
        )));
    }
    if let Some(size) = input.pointer("/parameters/binary_data_size") {
        if input.get("data").is_some() {
            return Err(OipError::bad(format!(
                "input {name:?} has both \"data\" and binary_data_size"
            )));
        }
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                OipError::bad(format!(
                    "input {name:?}: binary_data_size is not a byte count"
                ))
            })?;
        let bytes = binary.take(name, size)?;
        let data = decode_binary(name, wanted, &shape, elements, bytes)?;
        return Ok((name.to_string(), shape, data));
    }
    let mut flat = Vec::with_capacity(elements);
    flatten(
        input.get("data").unwrap_or(&Value::Null),
        &mut flat,
        elements,
    )
    .map_err(|why| OipError::bad(format!("input {name:?}: {why}")))?;
    if flat.len() != elements {
        return Err(OipError::bad(format!(
            "input {name:?} has {} values; shape {shape:?} needs {elements}",
            flat.len()
        )));
    }
    let data = tensor_data(name, wanted, &flat)?;
    Ok((name.to_string(), shape, data))
}

/// The signature's input `name`, which must not be among the inputs
/// `prepared` so far (each input is given once).
pub(crate) fn input_spec<'a>(
    signature: &'a Signature,
    name: &str,
    prepared: &[Prepared],
) -> Result<&'a TensorSpec, OipError> {
    let spec = signature
        .inputs
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            OipError::bad(format!(
                "the model has no input {name:?} (its inputs: {})",
                signature
                    .inputs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if prepared.iter().any(|(n, _, _)| n == name) {
        return Err(OipError::bad(format!("input {name:?} is given twice")));
    }
    Ok(spec)
}

/// The input's `shape`: non-negative integers, matching the signature's
/// fixed dimensions.
fn input_shape(name: &str, input: &Value, spec: &TensorSpec) -> Result<Vec<i64>, OipError> {
    let shape: Vec<i64> = input
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| {
            OipError::bad(format!(
                "input {name:?} needs a \"shape\" of non-negative integers"
            ))
        })?;
    check_shape(name, &shape, spec)?;
    Ok(shape)
}

/// Checks an input's shape: non-negative, matching the signature's fixed
/// dimensions.
pub(crate) fn check_shape(name: &str, shape: &[i64], spec: &TensorSpec) -> Result<(), OipError> {
    if shape.iter().any(|&d| d < 0) {
        return Err(OipError::bad(format!(
            "input {name:?} needs a \"shape\" of non-negative integers"
        )));
    }
    if shape.len() != spec.shape.len()
        || shape
            .iter()
            .zip(&spec.shape)
            .any(|(&got, &want)| want >= 0 && got != want)
    {
        return Err(OipError::bad(format!(
            "input {name:?} has shape {shape:?}; the model takes {:?} (-1: any size)",
            spec.shape
        )));
    }
    Ok(())
}

/// The number of elements of an input of `shape`, counted into `total`;
/// both within [`MAX_ELEMENTS`].
pub(crate) fn count_elements(
    name: &str,
    shape: &[i64],
    total: &mut usize,
) -> Result<usize, OipError> {
    let elements = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            OipError::bad(format!(
                "input {name:?} is larger than {MAX_ELEMENTS} elements"
            ))
        })?;
    *total += elements;
    if *total > MAX_ELEMENTS {
        return Err(OipError::bad(format!(
            "the inputs hold more than {MAX_ELEMENTS} elements"
        )));
    }
    Ok(elements)
}

/// The values of input `name` as a tensor of the protocol's datatype
/// `wanted`.
fn tensor_data(name: &str, wanted: &str, flat: &[&Value]) -> Result<TensorData, OipError> {
    let bad_value = |i: usize, what: &str| {
        OipError::bad(format!(
            "input {name:?}: value {i} ({}) is not {what}",
            flat[i]
        ))
    };
    Ok(match wanted {
        "FP32" | "FP64" => {
            let mut values = Vec::with_capacity(flat.len());
            for (i, v) in flat.iter().enumerate() {
                values.push(v.as_f64().ok_or_else(|| bad_value(i, "a number"))?);
            }
            if wanted == "FP32" {
                TensorData::F32(values.into_iter().map(|v| v as f32).collect())
            } else {
                TensorData::F64(values)
            }
        }
        "INT64" | "INT32" => {
            let mut values = Vec::with_capacity(flat.len());
            for (i, v) in flat.iter().enumerate() {
                values.push(v.as_i64().ok_or_else(|| bad_value(i, "an integer"))?);
            }
            if wanted == "INT64" {
                TensorData::I64(values)
            } else {
                TensorData::I32(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            i32::try_from(v).map_err(|_| bad_value(i, "a 32-bit integer"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        "BOOL" => TensorData::Bool(
            flat.iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| bad_value(i, "a boolean")))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(OipError::bad(format!(
                "input {name:?} is {other}, which this server does not accept yet"
            )));
        }
    })
}

/// Bytes per element of a datatype the binary extension carries here.
fn element_width(datatype: &str) -> Option<usize> {
    match datatype {
        "FP64" | "INT64" => Some(8),
        "FP32" | "INT32" => Some(4),
        "BOOL" => Some(1),
        _ => None,
    }
}

/// Input `name`'s binary data (little-endian, row-major) as a tensor of
/// `wanted`, which must hold exactly `elements` values.
pub(crate) fn decode_binary(
    name: &str,
    wanted: &str,
    shape: &[i64],
    elements: usize,
    bytes: &[u8],
) -> Result<TensorData, OipError> {
    let width = element_width(wanted).ok_or_else(|| {
        OipError::bad(format!(
            "input {name:?} is {wanted}, which this server does not accept yet"
        ))
    })?;
    if bytes.len() != elements * width {
        return Err(OipError::bad(format!(
            "input {name:?}: binary_data_size is {} bytes, but shape {shape:?} of {wanted} needs \
             {}",
            bytes.len(),
            elements * width
        )));
    }
    Ok(match wanted {
        "FP32" => TensorData::F32(from_le(bytes)),
        "FP64" => TensorData::F64(from_le(bytes)),
        "INT64" => TensorData::I64(from_le(bytes)),
        "INT32" => TensorData::I32(from_le(bytes)),
        _ => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    })
}

/// The plain numbers the binary extension carries: every bit pattern of
/// their width is a value.
trait Number: Copy + Default {
    const WIDTH: usize;
    fn from_le_chunk(chunk: &[u8]) -> Self;
    fn to_le_into(self, out: &mut Vec<u8>);
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn from_le_chunk(chunk: &[u8]) -> Self {
                let mut word = [0u8; std::mem::size_of::<$t>()];
                word.copy_from_slice(chunk);
                <$t>::from_le_bytes(word)
            }
            fn to_le_into(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
number!(f32, f64, i32, i64);

/// Little-endian `bytes` (a whole number of `T`s) as `T`s: on a
/// little-endian host one copy of the bytes, else word by word.
fn from_le<T: Number>(bytes: &[u8]) -> Vec<T> {
    let count = bytes.len() / T::WIDTH;
    if cfg!(target_endian = "little") {
        let mut out = vec![T::default(); count];
        // SAFETY: `out` owns `count * T::WIDTH` initialized bytes, which
        // `bytes` (a distinct allocation) holds at least; `T` is one of the
        // plain numbers above, for which any bit pattern is a value, and the
        // host stores them little-endian, as the wire does.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                count * T::WIDTH,
            );
        }
        out
    } else {
        bytes.chunks_exact(T::WIDTH).map(T::from_le_chunk).collect()
    }
}

/// Appends `values` to `out` little-endian: on a little-endian host one
/// copy of their bytes.
fn to_le<T: Number>(values: &[T], out: &mut Vec<u8>) {
    if cfg!(target_endian = "little") {
        // SAFETY: `values` is `values.len() * T::WIDTH` initialized bytes of
        // plain numbers, stored little-endian on this host; the slice lives
        // as long as the borrow.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * T::WIDTH)
        };
        out.extend_from_slice(bytes);
    } else {
        values.iter().for_each(|v| v.to_le_into(out));
    }
}

/// Appends `data` to `out` as the binary extension carries it.
fn encode_binary(data: &TensorSlice<'_>, out: &mut Vec<u8>) {
    match data {
        TensorSlice::F32(v) => to_le(v, out),
        TensorSlice::F64(v) => to_le(v, out),
        TensorSlice::I64(v) => to_le(v, out),
        TensorSlice::I32(v) => to_le(v, out),
        TensorSlice::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
    }
}

/// The outputs the request selects by name (all without `outputs`); each
/// must be one of the model's.
fn requested_outputs(
    request: &Value,
    signature: &Signature,
) -> Result<Option<Vec<String>>, OipError> {
    let requested: Option<Vec<String>> =
        request
            .get("outputs")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|o| o.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            });
    if let Some(unknown) = requested
        .iter()
        .flatten()
        .find(|n| !signature.outputs.iter().any(|s| &s.name == *n))
    {
        return Err(OipError::bad(format!(
            "the model has no output {unknown:?}"
        )));
    }
    Ok(requested)
}

/// Appends the leaves of `data` (nested lists allowed) to `out`.
fn flatten<'a>(data: &'a Value, out: &mut Vec<&'a Value>, limit: usize) -> Result<(), String> {
    match data {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        Value::Null if out.is_empty() => Err("needs \"data\"".to_string()),
        leaf => {
            if out.len() >= limit {
                return Err(format!("has more values than its shape holds ({limit})"));
            }
            out.push(leaf);
            Ok(())
        }
    }
}

/// An output of a run: its name, the protocol's datatype and shape, and
/// its values.
pub(crate) struct OutputTensor {
    pub(crate) name: String,
    pub(crate) datatype: String,
    pub(crate) shape: Vec<i64>,
    pub(crate) data: OutputData,
}

/// An output's values: as JSON, or as the binary extension's bytes.
pub(crate) enum OutputData {
    Json(Value),
    Binary(Vec<u8>),
}

/// Inputs of at most this many elements in all run on the request's own
/// thread when the version's recent runs were quick: handing a small
/// inference to a blocking thread (a wake-up and two context switches)
/// costs more than running it, and `/predict` runs its rows in place too.
const INLINE_ELEMENTS: i64 = 4096;

/// A version whose recent runs took longer than this runs on the blocking
/// pool whatever its inputs' size, so that it does not hold up the other
/// requests on the server's few worker threads.
const INLINE_RUN: std::time::Duration = std::time::Duration::from_micros(200);

/// [`execute`] in place when the inputs are small and the version runs
/// quickly (see [`INLINE_ELEMENTS`]), else on the blocking pool; either way
/// the run's time counts into the version's recent run time.
pub(crate) async fn execute_nearby(
    model: &Arc<LoadedModel>,
    inputs: Vec<Prepared>,
    requested: Option<Vec<String>>,
    binary: BinaryOutputs,
) -> Result<Vec<OutputTensor>, OipError> {
    let elements: i64 = inputs
        .iter()
        .map(|(_, shape, _)| shape.iter().fold(1i64, |n, &d| n.saturating_mul(d.max(0))))
        .fold(0i64, i64::saturating_add);
    let timed = |model: &LoadedModel, inputs, requested, binary: &BinaryOutputs| {
        let started = std::time::Instant::now();
        let outputs = execute(model, inputs, requested, binary);
        model.record_run(started.elapsed());
        outputs
    };
    if elements <= INLINE_ELEMENTS && model.recent_run_time() < INLINE_RUN {
        return timed(model, inputs, requested, &binary);
    }
    let runner = model.clone();
    tokio::task::spawn_blocking(move || timed(&runner, inputs, requested, &binary))
        .await
        .map_err(|e| OipError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("inference stopped: {e}"),
        })?
}

/// Runs the model; answers each requested output as JSON, or as bytes for
/// those `binary` selects.
fn execute(
    model: &LoadedModel,
    inputs: Vec<Prepared>,
    requested: Option<Vec<String>>,
    binary: &BinaryOutputs,
) -> Result<Vec<OutputTensor>, OipError> {
    // ONNX Runtime's own words, as this protocol has always answered them.
    let failed = |e: onnx::Error| {
        OipError::bad(format!(
            "ONNX Runtime refused the inputs: {}",
            e.runtime_message()
        ))
    };
    let mut values = Inputs::with_capacity(inputs.len());
    for (name, shape, data) in inputs {
        values.push(name, shape, data).map_err(failed)?;
    }
    model.with_session(|session| {
        let outputs = session.run(values).map_err(failed)?;
        let mut answer = Vec::new();
        for output in outputs.iter() {
            let name = output.name();
            if requested
                .as_ref()
                .is_some_and(|r| !r.iter().any(|n| n == name))
            {
                continue;
            }
            let unsupported = |what: &dyn std::fmt::Display| {
                OipError::bad(format!(
                    "output {name:?} is {what}, which the protocol's JSON cannot carry here; \
                     request the other outputs with \"outputs\""
                ))
            };
            let Some(ty) = output.element_type() else {
                return Err(unsupported(&output.value_type()));
            };
            let (shape, data) = match output.tensor() {
                Ok(Some(tensor)) => tensor,
                Ok(None) => return Err(unsupported(&ty)),
                Err(e) => {
                    return Err(OipError {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        message: format!("reading output {name:?}: {}", e.runtime_message()),
                    });
                }
            };
            let data = if binary.binary(name) {
                let mut bytes = Vec::new();
                encode_binary(&data, &mut bytes);
                OutputData::Binary(bytes)
            } else {
                OutputData::Json(match data {
                    TensorSlice::F32(v) => json!(v),
                    TensorSlice::F64(v) => json!(v),
                    TensorSlice::I64(v) => json!(v),
                    TensorSlice::I32(v) => json!(v),
                    TensorSlice::Bool(v) => json!(v),
                })
            };
            answer.push(OutputTensor {
                name: name.to_string(),
                datatype: datatype(&ty).to_string(),
                shape: shape.to_vec(),
                data,
            });
        }
        Ok(answer)
    })
}
