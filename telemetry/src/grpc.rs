//! A span for every gRPC call a tonic server answers (Arrow Flight, the
//! Open Inference Protocol): a tower layer that starts the call's span from
//! its `traceparent` metadata, hands it to the handler in the request's
//! extensions, and ends it when the response body (a stream, for most
//! Flight calls) has been sent, with the call's `grpc-status`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::Trace;

/// The layer: `tonic::transport::Server::builder().layer(GrpcTraceLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower_layer::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> GrpcTrace<S> {
        GrpcTrace { inner }
    }
}

/// The service [`GrpcTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<Traced<R>>;
    type Error = S::Error;
    type Future = TracedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let trace = if crate::enabled() {
            let trace = call_trace(&request);
            if trace.is_on() {
                request.extensions_mut().insert(trace.clone());
            }
            trace
        } else {
            Trace::off()
        };
        TracedCall {
            inner: self.inner.call(request),
            trace: Some(trace),
        }
    }
}

/// The span of the call `request` starts (`package.Service/Method`, as
/// OpenTelemetry's RPC conventions name it).
fn call_trace<B>(request: &http::Request<B>) -> Trace {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let path = request.uri().path().trim_start_matches('/');
    let trace = Trace::incoming(header("traceparent"), header("tracestate"), || {
        path.to_string()
    });
    if trace.is_on() {
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        trace.set("rpc.system", "grpc");
        trace.set("rpc.service", service.to_string());
        trace.set("rpc.method", method.to_string());
    }
    trace
}

/// A `grpc-status` header or trailer, onto the span: not OK marks it
/// failed.
fn record_status(trace: &Trace, headers: &http::HeaderMap) -> bool {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return false;
    };
    trace.set("rpc.grpc.status_code", code);
    if code != 0 {
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        trace.fail(format!("grpc-status {code} {message}"));
    }
    true
}

pin_project! {
    /// The call's answer on its way: the span goes with the body.
    pub struct TracedCall<F> {
        #[pin]
        inner: F,
        trace: Option<Trace>,
    }
}

impl<F, R, E> Future for TracedCall<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = Result<http::Response<Traced<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        let trace = this.trace.take().unwrap_or_default();
        Poll::Ready(match answer {
            Ok(response) => {
                // A call refused at once answers "trailers only": its status
                // is in the headers and the body is empty.
                let done = record_status(&trace, response.headers());
                if done {
                    trace.end();
                }
                Ok(response.map(|body| Traced { inner: body, trace }))
            }
            Err(e) => {
                trace.fail("the call failed before answering");
                trace.end();
                Err(e)
            }
        })
    }
}

pin_project! {
    /// A response body that ends its call's span when it ends.
    pub struct Traced<B> {
        #[pin]
        inner: B,
        trace: Trace,
    }
}

impl<B: Body> Body for Traced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    record_status(this.trace, trailers);
                    this.trace.end();
                }
            }
            Some(Err(_)) => {
                this.trace.fail("the response stream failed");
                this.trace.end();
            }
            None => this.trace.end(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
