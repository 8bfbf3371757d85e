//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`
//! (`ServerLive`, `ServerReady`, `ModelReady`, `ServerMetadata`,
//! `ModelMetadata`, `ModelInfer`), so tritonclient's and KServe's gRPC
//! clients work unchanged. `aurum serve` runs it on its own port
//! (`--grpc-addr`).
//!
//! It answers over the same models as the HTTP routes (the served model, or
//! any `READY` version by number), runs them through the same checks and
//! execution, and shares the server's in-flight limit, request timeout and
//! per-route latency and error metrics (routes named by their gRPC path).
//! Inputs come as `raw_input_contents` (little-endian, what tritonclient
//! sends) or typed `contents`; outputs go back as `raw_output_contents`, as
//! Triton answers. A message over [`MAX_MESSAGE_BYTES`] is refused with
//! `RESOURCE_EXHAUSTED`.

pub mod messages;

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::StatusCode;
use onnx::TensorData;
use tonic::codegen::{Body, StdError, http};
use tonic::{Code, Status};

use super::oip::{
    BinaryOutputs, OipError, OutputData, Prepared, check_shape, count_elements, datatype,
    decode_binary, execute_nearby, input_spec, resolve,
};
use crate::state::AppState;
use messages::*;

/// The service's full name.
pub const SERVICE_NAME: &str = "inference.GRPCInferenceService";

/// The largest request or answer message, as for HTTP bodies.
pub const MAX_MESSAGE_BYTES: usize = crate::state::MAX_BODY_BYTES;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The gRPC service over the server's state.
#[derive(Clone)]
pub struct OipGrpc {
    state: Arc<AppState>,
}

impl OipGrpc {
    /// The service answering from `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        OipGrpc { state }
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = listen::incoming(listener, listen::Options::default());
        self.serve_on(incoming, shutdown).await
    }

    /// Serves on the connections `incoming` takes (TLS and the connection
    /// cap are its business) until `shutdown` completes. The server's
    /// in-flight limit and request timeout apply to each call, as on HTTP.
    pub async fn serve_on(
        self,
        incoming: listen::Incoming,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .layer(telemetry::grpc::GrpcTraceLayer)
            .add_service(self)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}

impl tonic::server::NamedService for OipGrpc {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tonic::codegen::Service<http::Request<B>> for OipGrpc
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let method = path
            .strip_prefix("/inference.GRPCInferenceService/")
            .unwrap_or("");
        let state = self.state.clone();
        match method {
            "ServerLive" => unary(state, path, None, request, |_, _: ServerLiveRequest| {
                Box::pin(async { Ok(ServerLiveResponse { live: true }) })
            }),
            "ServerReady" => unary(
                state,
                path,
                None,
                request,
                |state, _: ServerReadyRequest| {
                    let ready = state.is_ready();
                    Box::pin(async move { Ok(ServerReadyResponse { ready }) })
                },
            ),
            "ServerMetadata" => unary(state, path, READ, request, |_, _: ServerMetadataRequest| {
                Box::pin(async {
                    Ok(ServerMetadataResponse {
                        name: "aurum".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        extensions: Vec::new(),
                    })
                })
            }),
            "ModelReady" => unary(state, path, READ, request, |state, r: ModelReadyRequest| {
                Box::pin(async move {
                    resolve(&state, &r.name, version_of(&r.version))
                        .await
                        .map_err(status_of)?;
                    Ok(ModelReadyResponse { ready: true })
                })
            }),
            "ModelMetadata" => unary(
                state,
                path,
                READ,
                request,
                |state, r: ModelMetadataRequest| {
                    Box::pin(async move {
                        let model = resolve(&state, &r.name, version_of(&r.version))
                            .await
                            .map_err(status_of)?;
                        let v = &model.version;
                        let tensors = |specs: &[registry::TensorSpec]| {
                            specs
                                .iter()
                                .map(|s| TensorMetadata {
                                    name: s.name.clone(),
                                    datatype: datatype(&s.dtype).to_string(),
                                    shape: s.shape.clone(),
                                })
                                .collect()
                        };
                        Ok(ModelMetadataResponse {
                            name: v.name.clone(),
                            versions: vec![v.version.to_string()],
                            platform: "onnxruntime_onnx".to_string(),
                            inputs: tensors(&v.signature.inputs),
                            outputs: tensors(&v.signature.outputs),
                        })
                    })
                },
            ),
            "ModelInfer" => unary(state, path, READ, request, |state, r: ModelInferRequest| {
                Box::pin(model_infer(state, r))
            }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented(format!(
                    "{path} is not served: aurum answers ServerLive, ServerReady, ModelReady, \
                     ServerMetadata, ModelMetadata and ModelInfer of {SERVICE_NAME}"
                ))
                .into_http())
            }),
        }
    }
}

/// The role inference and metadata calls need (health calls need none).
const READ: Option<auth::Role> = Some(auth::Role::Read);

