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
//!   scoped to the route and, with tokens, the caller (the token's name),
//!   so callers cannot see or block each other's answers.
//! - Answers kept are the 2xx and the 4xx that refuse what the request
//!   holds (a retry would not change them). 5xx answers and transient ones
//!   (a commit conflict, a failed offline write, a prediction not yet seen,
//!   408/409/425/429) are forgotten, so a retry runs again.
//! - Writes running at once are bounded (as requests are): beyond it, 503.
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
use moka::ops::compute::Op;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::error::{AppError, ErrorCode};
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
                // Admit every key (TinyLFU could refuse a new one): a
                // running write's key must be there for its retries; the
                // least recently used (old, answered) keys go first.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
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

/// An answer as kept for replays: its status, the headers a client acts
/// on, its error code (for the metrics) and its body.
#[derive(Debug, Clone)]
struct Kept {
    status: StatusCode,
    headers: HeaderMap,
    code: Option<ErrorCode>,
    body: Bytes,
}

/// Error codes of answers a retry may change (a race lost, a write that
/// failed on the server's side, a prediction not yet seen): not kept.
const TRANSIENT_CODES: [&str; 3] = [
    "commit_conflict",
    "offline_write_failed",
    "unknown_predictions",
];

impl Kept {
    fn response(&self, replayed: bool) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        response.headers_mut().extend(self.headers.clone());
        if let Some(code) = self.code {
            response.extensions_mut().insert(code);
        }
        if replayed {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }

    /// Whether a retry gets this answer again: a success, or a refusal for
    /// what the request holds. Server errors, timeouts, conflicts and other
    /// transient answers are not kept, so a retry runs again.
    fn is_kept(&self) -> bool {
        let transient = matches!(self.status.as_u16(), 408 | 409 | 425 | 429)
            || self.code.is_some_and(|c| TRANSIENT_CODES.contains(&c.0));
        (self.status.is_success() || self.status.is_client_error()) && !transient
    }

    fn failed() -> Kept {
        let answer = AppError::internal("the write failed unexpectedly; it may be retried");
        Kept {
            status: answer.status,
            headers: HeaderMap::new(),
            code: Some(ErrorCode(answer.code)),
            body: Bytes::from(
                serde_json::json!({"error": {"code": answer.code, "message": answer.message}})
                    .to_string(),
            ),
        }
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
    let Some(permit) = state.admit_write() else {
        return busy(&state);
    };
    let Some(key) = key else {
        return finish(next.run(request), permit).await;
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
        Err(error) => return unreadable(&error).into_response(),
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
        drop(permit);
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
    let mut publish = Publish {
        idempotency: state.idempotency.clone(),
        scoped,
        slot,
        done: false,
    };
    let task = tokio::spawn(async move {
        let _permit = permit;
        let response = next.run(request).await;
        let (parts, body) = response.into_parts();
        let kept = keep(&parts, body).await;
        publish.publish(kept.clone());
        let mut response = kept.response(false);
        *response.headers_mut() = parts.headers;
        response
    });
    match task.await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "a keyed write failed unexpectedly");
            Kept::failed().response(false)
        }
    }
}

/// Hands a keyed write's answer to the retries waiting for it, and keeps or
/// forgets its key; if the write ends without an answer (it panicked), the
/// key is forgotten and the waiters get a 500, so nothing waits forever.
struct Publish {
    idempotency: Idempotency,
    scoped: Arc<str>,
    slot: Arc<Slot>,
    done: bool,
}

impl Publish {
    fn publish(&mut self, kept: Kept) {
        self.done = true;
        let keep = kept.is_kept();
        self.slot.answer.send_replace(Some(kept));
        // Only this write's own slot is touched: the key may have been
        // evicted and taken by a newer request meanwhile.
        let slot = self.slot.clone();
        self.idempotency
            .slots
            .entry(self.scoped.clone())
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(current.value(), &slot) => {
                    if keep {
                        // Inserted again so the weigher counts the answer.
                        Op::Put(slot.clone())
                    } else {
                        Op::Remove
                    }
                }
                _ => Op::Nop,
            });
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        if !self.done {
            self.publish(Kept::failed());
        }
    }
}

/// Writes running at once are bounded (the edge's in-flight permit ends
/// with its timeout, the write does not): beyond the bound, 503.
fn busy(state: &AppState) -> Response {
    state.metrics.count_shed();
    AppError::overloaded(format!(
        "the server is finishing its limit of {} writes; retry shortly",
        state.limits.max_in_flight
    ))
    .into_response()
}

/// A body that could not be read: too large (413), or cut off (400).
fn unreadable(error: &axum::Error) -> AppError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return AppError::payload_too_large(format!(
                "the request body is larger than the limit of {MAX_BODY_BYTES} bytes"
            ));
        }
        source = e.source();
    }
    AppError::bad_request(
        "invalid_request",
        format!("the request body could not be read: {error}"),
    )
}

/// Runs a write without a key on a task of its own, so it completes even if
/// the caller stops waiting.
async fn finish(
    write: impl Future<Output = Response> + Send + 'static,
    permit: OwnedSemaphorePermit,
) -> Response {
    let task = tokio::spawn(async move {
        let _permit = permit;
        write.await
    });
    match task.await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "a write failed unexpectedly");
            Kept::failed().response(false)
        }
    }
}

/// The request's key: `Idempotency-Key`, else the caller's `X-Request-Id`
/// (which the edge kept only when usable), else none.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    if let Some(value) = headers.get(IDEMPOTENCY_KEY) {
        return match value.to_str() {
            Ok(key)
                if !key.is_empty()
                    && key.len() <= MAX_KEY_BYTES
                    && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(key.to_string()))
            }
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
async fn keep(parts: &axum::http::response::Parts, body: Body) -> Kept {
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => Kept {
            status: parts.status,
            headers,
            code: parts.extensions.get::<ErrorCode>().copied(),
            body,
        },
        Err(error) => {
            tracing::error!(%error, "reading a write's answer failed");
            Kept::failed()
        }
    }
}
