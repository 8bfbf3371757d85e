//! The MLflow Model Registry REST API over the registry's domain API, so
//! `mlflow.MlflowClient(registry_uri=...)` works against aurum.
//!
//! Routes under `/api/2.0/mlflow/` follow MLflow's JSON shapes: version
//! numbers as strings, millisecond timestamps, tags as key/value lists,
//! `aliases`, paging with `max_results` and `page_token`, and MLflow's error
//! bodies (`{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`) with
//! its HTTP statuses. Parameters come from the query string (GET) and the
//! JSON body (POST, PATCH, DELETE), as MLflow's client sends them.
//!
//! `model-versions/create` imports the ONNX file at `source` (a local path or
//! `file://` URI, of the file or of an MLflow model directory holding one):
//! a valid file makes a `READY` version, anything else a
//! `FAILED_REGISTRATION` version whose `status_message` says why. The server
//! reads that path itself, which is why it listens on loopback by default.
//! Artifacts are served under `/api/2.0/mlflow-artifacts/artifacts/`, where
//! the `mlflow-artifacts:` download URIs this API hands out point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use registry::{ModelVersion, NewVersion, RegisteredModel, Registry};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// The MLflow routes, mounted by [`crate::app`].
pub fn routes() -> Router<Arc<AppState>> {
    const M: &str = "/api/2.0/mlflow";
    Router::new()
        .route(&format!("{M}/registered-models/create"), post(create_model))
        .route(&format!("{M}/registered-models/get"), get(get_model))
        .route(
            &format!("{M}/registered-models/search"),
            get(search_models).post(search_models),
        )
        .route(
            &format!("{M}/registered-models/update"),
            post(update_model).patch(update_model),
        )
        .route(&format!("{M}/registered-models/rename"), post(rename_model))
        .route(
            &format!("{M}/registered-models/delete"),
            post(delete_model).delete(delete_model),
        )
        .route(
            &format!("{M}/registered-models/set-tag"),
            post(set_model_tag),
        )
        .route(
            &format!("{M}/registered-models/delete-tag"),
            post(delete_model_tag).delete(delete_model_tag),
        )
        .route(
            &format!("{M}/registered-models/alias"),
            get(get_by_alias).post(set_alias).delete(delete_alias),
        )
        .route(
            &format!("{M}/registered-models/get-latest-versions"),
            get(latest_versions).post(latest_versions),
        )
        .route(&format!("{M}/model-versions/create"), post(create_version))
        .route(&format!("{M}/model-versions/get"), get(get_version))
        .route(
            &format!("{M}/model-versions/search"),
            get(search_versions).post(search_versions),
        )
        .route(
            &format!("{M}/model-versions/update"),
            post(update_version).patch(update_version),
        )
        .route(
            &format!("{M}/model-versions/delete"),
            post(delete_version).delete(delete_version),
        )
        .route(
            &format!("{M}/model-versions/set-tag"),
            post(set_version_tag),
        )
        .route(
            &format!("{M}/model-versions/delete-tag"),
            post(delete_version_tag).delete(delete_version_tag),
        )
        .route(
            &format!("{M}/model-versions/get-download-uri"),
            get(download_uri),
        )
        .route("/api/2.0/mlflow-artifacts/artifacts", get(list_artifacts))
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            get(download_artifact),
        )
        .layer(axum::middleware::from_fn(same_origin_json))
}

