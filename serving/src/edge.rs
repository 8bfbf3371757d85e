//! What every request passes through before its handler: a request id, its
//! OpenTelemetry span (continuing the caller's W3C trace context), load
//! shedding, a timeout, per-route latency and error metrics, the access log
//! line; and the role check of each route group (`auth`'s tokens).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use telemetry::Trace;
use tracing::Instrument;

use auth::{Denied, Role};

use crate::error::{AppError, ErrorCode};
use crate::state::{AppState, MAX_BODY_BYTES};

/// The header carrying a request's id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id: the caller's `x-request-id` when it sent a usable one,
/// else one the server makes.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The middleware every route runs under.
pub async fn edge(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable_id(v))
        .map(Arc::<str>::from)
        .unwrap_or_else(|| state.new_request_id());
    let trace = request_trace(&mut request, route, &id);
    if let Some(refusal) = misdirected(&state, &request) {
        state.metrics.error(route, 403, "host_not_allowed");
        finish_trace(&trace, 403);
        return refusal;
    }
    let mut response = match state.admit() {
        // A body declared larger than any route takes is refused at once,
        // not buffered up to the limit first; what the client still sends
        // is read and dropped for a while (a lingering close), so that it
        // sees the 413 rather than a reset connection.
        _ if declares_oversize(&request) => {
            discard_for_a_while(request.version(), std::mem::take(request.body_mut()));
            AppError::payload_too_large(format!(
                "the request body declares more than the server's limit of {MAX_BODY_BYTES} bytes"
            ))
            .into_response()
        }
        None => {
            state.metrics.count_shed();
            AppError::overloaded(format!(
                "the server is answering its limit of {} requests; retry shortly",
                state.limits.max_in_flight
            ))
            .into_response()
        }
        Some(_permit) => {
            request.extensions_mut().insert(RequestId(id.clone()));
            // A debug-level span: free unless debug logs are on. Events that
            // matter at info and above name the request id themselves.
            let span = tracing::debug_span!("request", request_id = %id, trace_id = %TraceId(&trace), method = %request.method(), route = %route);
            let answer = tokio::time::timeout(
                state.limits.request_timeout,
                next.run(request).instrument(span.clone()),
            )
            .await;
            match answer {
                Ok(response) => response,
                Err(_) => {
                    state.metrics.count_timeout();
                    tracing::warn!(request_id = %id, trace_id = %TraceId(&trace), route = %route, "request timed out");
                    AppError::overloaded(format!(
                        "the request took longer than the server's limit of {} ms",
                        state.limits.request_timeout.as_millis()
                    ))
                    .into_response()
                }
            }
        }
    };
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let code = response
            .extensions()
            .get::<ErrorCode>()
            .map_or_else(|| fallback_code(status.as_u16()), |c| c.0);
        state.metrics.error(route, status.as_u16(), code);
        if status.is_server_error() {
            tracing::warn!(request_id = %id, trace_id = %TraceId(&trace), route = %route, status = status.as_u16(), code, "error answer");
        }
    }
    let elapsed = started.elapsed();
    state.metrics.route(route).observe(elapsed.as_secs_f64());
    finish_trace(&trace, status.as_u16());
    // The access log: off unless `AURUM_LOG` turns `aurum::access` on (the
    // check is a cached per-callsite flag).
    tracing::info!(
        target: "aurum::access",
        request_id = %id,
        trace_id = %TraceId(&trace),
        route = %route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The request's span when tracing is on and the trace is sampled,
/// continuing the caller's `traceparent`; handed to the handler in the
/// request's extensions for its child spans.
fn request_trace(request: &mut Request, route: &str, id: &str) -> Trace {
    if !telemetry::enabled() {
        return Trace::off();
    }
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let trace = Trace::incoming(header("traceparent"), header("tracestate"), || {
        format!("{} {route}", request.method())
    });
    if trace.is_on() {
        trace.set("http.request.method", request.method().as_str().to_string());
        trace.set("http.route", route.to_string());
        trace.set("aurum.request_id", id.to_string());
        request.extensions_mut().insert(trace.clone());
    }
    trace
}

/// Ends the request's span with its status (a 5xx marks it failed).
fn finish_trace(trace: &Trace, status: u16) {
    if trace.is_on() {
        trace.set("http.response.status_code", i64::from(status));
        if status >= 500 {
            trace.fail(format!("answered {status}"));
        }
        trace.end();
    }
}

/// A trace id in a log line: its 32 hex digits, or `-` when the request
/// is not traced.
struct TraceId<'a>(&'a Trace);

impl std::fmt::Display for TraceId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.trace_id() {
            Some(id) => f.write_str(&id),
            None => f.write_str("-"),
        }
    }
}