/// A unary call's handler as tonic's server machinery takes it.
struct Unary<F, Req, Resp> {
    state: Arc<AppState>,
    handler: F,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<F, Req, Resp: Send + 'static> tonic::server::UnaryService<Req> for Unary<F, Req, Resp>
where
    F: FnMut(Arc<AppState>, Req) -> BoxFuture<Result<Resp, Status>>,
{
    type Response = Resp;
    type Future = BoxFuture<Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let answer = (self.handler)(self.state.clone(), request.into_inner());
        Box::pin(async move { answer.await.map(tonic::Response::new) })
    }
}

/// Answers one unary call with `handler`, for a caller with `role` (when
/// the server checks tokens), within the server's in-flight limit and
/// request timeout, recording the route's latency and errors.
fn unary<B, Req, Resp, F>(
    state: Arc<AppState>,
    route: String,
    role: Option<auth::Role>,
    request: http::Request<B>,
    handler: F,
) -> BoxFuture<Result<http::Response<tonic::body::Body>, Infallible>>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Arc<AppState>, Req) -> BoxFuture<Result<Resp, Status>> + Send + 'static,
{
    Box::pin(async move {
        let started = Instant::now();
        if let Some(role) = role {
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let refused = match state.limits.tokens.authorize(authorization, role) {
                Ok(_) => None,
                Err(auth::Denied::Unauthenticated(m)) => Some((401, Status::unauthenticated(m))),
                Err(auth::Denied::Forbidden(m)) => Some((403, Status::permission_denied(m))),
            };
            if let Some((status, refusal)) = refused {
                state
                    .metrics
                    .error(&route, status, code_name(refusal.code()));
                return Ok(refusal.into_http());
            }
        }
        let Some(_permit) = state.admit() else {
            state.metrics.count_shed();
            state.metrics.error(&route, 503, "overloaded");
            return Ok(Status::unavailable(format!(
                "the server is answering its limit of {} requests; retry shortly",
                state.limits.max_in_flight
            ))
            .into_http());
        };
        let codec = tonic_prost::ProstCodec::<Resp, Req>::default();
        let mut grpc = tonic::server::Grpc::new(codec)
            .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(MAX_MESSAGE_BYTES));
        let service = Unary {
            state: state.clone(),
            handler,
            types: PhantomData,
        };
        let answer =
            tokio::time::timeout(state.limits.request_timeout, grpc.unary(service, request)).await;
        let mut response = match answer {
            Ok(response) => response,
            Err(_) => {
                state.metrics.count_timeout();
                Status::deadline_exceeded(format!(
                    "the request took longer than the server's limit of {} ms",
                    state.limits.request_timeout.as_millis()
                ))
                .into_http()
            }
        };
        // tonic refuses an oversized message as OUT_OF_RANGE; gRPC's own
        // servers (and clients' expectations) say RESOURCE_EXHAUSTED.
        let code = grpc_code(&response);
        if code == Some(Code::OutOfRange) {
            response
                .headers_mut()
                .insert(Status::GRPC_STATUS, (Code::ResourceExhausted as i32).into());
        }
        if let Some(code) = grpc_code(&response).filter(|c| *c != Code::Ok) {
            state
                .metrics
                .error(&route, http_equivalent(code), code_name(code));
        }
        state
            .metrics
            .route(&route)
            .observe(started.elapsed().as_secs_f64());
        Ok(response)
    })
}

/// The status in a trailers-only answer's headers (`None`: it comes in the
/// trailers, after a message: success).
fn grpc_code(response: &http::Response<tonic::body::Body>) -> Option<Code> {
    response
        .headers()
        .get(Status::GRPC_STATUS)
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        .map(Code::from)
}

fn http_equivalent(code: Code) -> u16 {
    match code {
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::NotFound => 404,
        Code::ResourceExhausted => 413,
        Code::Unavailable | Code::DeadlineExceeded => 503,
        Code::Unimplemented => 501,
        _ => 500,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthorized",
        Code::PermissionDenied => "forbidden",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Unimplemented => "unimplemented",
        _ => "internal",
    }
}