/// Refuses requests a web page in a browser could forge: a change must be
/// sent as JSON (`Content-Type: application/json`, which a cross-site page
/// cannot send without a CORS preflight this server never grants), and a
/// request whose `Origin` is not this server is refused whatever its
/// method.
async fn same_origin_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin_host != host {
            return MlflowError {
                status: StatusCode::FORBIDDEN,
                code: "PERMISSION_DENIED",
                message: format!("requests from origin {origin} are not accepted"),
            }
            .into_response();
        }
    }
    if request.method() != axum::http::Method::GET {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.trim_start().starts_with("application/json"));
        if !json {
            return MlflowError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "INVALID_PARAMETER_VALUE",
                message: "requests that change the registry must send a JSON body \
                          (Content-Type: application/json)"
                    .to_string(),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// An error in MLflow's shape.
#[derive(Debug)]
pub struct MlflowError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl MlflowError {
    fn invalid(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// A caller refused by the server's tokens, in MLflow's error shape (the
/// codes MLflow's own authentication answers with).
pub(crate) fn refusal(denied: auth::Denied) -> Response {
    let (status, code) = match &denied {
        auth::Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        auth::Denied::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
    };
    MlflowError {
        status,
        code,
        message: denied.message().to_string(),
    }
    .into_response()
}

impl From<registry::Error> for MlflowError {
    fn from(e: registry::Error) -> Self {
        use registry::Error as E;
        let message = e.to_string();
        let (status, code) = match e {
            E::ModelNotFound(_) | E::VersionNotFound { .. } | E::AliasNotFound { .. } => {
                (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST")
            }
            E::ModelExists(_) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            E::InvalidName(_)
            | E::InvalidParameter(_)
            | E::InvalidModel { .. }
            | E::SignatureMismatch { .. } => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            E::VersionAliased { .. } | E::ModelAliased { .. } | E::NothingToRollBack { .. } => {
                (StatusCode::BAD_REQUEST, "INVALID_STATE")
            }
            E::RuntimeMissing { .. }
            | E::Corrupt { .. }
            | E::Io { .. }
            | E::Storage { .. }
            | E::Metadata { .. }
            | E::Mlflow { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        };
        MlflowError {
            status,
            code,
            message,
        }
    }
}

type Answer = Result<Json<Value>, MlflowError>;

/// A request's parameters: the query string's, then the JSON body's.
struct Params(Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = MlflowError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = request.uri().query().map(str::to_string);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| MlflowError {
                status: e.status(),
                code: "INVALID_PARAMETER_VALUE",
                message: e.body_text(),
            })?;
        Params::read(query, &body)
    }
}

/// The empty answer of a call that only changes something.
fn done() -> Answer {
    Ok(Json(json!({})))
}

impl Params {
    fn read(query: Option<String>, body: &Bytes) -> Result<Self, MlflowError> {
        let mut map = Map::new();
        if let Some(query) = query {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                let value = Value::String(value.into_owned());
                match map.get_mut(key.as_ref()) {
                    Some(Value::Array(list)) => list.push(value),
                    Some(first) => {
                        let first = first.take();
                        map.insert(key.into_owned(), Value::Array(vec![first, value]));
                    }
                    None => {
                        map.insert(key.into_owned(), value);
                    }
                }
            }
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(fields)) => map.extend(fields),
                Ok(_) => {
                    return Err(MlflowError::invalid(
                        "the request body must be a JSON object",
                    ));
                }
                Err(e) => {
                    return Err(MlflowError::invalid(format!(
                        "the request body is not valid JSON: {e}"
                    )));
                }
            }
        }
        Ok(Params(map))
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(MlflowError::invalid(format!(
                "parameter '{key}' must be a string, not {other}"
            ))),
        }
    }

    fn str(&self, key: &str) -> Result<String, MlflowError> {
        self.opt_str(key)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            MlflowError::invalid(format!("Missing value for required parameter '{key}'."))
        })
    }

    fn version(&self) -> Result<u64, MlflowError> {
        let text = self.str("version")?;
        text.parse().map_err(|_| {
            MlflowError::invalid(format!(
                "parameter 'version' must be a version number, not {text:?}"
            ))
        })
    }

    fn max_results(&self, default: usize) -> Result<usize, MlflowError> {
        match self.opt_str("max_results")? {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                MlflowError::invalid(format!(
                    "parameter 'max_results' must be a number, not {text:?}"
                ))
            }),
        }
    }

    fn tags(&self) -> Result<BTreeMap<String, String>, MlflowError> {
        let mut tags = BTreeMap::new();
        match self.0.get("tags") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for tag in list {
                    let key = tag.get("key").and_then(Value::as_str);
                    let value = tag.get("value").and_then(Value::as_str).unwrap_or("");
                    let Some(key) = key else {
                        return Err(MlflowError::invalid(format!(
                            "each tag needs a string 'key': {tag}"
                        )));
                    };
                    tags.insert(key.to_string(), value.to_string());
                }
            }
            Some(other) => {
                return Err(MlflowError::invalid(format!(
                    "parameter 'tags' must be a list of {{key, value}}, not {other}"
                )));
            }
        }
        Ok(tags)
    }
}

