//! What every request passes through before its handler: a request id, a
//! tracing span, load shedding, a timeout, per-route latency and error
//! metrics; and the bearer-token check of admin routes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

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
    let mut response = match state.admit() {
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
            let span = tracing::debug_span!("request", request_id = %id, method = %request.method(), route = %route);
            let answer = tokio::time::timeout(
                state.limits.request_timeout,
                next.run(request).instrument(span.clone()),
            )
            .await;
            match answer {
                Ok(response) => response,
                Err(_) => {
                    state.metrics.count_timeout();
                    tracing::warn!(request_id = %id, route = %route, "request timed out");
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
            tracing::warn!(request_id = %id, route = %route, status = status.as_u16(), code, "error answer");
        }
    }
    state
        .metrics
        .route(route)
        .observe(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Admin routes: with a token configured, the request must carry it.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    match check_token(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Like [`require_admin`] for every method but `GET` and `HEAD` (MLflow
/// reads stay open; writes need the token).
pub async fn require_admin_for_writes(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    require_admin(State(state), request, next).await
}

fn check_token(state: &AppState, request: &Request) -> Result<(), AppError> {
    let Some(token) = &state.limits.admin_token else {
        return Ok(());
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(AppError::unauthorized(
            "the bearer token is not this server's admin token",
        )),
        None => Err(AppError::unauthorized(
            "this admin route needs an `Authorization: Bearer <token>` header",
        )),
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// A caller's request id is kept when it is short printable ASCII (it goes
/// into logs, headers and the prediction log).
fn usable_id(id: &str) -> bool {
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
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(usable_id("abc-123") && !usable_id("a b") && !usable_id(""));
    }
}
