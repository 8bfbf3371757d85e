//! A client of a real MLflow server's REST API (reqwest): pushes aurum's
//! versions to it and pulls ONNX versions from it.
//!
//! Push: for each `READY` version not yet there (matched by the
//! `aurum.sha256` tag), a run is created in the default experiment, the ONNX
//! file and an `MLmodel` are uploaded as its artifacts through the server's
//! artifact proxy (`/api/2.0/mlflow-artifacts/`), the metrics and lineage are
//! logged to the run, and a model version is created from the run's `model`
//! directory with aurum's metadata as tags; then every alias is set to the
//! matching MLflow version. Pull: each `READY` MLflow version not pulled
//! before (matched by the `aurum.mlflow_source` tag) is downloaded through
//! the same proxy, validated and registered like any other file, and the
//! MLflow aliases are set on the matching local versions.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::{Lineage, NewVersion};
use crate::store::Registry;

/// The tag holding a pushed version's sha256 at the MLflow server.
pub const SHA256_TAG: &str = "aurum.sha256";
/// The tag declaring a version's features (`view:feature`, comma separated).
pub const FEATURES_TAG: &str = "aurum.features";
/// The tag recording where a pulled version came from (`URL#name/version`).
pub const SOURCE_TAG: &str = "aurum.mlflow_source";

/// What a push or pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Versions copied: (version here, version there).
    pub copied: Vec<(u64, u64)>,
    /// Versions that were there already.
    pub skipped: usize,
    /// Aliases set: alias → version on the receiving side.
    pub aliases: BTreeMap<String, u64>,
    /// Aliases not set because aurum does not accept their names.
    pub skipped_aliases: Vec<String>,
}

/// A client of one MLflow server.
#[derive(Clone)]
pub struct MlflowClient {
    base: String,
    http: reqwest::Client,
    credential: Option<Credential>,
}

/// What the client authenticates with, from the environment the official
/// client reads: `MLFLOW_TRACKING_TOKEN` (bearer), else
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic).
#[derive(Clone)]
enum Credential {
    Bearer(String),
    Basic(String, String),
}

impl Credential {
    fn from_env() -> Option<Credential> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
            return Some(Credential::Bearer(token));
        }
        Some(Credential::Basic(
            var("MLFLOW_TRACKING_USERNAME")?,
            var("MLFLOW_TRACKING_PASSWORD")?,
        ))
    }
}

impl std::fmt::Debug for MlflowClient {
    // The credential is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("base", &self.base)
            .field("authenticated", &self.credential.is_some())
            .finish()
    }
}