/// Runs a registry call off the async workers.
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    call: impl FnOnce(&Registry) -> Result<T, MlflowError> + Send + 'static,
) -> Result<T, MlflowError> {
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || call(&registry))
        .await
        .map_err(|e| MlflowError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "INTERNAL_ERROR",
            message: format!("the registry call stopped: {e}"),
        })?
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect(),
    )
}

/// A version in MLflow's shape.
fn version_json(version: &ModelVersion, aliases: &BTreeMap<String, u64>) -> Value {
    let mut out = json!({
        "name": version.name,
        "version": version.version.to_string(),
        "creation_timestamp": millis(&version.created_at),
        "last_updated_timestamp": millis(&version.updated_at),
        "current_stage": "None",
        "description": version.description,
        "source": version.source,
        "run_id": version.lineage.run_id,
        "run_link": "",
        "status": version.status.as_str(),
        "tags": tag_list(&version.tags),
        "aliases": aliases
            .iter()
            .filter(|(_, v)| **v == version.version)
            .map(|(alias, _)| alias.clone())
            .collect::<Vec<_>>(),
    });
    if let Some(message) = &version.status_message {
        out["status_message"] = json!(message);
    }
    out
}

/// A registered model in MLflow's shape, with its latest version.
fn model_json(registry: &Registry, model: &RegisteredModel) -> Result<Value, MlflowError> {
    let aliases = registry.aliases(&model.name)?;
    let latest: Vec<Value> = registry
        .newest(&model.name)?
        .map(|v| version_json(&v, &aliases))
        .into_iter()
        .collect();
    Ok(json!({
        "name": model.name,
        "creation_timestamp": millis(&model.created_at),
        "last_updated_timestamp": millis(&model.updated_at),
        "description": model.description,
        "latest_versions": latest,
        "tags": tag_list(&model.tags),
        "aliases": aliases
            .iter()
            .map(|(alias, version)| json!({"alias": alias, "version": version.to_string()}))
            .collect::<Vec<_>>(),
    }))
}

fn model_answer(registry: &Registry, name: &str) -> Answer {
    let model = registry.model(name)?;
    Ok(Json(
        json!({"registered_model": model_json(registry, &model)?}),
    ))
}

fn version_answer(registry: &Registry, name: &str, version: u64) -> Answer {
    let v = registry.version(name, version)?;
    let aliases = registry.aliases(name)?;
    Ok(Json(json!({"model_version": version_json(&v, &aliases)})))
}

/// Who moved an alias: the caller's token identity when the server checks
/// tokens (a header cannot claim another name then); without tokens, the
/// `X-Aurum-User` header, or the API's name.
fn who(identity: Option<&auth::Identity>, headers: &HeaderMap) -> String {
    if let Some(identity) = identity {
        return identity.name.clone();
    }
    headers
        .get("x-aurum-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("mlflow-api")
        .to_string()
}

async fn create_model(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, description, tags) = (
        p.str("name")?,
        p.opt_str("description")?.unwrap_or_default(),
        p.tags()?,
    );
    blocking(&state, move |r| {
        r.create_model(&name, &description, tags)?;
        model_answer(r, &name)
    })
    .await
}

async fn get_model(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let name = p.str("name")?;
    blocking(&state, move |r| model_answer(r, &name)).await
}

async fn update_model(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, description) = (
        p.str("name")?,
        p.opt_str("description")?.unwrap_or_default(),
    );
    blocking(&state, move |r| {
        r.set_model_description(&name, &description)?;
        model_answer(r, &name)
    })
    .await
}

async fn rename_model(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, new_name) = (p.str("name")?, p.str("new_name")?);
    blocking(&state, move |r| {
        r.rename_model(&name, &new_name)?;
        model_answer(r, &new_name)
    })
    .await
}

