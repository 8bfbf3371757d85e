//! Retries that don't double, for the routes that write data (`/push`,
//! `/write-to-online-store`, `/feedback`).
//!
//! - **A write that starts, finishes.** The handler runs on a task of its
//!   own: when the server's request timeout answers 503 first, or the client
//!   goes away, the write still completes (it never stops half-applied), and
//!   its answer is kept for the retry.
//! - **The same key applies once.** A request carrying an
//!   `Idempotency-Key` header (or, without one, the `X-Request-Id` the
//!   client chose) is applied once: a retry with the same key and the same
//!   body is answered the first answer (with `Idempotent-Replayed: true`),
//!   waiting for it if the first is still running; the same key with a
//!   different body is refused (422 `idempotency_key_reused`). Keys are
//!   scoped to the route and the caller (the token's name), so callers
//!   cannot see or block each other's answers.
//! - Answers kept are the 2xx and 4xx ones (the request was applied, or
//!   refused for what it holds, which a retry would not change). A 5xx
//!   answer is forgotten, so a retry runs again.
//!
//! Keys are remembered by this server process for [`KEPT_FOR`], in at most
//! [`KEPT_BYTES`] of answers (oldest dropped first): not across restarts,
//! and not across replicas.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::AppError;
use crate::state::{AppState, MAX_BODY_BYTES};

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header marking an answer as a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";

/// How long a key is remembered.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The most bytes of kept answers (and their keys).
pub const KEPT_BYTES: u64 = 64 << 20;

/// The longest key accepted.
const MAX_KEY_BYTES: usize = 256;

/// The answers of keyed writes, by route, caller and key.
#[derive(Debug, Clone)]
pub struct Idempotency {
    slots: moka::sync::Cache<Arc<str>, Arc<Slot>>,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            slots: moka::sync::Cache::builder()
                .max_capacity(KEPT_BYTES)
                .weigher(|key: &Arc<str>, slot: &Arc<Slot>| {
                    u32::try_from(key.len() + slot.weight()).unwrap_or(u32::MAX)
                })
                .time_to_live(KEPT_FOR)
                .build(),
        }
    }
}

impl Idempotency {
    /// Keys remembered now (for tests and `/metrics`).
    pub fn len(&self) -> u64 {
        self.slots.run_pending_tasks();
        self.slots.entry_count()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One keyed write: the digest of its body, and its answer once there is one.
#[derive(Debug)]
struct Slot {
    body: [u8; 32],
    answer: watch::Sender<Option<Kept>>,
}

impl Slot {
    fn weight(&self) -> usize {
        64 + self.answer.borrow().as_ref().map_or(0, |a| a.body.len())
    }
}

/// An answer as kept for replays.
#[derive(Debug, Clone)]
struct Kept {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Kept {
    fn response(&self, replayed: bool) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        if let Some(content_type) = &self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        if replayed {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }

    fn is_kept(&self) -> bool {
        !self.status.is_server_error()
    }
}

/// The middleware of the write routes: runs the handler to completion on a
/// task of its own, once per key.
pub async fn run_once(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let key = match key_of(request.headers()) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(key) = key else {
        return finish(next.run(request)).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let caller = request
        .extensions()
        .get::<Arc<auth::Identity>>()
        .map_or(String::new(), |identity| identity.name.clone());
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return AppError::payload_too_large(format!(
                "the request body is larger than the limit of {MAX_BODY_BYTES} bytes"
            ))
            .into_response();
        }
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let scoped: Arc<str> = Arc::from(format!("{route}\n{caller}\n{key}"));
    let entry = state
        .idempotency
        .slots
        .entry(scoped.clone())
        .or_insert_with(|| {
            Arc::new(Slot {
                body: digest,
                answer: watch::Sender::new(None),
            })
        });
    let fresh = entry.is_fresh();
    let slot = entry.into_value();
    if !fresh {
        if slot.body != digest {
            return AppError::unprocessable(
                "idempotency_key_reused",
                format!(
                    "idempotency key {key:?} was used for a different request body on {route}; \
                     use a new key for a new request"
                ),
            )
            .into_response();
        }
        return replay(&slot).await;
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    let idempotency = state.idempotency.clone();
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        let kept = keep(response).await;
        if kept.is_kept() {
            slot.answer.send_replace(Some(kept.clone()));
            // Inserted again so the weigher counts the answer.
            idempotency.slots.insert(scoped, slot);
        } else {
            idempotency.slots.invalidate(&scoped);
            slot.answer.send_replace(Some(kept.clone()));
        }
        kept
    });
    match task.await {
        Ok(kept) => kept.response(false),
        Err(error) => {
            AppError::internal(format!("the write failed unexpectedly: {error}")).into_response()
        }
    }
}

/// Runs a write without a key on a task of its own, so it completes even if
/// the caller stops waiting.
async fn finish(write: impl Future<Output = Response> + Send + 'static) -> Response {
    match tokio::spawn(write).await {
        Ok(response) => response,
        Err(error) => {
            AppError::internal(format!("the write failed unexpectedly: {error}")).into_response()
        }
    }
}

/// The request's key: `Idempotency-Key`, else the caller's `X-Request-Id`
/// (which the edge kept only when usable), else none.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    if let Some(value) = headers.get(IDEMPOTENCY_KEY) {
        return match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_BYTES => Ok(Some(key.to_string())),
            _ => Err(AppError::bad_request(
                "invalid_idempotency_key",
                format!("an Idempotency-Key must be 1 to {MAX_KEY_BYTES} bytes of visible ASCII"),
            )),
        };
    }
    Ok(headers
        .get(crate::edge::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| crate::edge::usable_id(id))
        .map(str::to_string))
}

/// Waits for the first request's answer and replays it.
async fn replay(slot: &Slot) -> Response {
    let mut answers = slot.answer.subscribe();
    match answers.wait_for(Option::is_some).await {
        Ok(kept) => match kept.as_ref() {
            Some(kept) => kept.response(true),
            None => AppError::internal("the first request's answer was lost").into_response(),
        },
        Err(_) => AppError::internal("the first request's answer was lost").into_response(),
    }
}

/// The answer, read whole (the write routes answer small JSON documents).
async fn keep(response: Response) -> Kept {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    match axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => Kept {
            status,
            content_type,
            body,
        },
        Err(error) => Kept {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            content_type: None,
            body: Bytes::from(format!("reading the answer failed: {error}")),
        },
    }
}
