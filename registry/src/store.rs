//! The registry's documents and blobs, on a local directory or an object
//! store (see [`crate::objects`] for how each gives the guarantees below).
//!
//! Layout under the root:
//! - `blobs/<sha256>.onnx`: model files, content-addressed, written once;
//! - `models/<name>/model.json`: the registered model (description, tags);
//! - `models/<name>/versions/<version>.json`: one metadata document per version;
//! - `models/<name>/aliases.json`: alias → version;
//! - `models/<name>/attachments/<version>/<key>`: documents kept beside a
//!   version (its drift reference profile), replaced atomically;
//! - `models/<name>/alias-history.jsonl` (on an object store,
//!   `models/<name>/alias-history/<n>.json`): every alias move, appended,
//!   never rewritten;
//! - `locks/<name>.lock`: held by whoever changes the model's documents, so
//!   processes (the CLI, servers, replicas) never interleave.
//!
//! A version exists exactly when its metadata document exists. The document is
//! created only if its name is free, so version numbers are never reused and
//! two concurrent registrations cannot both claim one. Documents that change
//! are replaced whole, so a reader sees the old or the new document, never
//! half of one.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{ModelVersion, NewVersion, VersionStatus};
use crate::objects::Objects;

/// A model registry rooted at a directory or an object-store prefix.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) objects: Objects,
}