async fn delete_model(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let name = p.str("name")?;
    blocking(&state, move |r| {
        r.delete_model(&name)?;
        done()
    })
    .await
}

async fn set_model_tag(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, key, value) = (
        p.str("name")?,
        p.str("key")?,
        p.opt_str("value")?.unwrap_or_default(),
    );
    blocking(&state, move |r| {
        r.set_model_tag(&name, &key, &value)?;
        done()
    })
    .await
}

async fn delete_model_tag(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, key) = (p.str("name")?, p.str("key")?);
    blocking(&state, move |r| {
        r.delete_model_tag(&name, &key)?;
        done()
    })
    .await
}

async fn search_models(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let filter = p.opt_str("filter")?.unwrap_or_default();
    let max_results = p.max_results(100)?;
    let token = p.opt_str("page_token")?;
    blocking(&state, move |r| {
        let page = r.search_models(&filter, max_results, token.as_deref())?;
        let models = page
            .items
            .iter()
            .map(|m| model_json(r, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = json!({"registered_models": models});
        if let Some(next) = page.next_page_token {
            out["next_page_token"] = json!(next);
        }
        Ok(Json(out))
    })
    .await
}

async fn set_alias(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<std::sync::Arc<auth::Identity>>>,
    headers: HeaderMap,
    p: Params,
) -> Answer {
    let (name, alias, version) = (p.str("name")?, p.str("alias")?, p.version()?);
    let who = who(identity.as_ref().map(|i| i.0.as_ref()), &headers);
    blocking(&state, move |r| {
        r.set_alias(&name, &alias, version, &who)?;
        done()
    })
    .await
}

async fn delete_alias(
    State(state): State<Arc<AppState>>,
    identity: Option<Extension<std::sync::Arc<auth::Identity>>>,
    headers: HeaderMap,
    p: Params,
) -> Answer {
    let (name, alias) = (p.str("name")?, p.str("alias")?);
    let who = who(identity.as_ref().map(|i| i.0.as_ref()), &headers);
    blocking(&state, move |r| {
        r.delete_alias(&name, &alias, &who)?;
        done()
    })
    .await
}

async fn get_by_alias(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, alias) = (p.str("name")?, p.str("alias")?);
    blocking(&state, move |r| {
        let version = r.by_alias(&name, &alias)?;
        version_answer(r, &name, version.version)
    })
    .await
}

async fn latest_versions(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let name = p.str("name")?;
    // Stages are an MLflow 1 notion; every aurum version is in "None".
    let wants_none = match p.0.get("stages") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("none"),
        Some(Value::Array(list)) => {
            list.is_empty()
                || list
                    .iter()
                    .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case("none")))
        }
        Some(other) => {
            return Err(MlflowError::invalid(format!(
                "parameter 'stages' must be a list of stage names, not {other}"
            )));
        }
    };
    blocking(&state, move |r| {
        r.model(&name)?;
        let aliases = r.aliases(&name)?;
        let latest: Vec<Value> = if wants_none {
            r.newest(&name)?
                .map(|v| version_json(&v, &aliases))
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        Ok(Json(json!({"model_versions": latest})))
    })
    .await
}

async fn create_version(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let name = p.str("name")?;
    let source = p.str("source")?;
    let tags = p.tags()?;
    let features: Vec<String> = tags
        .get(FEATURES_TAG)
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let new = NewVersion {
        description: p.opt_str("description")?.unwrap_or_default(),
        features,
        lineage: registry::Lineage {
            run_id: p.opt_str("run_id")?.unwrap_or_default(),
            ..registry::Lineage::default()
        },
        tags,
        source: source.clone(),
        ..NewVersion::default()
    };
    // A path outside the import root is refused before the filesystem is
    // touched, so the answer says nothing of what exists there.
    let root = state.limits.import_root.clone();
    let path = importable(&source, root.as_deref()).map_err(MlflowError::invalid)?;
    blocking(&state, move |r| {
        // MLflow requires the registered model to exist first.
        r.model(&name)?;
        let imported = read_source(&path, root.as_deref()).and_then(|bytes| {
            r.register(&name, &bytes, new.clone())
                .map_err(|e| e.to_string())
        });
        let version = match imported {
            Ok(version) => version,
            Err(why) => r.register_failed(&name, new, &why)?,
        };
        version_answer(r, &name, version.version)
    })
    .await
}

