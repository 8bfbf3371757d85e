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

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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
    status: StatusCode,
    message: String,
}

impl OipError {
    fn bad(message: impl Into<String>) -> Self {
        OipError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

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
async fn resolve(
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

fn datatype(dtype: &str) -> &str {
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
    body: Bytes,
) -> Result<Json<Value>, OipError> {
    let model = resolve(&state, &model, None).await?;
    run(model, body).await
}

async fn version_infer(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, OipError> {
    let model = resolve(&state, &model, Some(&version)).await?;
    run(model, body).await
}

async fn run(model: Arc<LoadedModel>, body: Bytes) -> Result<Json<Value>, OipError> {
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| OipError::bad(format!("the request body is not valid JSON: {e}")))?;
    let id = request.get("id").cloned();
    let inputs = request
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| OipError::bad("the request needs \"inputs\": a list of tensors"))?;
    let signature = &model.version.signature;
    let prepared = prepare_inputs(signature, inputs)?;
    let requested = requested_outputs(&request, signature)?;
    let runner = model.clone();
    let outputs = tokio::task::spawn_blocking(move || execute(&runner, prepared, requested))
        .await
        .map_err(|e| OipError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("inference stopped: {e}"),
        })??;
    let mut answer = json!({
        "model_name": model.version.name,
        "model_version": model.version.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = id {
        answer["id"] = id;
    }
    Ok(Json(answer))
}

/// An input checked against the signature: its name, shape and values.
type Prepared = (String, Vec<i64>, TensorData);

/// Every input of the request checked against `signature`, and every input
/// the signature names given.
fn prepare_inputs(signature: &Signature, inputs: &[Value]) -> Result<Vec<Prepared>, OipError> {
    let mut prepared: Vec<Prepared> = Vec::with_capacity(inputs.len());
    let mut total = 0usize;
    for input in inputs {
        let tensor = prepare_input(signature, input, &prepared, &mut total)?;
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
/// its declared datatype, with one value per element.
fn prepare_input(
    signature: &Signature,
    input: &Value,
    prepared: &[Prepared],
    total: &mut usize,
) -> Result<Prepared, OipError> {
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| OipError::bad("every input needs a \"name\""))?;
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
    let shape = input_shape(name, input, spec)?;
    let elements = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
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

/// The input's `shape`: non-negative integers, matching the signature's
/// fixed dimensions.
fn input_shape(name: &str, input: &Value, spec: &TensorSpec) -> Result<Vec<i64>, OipError> {
    let shape: Vec<i64> = input
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .filter(|s| s.iter().all(|&d| d >= 0))
        .ok_or_else(|| {
            OipError::bad(format!(
                "input {name:?} needs a \"shape\" of non-negative integers"
            ))
        })?;
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
    Ok(shape)
}

/// The values of input `name` as a tensor of the protocol's datatype
/// `wanted`.
fn tensor_data(name: &str, wanted: &str, flat: &[Value]) -> Result<TensorData, OipError> {
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
fn flatten(data: &Value, out: &mut Vec<Value>, limit: usize) -> Result<(), String> {
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
            out.push(leaf.clone());
            Ok(())
        }
    }
}

fn execute(
    model: &LoadedModel,
    inputs: Vec<Prepared>,
    requested: Option<Vec<String>>,
) -> Result<Vec<Value>, OipError> {
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
            let data = match data {
                TensorSlice::F32(v) => json!(v),
                TensorSlice::F64(v) => json!(v),
                TensorSlice::I64(v) => json!(v),
                TensorSlice::I32(v) => json!(v),
                TensorSlice::Bool(v) => json!(v),
            };
            answer.push(json!({
                "name": name,
                "datatype": datatype(&ty),
                "shape": shape,
                "data": data,
            }));
        }
        Ok(answer)
    })
}