impl MlflowClient {
    /// A client of the MLflow server at `base` (e.g. `http://127.0.0.1:5000`).
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidParameter(format!(
                "MLflow URI {base:?} must start with http:// or https://"
            )));
        }
        Ok(MlflowClient {
            base,
            http: reqwest::Client::new(),
            credential: Credential::from_env(),
        })
    }

    /// `request` with the client's credential, when it has one, and the
    /// current run's W3C trace context, when it is traced.
    fn authed(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (name, value) in telemetry::Trace::current().headers() {
            request = request.header(name, value);
        }
        match &self.credential {
            Some(Credential::Bearer(token)) => request.bearer_auth(token),
            Some(Credential::Basic(user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    fn fail(&self, path: &str, message: impl std::fmt::Display) -> Error {
        Error::Mlflow {
            url: format!("{}{path}", self.base),
            message: message.to_string(),
        }
    }

    /// Calls an MLflow REST endpoint; MLflow's error body becomes the message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut request = self.authed(self.http.request(method.clone(), &url));
        if let Some(body) = body {
            request = if method == reqwest::Method::GET {
                let query: Vec<(String, String)> = body
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        )
                    })
                    .collect();
                request.query(&query)
            } else {
                request.json(body)
            };
        }
        let response = request.send().await.map_err(|e| self.fail(path, e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.fail(path, e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error_code"].as_str().unwrap_or("");
            let message = value["message"].as_str().unwrap_or(text.as_str());
            return Err(self.fail(path, format!("{status} {code}: {message}")));
        }
        Ok(value)
    }

    /// Every version of `name` at the server (all pages).
    async fn versions(&self, name: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = json!({"filter": format!("name = '{name}'"), "max_results": "1000"});
            if let Some(t) = &token {
                query["page_token"] = json!(t);
            }
            let page = self
                .call(reqwest::Method::GET, "model-versions/search", Some(&query))
                .await?;
            all.extend(
                page["model_versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            match page["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(all),
            }
        }
    }

    /// Pushes every `READY` version of `name` and its aliases.
    pub async fn push(&self, registry: &Registry, name: &str) -> Result<SyncReport> {
        let local = registry.versions(name)?;
        if local.is_empty() {
            registry.model(name)?;
        }
        match self
            .call(
                reqwest::Method::POST,
                "registered-models/create",
                Some(&json!({"name": name})),
            )
            .await
        {
            Ok(_) => {}
            Err(Error::Mlflow { message, .. }) if message.contains("RESOURCE_ALREADY_EXISTS") => {}
            Err(e) => return Err(e),
        }
        let mut there: BTreeMap<String, u64> = BTreeMap::new();
        for version in self.versions(name).await? {
            if let (Some(sha), Some(number)) = (tag(&version, SHA256_TAG), number(&version)) {
                there.insert(sha, number);
            }
        }
        let mut report = SyncReport::default();
        let mut mapping: BTreeMap<u64, u64> = BTreeMap::new();
        for version in local.iter().filter(|v| v.is_ready()) {
            if let Some(&remote) = there.get(&version.sha256) {
                mapping.insert(version.version, remote);
                report.skipped += 1;
                continue;
            }
            let remote = self.push_version(registry, version).await?;
            there.insert(version.sha256.clone(), remote);
            mapping.insert(version.version, remote);
            report.copied.push((version.version, remote));
        }
        for (alias, version) in registry.aliases(name)? {
            let Some(&remote) = mapping.get(&version) else {
                continue;
            };
            self.call(
                reqwest::Method::POST,
                "registered-models/alias",
                Some(&json!({"name": name, "alias": alias, "version": remote.to_string()})),
            )
            .await?;
            report.aliases.insert(alias, remote);
        }
        Ok(report)
    }

    async fn push_version(
        &self,
        registry: &Registry,
        version: &crate::ModelVersion,
    ) -> Result<u64> {
        let bytes = registry.model_bytes(version)?;
        let (run_id, root) = self.create_run(version).await?;
        // Metrics and parameters first, so a refusal comes before any file
        // is uploaded.
        let now = chrono::Utc::now().timestamp_millis();
        self.log_batches(&run_id, version, now).await?;
        let mlmodel = format!(
            "artifact_path: model\nflavors:\n  onnx:\n    data: model.onnx\nmodel_uuid: {}\n",
            version.sha256
        );
        for (file, body) in [("model.onnx", bytes), ("MLmodel", mlmodel.into_bytes())] {
            self.upload(&root, file, body).await?;
        }
        self.call(
            reqwest::Method::POST,
            "runs/update",
            Some(&json!({"run_id": run_id, "status": "FINISHED", "end_time": now})),
        )
        .await?;
        self.create_version(version, &root, &run_id).await
    }

    /// Creates the MLflow run that carries `version`'s files; its id and
    /// its artifacts' path behind the server's artifact proxy.
    async fn create_run(&self, version: &crate::ModelVersion) -> Result<(String, String)> {
        let run = self
            .call(
                reqwest::Method::POST,
                "runs/create",
                Some(&json!({
                    "experiment_id": "0",
                    "run_name": format!("aurum-{}-v{}", version.name, version.version),
                    "start_time": chrono::Utc::now().timestamp_millis(),
                })),
            )
            .await?;
        let run_id = run["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| self.fail("runs/create", "the answer has no run_id"))?
            .to_string();
        let artifact_uri = run["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap_or_default();
        let Some(root) = proxied_path(artifact_uri) else {
            return Err(self.fail(
                "runs/create",
                format!(
                    "the run's artifacts go to {artifact_uri:?}; aurum uploads through the \
                     server's artifact proxy (start it with --serve-artifacts, the default)"
                ),
            ));
        };
        Ok((run_id, root))
    }

    /// Logs `version`'s finite metrics and its parameters to the run, in
    /// batches within MLflow's limits (1000 metrics, 100 parameters of up to
    /// 6000 characters per call).
    async fn log_batches(
        &self,
        run_id: &str,
        version: &crate::ModelVersion,
        now: i64,
    ) -> Result<()> {
        let metrics: Vec<Value> = version
            .metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
            .collect();
        let params: Vec<Value> = version
            .lineage
            .parameters
            .iter()
            .filter(|(_, v)| v.len() <= 6000)
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        for chunk in 0..metrics.len().div_ceil(100).max(params.len().div_ceil(100)) {
            let slice = |items: &[Value]| -> Vec<Value> {
                items.iter().skip(chunk * 100).take(100).cloned().collect()
            };
            self.call(
                reqwest::Method::POST,
                "runs/log-batch",
                Some(&json!({"run_id": run_id, "metrics": slice(&metrics), "params": slice(&params)})),
            )
            .await?;
        }
        Ok(())
    }

    /// Uploads `body` as the run's `model/<file>` through the artifact proxy.
    async fn upload(&self, root: &str, file: &str, body: Vec<u8>) -> Result<()> {
        let path = format!("/api/2.0/mlflow-artifacts/artifacts/{root}/model/{file}");
        let response = self
            .authed(self.http.put(self.artifact_url(root, &["model", file])?))
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail(&path, e))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(self.fail(&path, format!("{status}: {text}")));
        }
        Ok(())
    }

    /// Creates the MLflow version of `version` from the run's model, tagged
    /// with what a pull needs back (sha256, number, features, lineage) and
    /// `version`'s own tags; its number there.
    async fn create_version(
        &self,
        version: &crate::ModelVersion,
        root: &str,
        run_id: &str,
    ) -> Result<u64> {
        let mut tags = vec![
            json!({"key": SHA256_TAG, "value": version.sha256}),
            json!({"key": "aurum.version", "value": version.version.to_string()}),
            json!({"key": FEATURES_TAG, "value": version.features.join(",")}),
            json!({"key": "aurum.lineage", "value": serde_json::to_string(&version.lineage).unwrap_or_default()}),
        ];
        tags.extend(
            version
                .tags
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v})),
        );
        let created = self
            .call(
                reqwest::Method::POST,
                "model-versions/create",
                Some(&json!({
                    "name": version.name,
                    "source": format!("mlflow-artifacts:/{root}/model"),
                    "run_id": run_id,
                    "description": version.description,
                    "tags": tags,
                })),
            )
            .await?;
        number(&created["model_version"])
            .ok_or_else(|| self.fail("model-versions/create", "the answer has no version number"))
    }

    /// Pulls every `READY` ONNX version of `name` not pulled before, and its
    /// aliases. `features` declares the feature list of versions that carry
    /// no `aurum.features` tag (empty: none, served with raw tensors only).
    pub async fn pull(
        &self,
        registry: &Registry,
        name: &str,
        features: &[String],
    ) -> Result<SyncReport> {
        let mut remote = self.versions(name).await?;
        if remote.is_empty() {
            // Distinguish "no versions" from "no model" with MLflow's answer.
            self.call(
                reqwest::Method::GET,
                "registered-models/get",
                Some(&json!({"name": name})),
            )
            .await?;
        }
        remote.sort_by_key(|v| number(v).unwrap_or_default());
        let mut pulled: BTreeMap<String, u64> = BTreeMap::new();
        for version in registry.versions(name)? {
            if let Some(source) = version.tags.get(SOURCE_TAG) {
                pulled.insert(source.clone(), version.version);
            }
        }
        let mut report = SyncReport::default();
        let mut mapping: BTreeMap<u64, u64> = BTreeMap::new();
        for version in &remote {
            let Some(number) = number(version) else {
                continue;
            };
            if version["status"].as_str().is_some_and(|s| s != "READY") {
                continue;
            }
            let source = format!("{}#{name}/{number}", self.base);
            if let Some(&local) = pulled.get(&source) {
                mapping.insert(number, local);
                report.skipped += 1;
                continue;
            }
            let local = self
                .pull_version(registry, name, version, number, source, features)
                .await?;
            mapping.insert(number, local);
            report.copied.push((local, number));
        }
        report.aliases = self.pull_aliases(registry, name, &mapping).await?;
        Ok(report)
    }

    /// Registers MLflow version `number` of `name` (its JSON `version`) here,
    /// recording its `source`; its number here.
    async fn pull_version(
        &self,
        registry: &Registry,
        name: &str,
        version: &Value,
        number: u64,
        source: String,
        features: &[String],
    ) -> Result<u64> {
        let bytes = self.download_onnx(name, number).await?;
        let mut tags: BTreeMap<String, String> = version["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t["key"].as_str()?.to_string(),
                    t["value"].as_str()?.to_string(),
                ))
            })
            .collect();
        let declared: Vec<String> = tags
            .get(FEATURES_TAG)
            .map(|f| {
                f.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_else(|| features.to_vec());
        tags.insert(SOURCE_TAG.to_string(), source.clone());
        let lineage = tags
            .get("aurum.lineage")
            .and_then(|l| serde_json::from_str::<Lineage>(l).ok())
            .unwrap_or_else(|| Lineage {
                run_id: version["run_id"].as_str().unwrap_or_default().to_string(),
                ..Lineage::default()
            });
        let local = registry.register(
            name,
            &bytes,
            NewVersion {
                description: version["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                features: declared,
                lineage,
                tags,
                source,
                ..NewVersion::default()
            },
        )?;
        Ok(local.version)
    }

    /// Sets here each MLflow alias of `name` whose version was pulled
    /// (`mapping`: number there → number here); the aliases set.
    async fn pull_aliases(
        &self,
        registry: &Registry,
        name: &str,
        mapping: &BTreeMap<u64, u64>,
    ) -> Result<BTreeMap<String, u64>> {
        let model = self
            .call(
                reqwest::Method::GET,
                "registered-models/get",
                Some(&json!({"name": name})),
            )
            .await?;
        let mut aliases = BTreeMap::new();
        for alias in model["registered_model"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let (Some(alias), Some(version)) = (
                alias["alias"].as_str(),
                alias["version"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let Some(&local) = mapping.get(&version) else {
                continue;
            };
            if registry.aliases(name)?.get(alias) != Some(&local) {
                registry.set_alias(name, alias, local, "mlflow-pull")?;
            }
            aliases.insert(alias.to_string(), local);
        }
        Ok(aliases)
    }

    /// The ONNX file of an MLflow version, through the artifact proxy.
    async fn download_onnx(&self, name: &str, version: u64) -> Result<Vec<u8>> {
        let answer = self
            .call(
                reqwest::Method::GET,
                "model-versions/get-download-uri",
                Some(&json!({"name": name, "version": version.to_string()})),
            )
            .await?;
        let uri = answer["artifact_uri"].as_str().unwrap_or_default();
        let Some(root) = proxied_path(uri) else {
            return Err(self.fail(
                "model-versions/get-download-uri",
                format!("version {version} of {name} is stored at {uri:?}; aurum pulls through the server's artifact proxy (mlflow-artifacts:)"),
            ));
        };
        let list_path = "/api/2.0/mlflow-artifacts/artifacts";
        let response = self
            .authed(self.http.get(format!("{}{list_path}", self.base)))
            .query(&[("path", root.as_str())])
            .send()
            .await
            .map_err(|e| self.fail(list_path, e))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(self.fail(list_path, format!("listing {root}: {status}: {text}")));
        }
        let listing: Value = response.json().await.map_err(|e| self.fail(list_path, e))?;
        let files: Vec<&str> = listing["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["is_dir"] != json!(true))
            .filter_map(|f| f["path"].as_str())
            .filter(|p| p.ends_with(".onnx"))
            .collect();
        let [file] = files.as_slice() else {
            return Err(self.fail(
                list_path,
                format!("version {version} of {name} holds {} .onnx files at {uri}; aurum pulls ONNX models", files.len()),
            ));
        };
        let file = file.rsplit('/').next().unwrap_or(file);
        let path = format!("{list_path}/{root}/{file}");
        let response = self
            .authed(self.http.get(self.artifact_url(&root, &["", file])?))
            .send()
            .await
            .map_err(|e| self.fail(&path, e))?;
        if !response.status().is_success() {
            return Err(self.fail(&path, response.status()));
        }
        Ok(response
            .bytes()
            .await
            .map_err(|e| self.fail(&path, e))?
            .to_vec())
    }
}

impl MlflowClient {
    /// The artifact-proxy URL of `root` joined with `parts`, each part
    /// percent-encoded as a path segment.
    fn artifact_url(&self, root: &str, parts: &[&str]) -> Result<reqwest::Url> {
        let mut url =
            reqwest::Url::parse(&format!("{}/api/2.0/mlflow-artifacts/artifacts", self.base))
                .map_err(|e| self.fail("", e))?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| self.fail("", "the MLflow URI cannot take a path"))?;
            segments.extend(root.split('/').filter(|s| !s.is_empty()));
            segments.extend(parts.iter().filter(|s| !s.is_empty()));
        }
        Ok(url)
    }
}

/// The path under the artifact proxy of an `mlflow-artifacts:` URI (either
/// `mlflow-artifacts:/path` or `mlflow-artifacts://host:port/path`).
fn proxied_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(with_authority) => with_authority.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_matches('/').to_string())
}

fn tag(version: &Value, key: &str) -> Option<String> {
    version["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str())
        .map(str::to_string)
}

fn number(version: &Value) -> Option<u64> {
    match &version["version"] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}