/// The tag that declares a version's features (`view:feature`, comma
/// separated, in input column order) when it is created through MLflow.
pub use registry::mlflow_client::FEATURES_TAG;

/// The local path a `model-versions/create` source names, if it lies under
/// the server's import root (checked lexically: `..` cannot climb out). A
/// relative path is taken under the root.
fn importable(source: &str, root: Option<&Path>) -> Result<PathBuf, String> {
    let Some(root) = root else {
        return Err(
            "this server imports no model files from its disk (no import root: start it with \
             --import-root DIR)"
                .to_string(),
        );
    };
    let path = if let Some(rest) = source.strip_prefix("file://") {
        url::Url::parse(source)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| PathBuf::from(rest))
    } else if source.contains(":/") {
        return Err(format!(
            "source {source:?} is not a local path or file:// URI; aurum imports ONNX files from the server's filesystem"
        ));
    } else {
        PathBuf::from(source)
    };
    let root = lexical(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
    let real_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
    let path = lexical(&root.join(path));
    let outside = || {
        format!("source {source:?} is outside the server's import root; copy the model under it")
    };
    // The root as given or as resolved (it may itself sit behind a link).
    let path = match (path.strip_prefix(&root), path.strip_prefix(&real_root)) {
        (Ok(rest), _) | (_, Ok(rest)) => real_root.join(rest),
        _ => return Err(outside()),
    };
    // A link under the root to somewhere else is outside too, whether what
    // it points to exists or not.
    if !stays_under(&real_root, &path) {
        return Err(outside());
    }
    Ok(path)
}

/// Whether `path` (lexically under `root`) stays under `root` when the
/// links on its way are followed: each must point under `root`, checked on
/// the link's text, so the answer never depends on whether something
/// outside exists.
fn stays_under(root: &Path, path: &Path) -> bool {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let mut todo: VecDeque<OsString> = rest.iter().map(OsString::from).collect();
    let mut current = root.to_path_buf();
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        let next = current.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&next) else {
                    return false;
                };
                let target = lexical(&current.join(target));
                let Ok(inside) = target.strip_prefix(root) else {
                    return false;
                };
                if hops > 40 {
                    return false;
                }
                let mut parts: VecDeque<OsString> = inside.iter().map(OsString::from).collect();
                parts.extend(todo.drain(..));
                todo = parts;
                current = root.to_path_buf();
            }
            Ok(_) => current = next,
            // Nothing there: nothing further to follow.
            Err(_) => return true,
        }
    }
    true
}

/// `path` with `.` and `..` resolved without reading the filesystem.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The ONNX bytes at an importable `path` (an ONNX file, or an MLflow model
/// directory), or why not. Symbolic links are followed only when what they
/// point to is under the import root too.
fn read_source(path: &Path, root: Option<&Path>) -> Result<Vec<u8>, String> {
    let real = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let root = real(root.unwrap_or(Path::new("/")))?;
    let inside = |p: &Path| -> Result<PathBuf, String> {
        let resolved = real(p)?;
        if resolved.starts_with(&root) {
            Ok(resolved)
        } else {
            Err(format!(
                "{} leads outside the server's import root",
                p.display()
            ))
        }
    };
    let path = inside(path)?;
    let file = if path.is_dir() {
        inside(&onnx_in(&path)?)?
    } else {
        path
    };
    // Only regular files (not devices or pipes), and no more than ONNX's
    // protobuf limit.
    let metadata =
        std::fs::metadata(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    if metadata.len() > MAX_IMPORT_BYTES {
        return Err(format!(
            "{} is {} bytes; an ONNX model is at most {MAX_IMPORT_BYTES}",
            file.display(),
            metadata.len()
        ));
    }
    std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// The largest file `model-versions/create` imports (protobuf's 2 GiB).
const MAX_IMPORT_BYTES: u64 = 2 << 30;

/// The ONNX file of an MLflow model directory: the one its `MLmodel` names
/// (`data:` of the onnx flavor), else the only `*.onnx` file in it.
fn onnx_in(dir: &Path) -> Result<PathBuf, String> {
    if let Ok(mlmodel) = std::fs::read_to_string(dir.join("MLmodel")) {
        let named = mlmodel
            .lines()
            .map(str::trim)
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.trim().trim_matches(['"', '\'']))
            .find(|d| d.ends_with(".onnx"));
        if let Some(data) = named {
            let inside = Path::new(data)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(format!(
                    "the MLmodel in {} names {data:?}, which is not inside the model directory",
                    dir.display()
                ));
            }
            return Ok(dir.join(data));
        }
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let onnx: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    match onnx.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("{} holds no .onnx file", dir.display())),
        _ => Err(format!(
            "{} holds {} .onnx files and no MLmodel naming one",
            dir.display(),
            onnx.len()
        )),
    }
}