/// The version a request names (`None`: empty, the served one).
fn version_of(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// An HTTP-path error as a gRPC status.
fn status_of(e: OipError) -> Status {
    let code = match e.status {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        s if s.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, e.message)
}

async fn model_infer(
    state: Arc<AppState>,
    request: ModelInferRequest,
) -> Result<ModelInferResponse, Status> {
    let model = resolve(
        &state,
        &request.model_name,
        version_of(&request.model_version),
    )
    .await
    .map_err(status_of)?;
    let prepared = prepare(&model.version.signature, &request).map_err(status_of)?;
    let requested = requested(&model.version.signature, &request).map_err(status_of)?;
    let outputs = execute_nearby(&model, prepared, requested, BinaryOutputs::all())
        .await
        .map_err(status_of)?;
    let mut answer = ModelInferResponse {
        model_name: model.version.name.clone(),
        model_version: model.version.version.to_string(),
        id: request.id,
        ..ModelInferResponse::default()
    };
    for output in outputs {
        // Every output is binary here (`BinaryOutputs::all`), as Triton
        // answers gRPC calls with raw contents.
        let OutputData::Binary(raw) = output.data else {
            return Err(Status::internal("an output came back as JSON"));
        };
        answer.outputs.push(InferOutputTensor {
            name: output.name,
            datatype: output.datatype,
            shape: output.shape,
            ..InferOutputTensor::default()
        });
        answer.raw_output_contents.push(raw);
    }
    Ok(answer)
}

/// Every input checked against the signature, as the HTTP path checks
/// them: known, given once, of a shape and datatype the model takes, with
/// one value per element, within the element limit; and every input given.
fn prepare(
    signature: &registry::Signature,
    request: &ModelInferRequest,
) -> Result<Vec<Prepared>, OipError> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(OipError::bad(format!(
            "raw_input_contents has {} entries for {} inputs",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut prepared: Vec<Prepared> = Vec::with_capacity(request.inputs.len());
    let mut total = 0usize;
    for (i, input) in request.inputs.iter().enumerate() {
        let name = input.name.as_str();
        let spec = input_spec(signature, name, &prepared)?;
        check_shape(name, &input.shape, spec)?;
        let elements = count_elements(name, &input.shape, &mut total)?;
        let wanted = datatype(&spec.dtype);
        if input.datatype != wanted {
            return Err(OipError::bad(format!(
                "input {name:?} is declared {:?}; the model takes {wanted}",
                input.datatype
            )));
        }
        let data = match (raw.get(i), &input.contents) {
            (Some(bytes), _) => decode_binary(name, wanted, &input.shape, elements, bytes)?,
            (None, Some(contents)) => typed(name, wanted, elements, contents)?,
            (None, None) => {
                return Err(OipError::bad(format!(
                    "input {name:?} has neither contents nor raw_input_contents"
                )));
            }
        };
        prepared.push((name.to_string(), input.shape.clone(), data));
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

/// Typed contents of input `name` as a tensor of `wanted`.
fn typed(
    name: &str,
    wanted: &str,
    elements: usize,
    contents: &InferTensorContents,
) -> Result<TensorData, OipError> {
    let (data, given) = match wanted {
        "FP32" => (
            TensorData::F32(contents.fp32_contents.clone()),
            contents.fp32_contents.len(),
        ),
        "FP64" => (
            TensorData::F64(contents.fp64_contents.clone()),
            contents.fp64_contents.len(),
        ),
        "INT64" => (
            TensorData::I64(contents.int64_contents.clone()),
            contents.int64_contents.len(),
        ),
        "INT32" => (
            TensorData::I32(contents.int_contents.clone()),
            contents.int_contents.len(),
        ),
        "BOOL" => (
            TensorData::Bool(contents.bool_contents.clone()),
            contents.bool_contents.len(),
        ),
        other => {
            return Err(OipError::bad(format!(
                "input {name:?} is {other}, which this server does not accept yet"
            )));
        }
    };
    if given != elements {
        return Err(OipError::bad(format!(
            "input {name:?} has {given} {wanted} values; its shape needs {elements}"
        )));
    }
    Ok(data)
}

/// The outputs asked for by name (all when none is named); each must be
/// one of the model's.
fn requested(
    signature: &registry::Signature,
    request: &ModelInferRequest,
) -> Result<Option<Vec<String>>, OipError> {
    if request.outputs.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !signature.outputs.iter().any(|s| &s.name == *n))
    {
        return Err(OipError::bad(format!(
            "the model has no output {unknown:?}"
        )));
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> registry::Signature {
        registry::Signature {
            inputs: vec![registry::TensorSpec {
                name: "x".into(),
                dtype: "f32".into(),
                shape: vec![-1, 2],
            }],
            outputs: Vec::new(),
        }
    }

    fn request(contents: Option<Vec<f32>>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
        ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![2, 2],
                contents: contents.map(|fp32_contents| InferTensorContents {
                    fp32_contents,
                    ..InferTensorContents::default()
                }),
                ..InferInputTensor::default()
            }],
            raw_input_contents: raw,
            ..ModelInferRequest::default()
        }
    }

    #[test]
    fn typed_and_raw_contents_give_the_same_tensor() {
        let values = vec![1.0f32, 2.0, 3.0, 4.0];
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let typed = prepare(&signature(), &request(Some(values), Vec::new())).unwrap();
        let bytes = prepare(&signature(), &request(None, vec![raw])).unwrap();
        assert_eq!(typed, bytes);
    }

    #[test]
    fn contents_that_do_not_fit_are_refused_naming_the_input() {
        for (request, named) in [
            (
                request(Some(vec![1.0, 2.0, 3.0]), Vec::new()),
                "has 3 FP32 values",
            ),
            (
                request(None, Vec::new()),
                "neither contents nor raw_input_contents",
            ),
            (
                request(None, vec![vec![0; 16], vec![0; 16]]),
                "2 entries for 1 inputs",
            ),
            (request(None, vec![vec![0; 12]]), "needs 16"),
        ] {
            let message = prepare(&signature(), &request).unwrap_err().message;
            assert!(message.contains(named), "{message}");
        }
    }
}