impl Registry {
    /// Opens (creating if needed) the registry in the local directory
    /// `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs"), root.join("models")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Registry {
            objects: Objects::Local(root),
        })
    }

    /// The registry under `prefix` of an object store (S3, Azure, GCS);
    /// `shown` is the prefix's URI without secrets, for logs and errors.
    /// Nothing is contacted until the first call.
    pub fn on_object_store(
        store: Arc<dyn object_store::ObjectStore>,
        prefix: object_store::path::Path,
        shown: &str,
    ) -> Self {
        Registry {
            objects: Objects::remote(store, prefix, shown),
        }
    }

    /// Where the registry is (a directory, or a URI without secrets).
    pub fn location(&self) -> String {
        self.objects.location()
    }

    /// Validates an ONNX model and registers it as the next version of `name`
    /// (creating the registered model if it does not exist).
    ///
    /// The model must load in ONNX Runtime. When features are declared, its
    /// first input must take one float32 column per feature and its first
    /// output must be float32 (what `/predict` feeds and reads). Nothing is
    /// written unless it passes.
    pub fn register(&self, name: &str, bytes: &[u8], new: NewVersion) -> Result<ModelVersion> {
        validate_name(name)?;
        // Loading it is the validation; the session is not kept.
        let signature = onnx::Model::load(name, bytes)?.into_signature();
        check_features(name, &signature, &new)?;

        let sha256 = hex::encode(Sha256::digest(bytes));
        self.write_blob(&sha256, bytes)?;
        let imputation = if new.imputation.is_empty() {
            vec![0.0; new.features.len()]
        } else {
            new.imputation
        };
        let version = record(
            name,
            NewVersion { imputation, ..new },
            sha256,
            signature,
            None,
        );
        self.commit_version(version)
    }

    /// Records a registration that failed (for the MLflow API, where a
    /// version is created first and its file imported after): the version
    /// gets a number and status `FAILED_REGISTRATION` with `message`, and
    /// holds no model. It is never served.
    pub fn register_failed(
        &self,
        name: &str,
        new: NewVersion,
        message: &str,
    ) -> Result<ModelVersion> {
        validate_name(name)?;
        let empty = crate::Signature {
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let version = record(name, new, String::new(), empty, Some(message));
        self.commit_version(version)
    }

    /// Gives `version` the next free number of its model and writes it.
    fn commit_version(&self, mut version: ModelVersion) -> Result<ModelVersion> {
        let name = version.name.clone();
        self.ensure_model(&name)?;
        // Under the model's lock, so a concurrent rename or deletion cannot
        // move the model between here and the commit.
        let _lock = self.lock(&name)?;
        self.ensure_model(&name)?;
        let mut next = self.highest_number(&name)? + 1;
        loop {
            version.version = next;
            let key = version_key(&name, next);
            let body = serde_json::to_vec_pretty(&version).map_err(|source| Error::Metadata {
                path: self.objects.show(&key),
                source,
            })?;
            crash_point("registry-before-link");
            if self.objects.create(&key, &body)? {
                tracing::info!(
                    model = %name,
                    version = next,
                    status = version.status.as_str(),
                    "registered model version"
                );
                return Ok(version);
            }
            next += 1;
        }
    }

    /// The names of the registered models, sorted.
    pub fn models(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for name in self.objects.list("models")? {
            if validate_name(&name).is_ok()
                && (self.objects.exists(&model_key(&name))?
                    || !self.version_numbers(&name)?.is_empty())
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.version_numbers(name)?
            .into_iter()
            .map(|n| self.version(name, n))
            .collect()
    }

    /// The highest version number `name` has used, deleted ones included
    /// (0 when none): numbers are never reused.
    fn highest_number(&self, name: &str) -> Result<u64> {
        Ok(self
            .objects
            .list(&versions_dir(name))?
            .iter()
            .filter_map(|file| {
                file.strip_suffix(".json")
                    .or_else(|| file.strip_suffix(".deleted"))?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0))
    }

    /// The version numbers of `name`, ascending.
    pub(crate) fn version_numbers(&self, name: &str) -> Result<Vec<u64>> {
        validate_name(name)?;
        let mut numbers: Vec<u64> = self
            .objects
            .list(&versions_dir(name))?
            .iter()
            .filter_map(|file| file.strip_suffix(".json")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// One version of `name`.
    pub fn version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        validate_name(name)?;
        let key = version_key(name, version);
        let Some(bytes) = self.objects.read(&key)? else {
            return Err(Error::VersionNotFound {
                model: name.to_string(),
                version: version.to_string(),
            });
        };
        let mut version: ModelVersion =
            serde_json::from_slice(&bytes).map_err(|source| Error::Metadata {
                path: self.objects.show(&key),
                source,
            })?;
        // The directory names the model (a rename moves the directory).
        version.name = name.to_string();
        if version.updated_at.is_empty() {
            version.updated_at = version.created_at.clone();
        }
        Ok(version)
    }

    /// The newest servable (`READY`) version of `name`, reading version
    /// documents from the newest down only until one is ready.
    pub fn latest(&self, name: &str) -> Result<ModelVersion> {
        let numbers = self.version_numbers(name)?;
        if numbers.is_empty() && !self.objects.exists(&model_key(name))? {
            return Err(Error::ModelNotFound(name.to_string()));
        }
        for number in numbers.into_iter().rev() {
            let version = self.version(name, number)?;
            if version.is_ready() {
                return Ok(version);
            }
        }
        Err(Error::VersionNotFound {
            model: name.to_string(),
            version: "ready".to_string(),
        })
    }

    /// The newest version of `name`, whatever its status (`None`: none).
    pub fn newest(&self, name: &str) -> Result<Option<ModelVersion>> {
        self.version_numbers(name)?
            .last()
            .map(|&n| self.version(name, n))
            .transpose()
    }

    /// The ONNX bytes of a version in chunks of at most `chunk` bytes, each
    /// handed to `sink` in order (`false` from it stops reading), holding
    /// at most two chunks at a time: for streaming a model to a client. The
    /// digest is checked as the bytes pass, and the last chunk is handed
    /// over only once it matches: a file that does not match the record is
    /// an [`Error::Corrupt`] before its end reaches `sink`, so a client
    /// streamed the chunks never receives the whole of a wrong file.
    pub fn read_model(
        &self,
        version: &ModelVersion,
        chunk: usize,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<()> {
        self.check_ready(version)?;
        let key = blob_key(&version.sha256);
        let mut digest = Sha256::new();
        let mut held: Option<Vec<u8>> = None;
        let mut stopped = false;
        let found = self.objects.read_chunks(&key, chunk, &mut |bytes| {
            digest.update(&bytes);
            if let Some(previous) = held.replace(bytes) {
                stopped = !sink(previous);
            }
            !stopped
        })?;
        if !found {
            return Err(self.missing_model(version, &key));
        }
        if stopped {
            return Ok(());
        }
        let actual = hex::encode(digest.finalize());
        if actual != version.sha256 {
            return Err(Error::Corrupt {
                path: self.objects.show(&key),
                expected: version.sha256.clone(),
                actual,
            });
        }
        if let Some(last) = held {
            sink(last);
        }
        Ok(())
    }

    fn check_ready(&self, version: &ModelVersion) -> Result<()> {
        if version.is_ready() {
            return Ok(());
        }
        Err(Error::InvalidParameter(format!(
            "version {} of {} holds no model: its registration failed ({})",
            version.version,
            version.name,
            version
                .status_message
                .as_deref()
                .unwrap_or("no reason recorded")
        )))
    }

    fn missing_model(&self, version: &ModelVersion, key: &str) -> Error {
        Error::Storage {
            location: self.objects.show(key).display().to_string(),
            message: format!(
                "the model file of version {} of {} is missing",
                version.version, version.name
            ),
        }
    }

    /// The ONNX bytes of a version, checked against the recorded digest.
    pub fn model_bytes(&self, version: &ModelVersion) -> Result<Vec<u8>> {
        self.check_ready(version)?;
        let key = blob_key(&version.sha256);
        let bytes = self
            .objects
            .read(&key)?
            .ok_or_else(|| self.missing_model(version, &key))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != version.sha256 {
            return Err(Error::Corrupt {
                path: self.objects.show(&key),
                expected: version.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` as the attachment `key` of a version (a document kept
    /// beside the model, e.g. its drift reference profile), replacing any
    /// earlier one atomically. The registry does not read attachments.
    pub fn put_attachment(&self, name: &str, version: u64, key: &str, bytes: &[u8]) -> Result<()> {
        validate_name(key)?;
        self.version(name, version)?;
        self.objects
            .replace(&format!("{}/{key}", attachments_dir(name, version)), bytes)
    }

    /// The attachment `key` of a version, if it has one.
    pub fn attachment(&self, name: &str, version: u64, key: &str) -> Result<Option<Vec<u8>>> {
        validate_name(key)?;
        self.objects
            .read(&format!("{}/{key}", attachments_dir(name, version)))
    }

    /// The size in bytes of a version's ONNX file (`None`: the version holds
    /// no model).
    pub fn model_size(&self, version: &ModelVersion) -> Result<Option<u64>> {
        if !version.is_ready() {
            return Ok(None);
        }
        self.objects.size(&blob_key(&version.sha256))
    }

    fn write_blob(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        let key = blob_key(sha256);
        // Content-addressed: a file already there holds these very bytes.
        if self.objects.exists(&key)? {
            return Ok(());
        }
        self.objects.replace(&key, bytes)
    }
}

/// The key of a model's record.
pub(crate) fn model_key(name: &str) -> String {
    format!("models/{name}/model.json")
}

/// The directory of a model's version documents.
pub(crate) fn versions_dir(name: &str) -> String {
    format!("models/{name}/versions")
}

/// The key of a version's document.
pub(crate) fn version_key(name: &str, version: u64) -> String {
    format!("models/{name}/versions/{version}.json")
}

/// The directory of a version's attachments.
pub(crate) fn attachments_dir(name: &str, version: u64) -> String {
    format!("models/{name}/attachments/{version}")
}

fn blob_key(sha256: &str) -> String {
    format!("blobs/{sha256}.onnx")
}

/// A version's record before it gets its number: `READY`, or failed with
/// `failure` as its status message.
fn record(
    name: &str,
    new: NewVersion,
    sha256: String,
    signature: crate::Signature,
    failure: Option<&str>,
) -> ModelVersion {
    let now = now();
    ModelVersion {
        name: name.to_string(),
        version: 0,
        created_at: now.clone(),
        description: new.description,
        sha256,
        signature,
        features: new.features,
        imputation: new.imputation,
        metrics: new.metrics,
        lineage: new.lineage,
        tags: new.tags,
        status: if failure.is_some() {
            VersionStatus::FailedRegistration
        } else {
            VersionStatus::Ready
        },
        status_message: failure.map(str::to_string),
        source: new.source,
        updated_at: now,
    }
}

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

fn check_features(name: &str, signature: &crate::Signature, new: &NewVersion) -> Result<()> {
    let mismatch = |message: String| Error::SignatureMismatch {
        model: name.to_string(),
        message,
    };
    // Without declared features the model is served with raw tensors only
    // (the Open Inference Protocol), whatever its inputs.
    if new.features.is_empty() && new.imputation.is_empty() {
        return Ok(());
    }
    // `/predict` feeds one float32 matrix [batch, features] and reads the
    // first float32 output (classifiers exported by skl2onnx put an int64
    // label first); anything else could load but never serve.
    let [input] = signature.inputs.as_slice() else {
        return Err(mismatch(format!(
            "the model has {} inputs; aurum serves models with one [batch, features] float32 input",
            signature.inputs.len()
        )));
    };
    if input.dtype != "f32" || input.shape.len() != 2 {
        return Err(mismatch(format!(
            "input {:?} is {} with shape {:?}; aurum needs float32 [batch, features]",
            input.name, input.dtype, input.shape
        )));
    }
    if !signature.outputs.iter().any(|o| o.dtype == "f32") {
        let outputs: Vec<String> = signature
            .outputs
            .iter()
            .map(|o| format!("{:?} {}", o.name, o.dtype))
            .collect();
        return Err(mismatch(format!(
            "no output is float32 (outputs: {}); aurum answers with the first float32 output",
            if outputs.is_empty() {
                "none".to_string()
            } else {
                outputs.join(", ")
            }
        )));
    }
    if let Some(&width) = input.shape.last()
        && width >= 0
        && width as usize != new.features.len()
    {
        return Err(mismatch(format!(
            "input {:?} takes {width} columns but {} features were declared ({})",
            input.name,
            new.features.len(),
            new.features.join(", ")
        )));
    }
    if !new.imputation.is_empty() && new.imputation.len() != new.features.len() {
        return Err(mismatch(format!(
            "{} imputation values for {} features",
            new.imputation.len(),
            new.features.len()
        )));
    }
    Ok(())
}

/// The fault-injection point a test may set with `AURUM_CRASH_AT`: the
/// process aborts there, as if killed, with no cleanup.
pub(crate) fn crash_point(point: &str) {
    static CRASH_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = CRASH_AT.get_or_init(|| std::env::var("AURUM_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("AURUM_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// The current time as the registry records it.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", ".hidden", "a/b", "x y", &"n".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["fraud", "fraud-v2", "a.b_c"] {
            assert!(validate_name(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn unknown_models_have_no_versions() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert!(registry.versions("fraud").unwrap().is_empty());
        assert!(matches!(
            registry.latest("fraud"),
            Err(Error::ModelNotFound(_))
        ));
    }

    #[test]
    fn garbage_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let new = NewVersion {
            features: vec!["v:f".into()],
            ..NewVersion::default()
        };
        let err = registry
            .register("fraud", b"this is not an onnx model", new)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidModel { .. }),
            "unexpected error: {err}"
        );
        assert!(registry.versions("fraud").unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 0);
    }

    fn linear_model(width: usize) -> Vec<u8> {
        use onnx::{Dim, GraphBuilder};
        let mut g = GraphBuilder::new("linear");
        let weights: Vec<f32> = (0..width).map(|i| i as f32).collect();
        g.input("x", &[Dim::Dynamic("batch"), Dim::Fixed(width as i64)])
            .output("y", &[Dim::Dynamic("batch"), Dim::Fixed(1)])
            .constant("w", &[width as i64, 1], &weights)
            .node("MatMul", &["x", "w"], &["y"]);
        g.finish("test model")
    }

    #[test]
    fn a_model_streams_in_chunks_and_a_corrupt_one_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let bytes = linear_model(64);
        let new = NewVersion {
            features: (0..64).map(|i| format!("v:f{i}")).collect(),
            ..NewVersion::default()
        };
        let version = registry.register("fraud", &bytes, new).unwrap();
        let mut chunks = Vec::new();
        registry
            .read_model(&version, 100, |chunk| {
                chunks.push(chunk);
                true
            })
            .unwrap();
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() <= 100));
        assert_eq!(chunks.concat(), bytes);
        // A reader that stops early stops the reading.
        let mut taken = 0;
        registry
            .read_model(&version, 100, |_| {
                taken += 1;
                false
            })
            .unwrap();
        assert_eq!(taken, 1);
        // A file changed behind the registry's back: the digest mismatch is
        // the error before the last chunk is handed over.
        let blob = dir.path().join(blob_key(&version.sha256));
        let mut changed = bytes.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        fs::write(&blob, &changed).unwrap();
        let mut seen = 0;
        let err = registry
            .read_model(&version, 100, |chunk| {
                seen += chunk.len();
                true
            })
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(seen < changed.len(), "{seen} of {} bytes", changed.len());
    }
}