async fn get_version(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, version) = (p.str("name")?, p.version()?);
    blocking(&state, move |r| version_answer(r, &name, version)).await
}

async fn update_version(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, version) = (p.str("name")?, p.version()?);
    let description = p.opt_str("description")?.unwrap_or_default();
    blocking(&state, move |r| {
        r.set_version_description(&name, version, &description)?;
        version_answer(r, &name, version)
    })
    .await
}

async fn delete_version(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, version) = (p.str("name")?, p.version()?);
    blocking(&state, move |r| {
        r.delete_version(&name, version)?;
        done()
    })
    .await
}

async fn set_version_tag(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, version, key) = (p.str("name")?, p.version()?, p.str("key")?);
    let value = p.opt_str("value")?.unwrap_or_default();
    blocking(&state, move |r| {
        r.set_version_tag(&name, version, &key, &value)?;
        done()
    })
    .await
}

async fn delete_version_tag(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let (name, version, key) = (p.str("name")?, p.version()?, p.str("key")?);
    blocking(&state, move |r| {
        r.delete_version_tag(&name, version, &key)?;
        done()
    })
    .await
}

async fn search_versions(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let filter = p.opt_str("filter")?.unwrap_or_default();
    let max_results = p.max_results(10_000)?;
    let token = p.opt_str("page_token")?;
    blocking(&state, move |r| {
        let page = r.search_versions(&filter, max_results, token.as_deref())?;
        let mut aliases: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut versions = Vec::with_capacity(page.items.len());
        for v in &page.items {
            if !aliases.contains_key(&v.name) {
                aliases.insert(v.name.clone(), r.aliases(&v.name)?);
            }
            versions.push(version_json(v, &aliases[&v.name]));
        }
        let mut out = json!({"model_versions": versions});
        if let Some(next) = page.next_page_token {
            out["next_page_token"] = json!(next);
        }
        Ok(Json(out))
    })
    .await
}

async fn download_uri(State(state): State<Arc<AppState>>, headers: HeaderMap, p: Params) -> Answer {
    let (name, version) = (p.str("name")?, p.version()?);
    // An absolute URI of this server, so a client whose tracking URI points
    // elsewhere still downloads from here; `mlflow-artifacts:` (resolved
    // against the tracking URI) when the request names no host.
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(
            || "mlflow-artifacts:".to_string(),
            |host| format!("http://{host}/api/2.0/mlflow-artifacts/artifacts"),
        );
    blocking(&state, move |r| {
        r.version(&name, version)?;
        Ok(Json(
            json!({"artifact_uri": format!("{base}/models/{name}/{version}")}),
        ))
    })
    .await
}

/// The files of a version's artifact directory: the ONNX file and an
/// `MLmodel` describing it (the onnx flavor), as MLflow lays a model out.
fn artifact_files(
    registry: &Registry,
    path: &str,
) -> Result<(ModelVersion, Vec<(String, u64)>), MlflowError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["models", name, version] = parts.as_slice() else {
        return Err(MlflowError::not_found(format!("no artifacts at {path:?}")));
    };
    let version: u64 = version
        .parse()
        .map_err(|_| MlflowError::not_found(format!("no artifacts at {path:?}")))?;
    let v = registry.version(name, version)?;
    let Some(size) = registry.model_size(&v)? else {
        return Ok((v, Vec::new()));
    };
    let mlmodel = mlmodel(&v).len() as u64;
    Ok((
        v,
        vec![
            ("MLmodel".to_string(), mlmodel),
            ("model.onnx".to_string(), size),
        ],
    ))
}