/// How long the body of a refused oversize request is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Refused oversize bodies read and dropped at once, at most.
const LINGERING: usize = 256;

/// The permits of the lingering reads (see [`LINGERING`]).
static LINGER_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LINGERING);

/// Over HTTP/1.1, reads `body` and drops each frame as it comes, for at
/// most [`LINGER`], on a task of its own: nothing is kept, and the client
/// still sending reads the answer instead of a reset connection. At most
/// [`LINGERING`] at once (this runs before the token check); beyond that,
/// and over HTTP/2 (where dropping the body resets only the stream, after
/// the answer), the body is dropped at once.
fn discard_for_a_while(version: axum::http::Version, body: axum::body::Body) {
    use http_body_util::BodyExt;
    if version != axum::http::Version::HTTP_11 {
        return;
    }
    let Ok(permit) = LINGER_PERMITS.try_acquire() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut body = body;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    });
}

/// Whether the request's `Content-Length` is above [`MAX_BODY_BYTES`].
fn declares_oversize(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
}

/// A request whose `Host` is not one the server answers to (when it has an
/// allow-list): refused, naming the host.
fn misdirected(state: &AppState, request: &Request) -> Option<Response> {
    let allowed = state.limits.allowed_hosts.as_ref()?;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("");
    let name = host_name(host);
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return None;
    }
    Some(
        AppError {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "host_not_allowed",
            message: format!(
                "this server does not answer to host {name:?} (allowed: {}); add it with \
                 --allowed-host",
                allowed.join(", ")
            ),
        }
        .into_response(),
    )
}

/// The name part of a `Host` value: without the port, brackets kept off an
/// IPv6 literal.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Routes that change state (pushes, feedback, admin, MLflow writes) take
/// JSON bodies only: a missing content type or one a browser may send
/// cross-site without asking (form, multipart, text) is refused with 415,
/// so a web page cannot post to a loopback server behind the user's back.
pub async fn require_json(request: Request, next: Next) -> Response {
    let method = request.method();
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return next.run(request).await;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return next.run(request).await;
    }
    AppError {
        status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message: format!(
            "this route takes a JSON body (Content-Type: application/json); got {}",
            if content_type.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!("{content_type:?}")
            }
        ),
    }
    .into_response()
}

/// Routes that read (predictions, online features, inference, drift):
/// with tokens configured, the caller needs the `read` role.
pub async fn require_read(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Role::Read, request, next).await
}

/// Routes that write data (push, feedback): the `write` role.
pub async fn require_write(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Role::Write, request, next).await
}

/// Admin routes (materialize, reload): the `admin` role.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Role::Admin, request, next).await
}

/// MLflow's routes: reads (`GET`, `HEAD`) need `read`, writes `admin`. The
/// caller's identity is kept for the handlers (the alias history records
/// it), and a refusal comes in MLflow's error shape, as MLflow's own server
/// answers, so its client reports it as such.
pub async fn require_admin_for_writes(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let role = if request.method() == Method::GET || request.method() == Method::HEAD {
        Role::Read
    } else {
        Role::Admin
    };
    match authorize(&state, role, &request) {
        Ok(identity) => {
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
            next.run(request).await
        }
        Err(denied) => challenge(crate::protocols::mlflow::refusal(denied)),
    }
}

/// Lets the request through when its credential has `role` (or no token
/// is configured).
async fn require(state: &AppState, role: Role, mut request: Request, next: Next) -> Response {
    match authorize(state, role, &request) {
        Ok(identity) => {
            // Kept for the write routes (idempotency keys are scoped by
            // caller); read routes skip it, an insert allocates.
            if role == Role::Write
                && let Some(identity) = identity
            {
                request.extensions_mut().insert(identity);
            }
            next.run(request).await
        }
        Err(Denied::Unauthenticated(message)) => {
            challenge(AppError::unauthorized(message).into_response())
        }
        Err(Denied::Forbidden(message)) => AppError::forbidden(message).into_response(),
    }
}

/// The caller of `request` if it may act with `role` (`None`: no token is
/// configured), or why not.
fn authorize(
    state: &AppState,
    role: Role,
    request: &Request,
) -> Result<Option<Arc<auth::Identity>>, Denied> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.limits.tokens.authorize(authorization, role)
}

/// A 401 answer with the `WWW-Authenticate` challenge HTTP asks of it.
fn challenge(mut response: Response) -> Response {
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"aurum\""),
        );
    }
    response
}

/// A caller's request id is kept when it is short printable ASCII (it goes
/// into logs, headers and the prediction log).
pub(crate) fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

fn fallback_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        500 => "internal",
        503 => "unavailable",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_printable_ascii() {
        assert!(usable_id("abc-123") && !usable_id("a b") && !usable_id(""));
    }
}