fn mlmodel(version: &ModelVersion) -> String {
    format!(
        "artifact_path: model\nflavors:\n  onnx:\n    code: null\n    data: model.onnx\n    onnx_version: unknown\nmodel_uuid: {}\nutc_time_created: '{}'\n",
        version.sha256, version.created_at
    )
}

async fn list_artifacts(State(state): State<Arc<AppState>>, p: Params) -> Answer {
    let path = p.opt_str("path")?.unwrap_or_default();
    blocking(&state, move |r| {
        // Only a version's directory lists files (a file's path lists
        // nothing, as MLflow's client expects).
        if path.trim_matches('/').split('/').count() != 3 {
            return Ok(Json(json!({"files": []})));
        }
        let (_, files) = artifact_files(r, &path)?;
        let files: Vec<Value> = files
            .into_iter()
            .map(|(name, size)| json!({"path": name, "is_dir": false, "file_size": size}))
            .collect();
        Ok(Json(json!({"files": files})))
    })
    .await
}

async fn download_artifact(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Result<Response, MlflowError> {
    let (dir, file) = path
        .rsplit_once('/')
        .ok_or_else(|| MlflowError::not_found(format!("no artifact at {path:?}")))?;
    let (dir, file) = (dir.to_string(), file.to_string());
    let artifact = blocking(&state, move |r| {
        let (version, _) = artifact_files(r, &dir)?;
        match file.as_str() {
            "model.onnx" => {
                let size = r.model_size(&version)?.ok_or_else(|| {
                    MlflowError::not_found(format!("the model file of {dir} is missing"))
                })?;
                Ok(Artifact::Model(Box::new(version), size))
            }
            "MLmodel" if version.is_ready() => Ok(Artifact::Small(mlmodel(&version).into_bytes())),
            _ => Err(MlflowError::not_found(format!(
                "no artifact {file:?} in {dir}"
            ))),
        }
    })
    .await?;
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    let (version, size) = match artifact {
        Artifact::Small(bytes) => return Ok((octets, bytes).into_response()),
        Artifact::Model(version, size) => (version, size),
    };
    // The model is streamed a chunk at a time (a model may be 2 GiB): a
    // blocking task reads the registry into a small queue the body drains.
    // A read error or a digest mismatch ends the body with an error, so
    // the client sees a failed download, never a wrong file.
    // Each download holds a blocking thread while it runs: at most
    // DOWNLOADS_AT_ONCE run, and a client that takes a chunk more than
    // CHUNK_SEND_TIMEOUT to read is cut off.
    let Ok(permit) = DOWNLOADS.try_acquire() else {
        return Err(MlflowError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "TEMPORARILY_UNAVAILABLE",
            message: format!("{DOWNLOADS_AT_ONCE} model downloads are running; retry shortly"),
        });
    };
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let registry = state.registry.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let read = registry.read_model(&version, DOWNLOAD_CHUNK_BYTES, |bytes| {
            let sent = runtime.block_on(tokio::time::timeout(
                CHUNK_SEND_TIMEOUT,
                chunks.send(Ok(bytes)),
            ));
            matches!(sent, Ok(Ok(())))
        });
        if let Err(e) = read {
            tracing::warn!(error = %e, "a model download failed");
            let _ = chunks.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    Ok((
        octets,
        [(header::CONTENT_LENGTH, size.to_string())],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// An artifact to download: the model (streamed, with its size) or a
/// small generated document.
enum Artifact {
    Model(Box<registry::ModelVersion>, u64),
    Small(Vec<u8>),
}

/// The chunks a model download is streamed in.
const DOWNLOAD_CHUNK_BYTES: usize = 1 << 20;

/// Model downloads running at once.
const DOWNLOADS_AT_ONCE: usize = 16;

static DOWNLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DOWNLOADS_AT_ONCE);

/// The longest a download waits for its client to take one more chunk.
const CHUNK_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
