//! The registry on a local directory.
//!
//! Layout under the root:
//! - `blobs/<sha256>.onnx`: model files, content-addressed, written once;
//! - `models/<name>/model.json`: the registered model (description, tags);
//! - `models/<name>/versions/<version>.json`: one metadata document per version;
//! - `models/<name>/aliases.json`: alias → version;
//! - `models/<name>/attachments/<version>/<key>`: documents kept beside a
//!   version (its drift reference profile), replaced atomically;
//! - `models/<name>/alias-history.jsonl`: every alias move, appended, never
//!   rewritten;
//! - `models/<name>/.lock`: held (an OS file lock) by whoever changes the
//!   model's documents, so processes (the CLI, servers) never interleave.
//!
//! A version exists exactly when its metadata document exists. The document is
//! written to a temporary file, synced, and then hard-linked to its final name,
//! which fails if the name is taken: version numbers are never reused and two
//! concurrent registrations cannot both claim one. Documents that change are
//! replaced by writing a temporary file and renaming it over the old one, so a
//! reader sees the old or the new document, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{ModelVersion, NewVersion, VersionStatus};

/// A model registry rooted at a directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs"), root.join("models")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Registry { root })
    }

    /// The registry's root directory.
    pub fn root(&self) -> &Path {
        &self.root
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
        // move the directory between here and the commit.
        let _lock = self.lock(&name)?;
        self.ensure_model(&name)?;
        let versions_dir = self.versions_dir(&name);
        fs::create_dir_all(&versions_dir).map_err(|e| Error::io(&versions_dir, e))?;
        let mut next = self.highest_number(&name)? + 1;
        loop {
            version.version = next;
            let final_path = versions_dir.join(format!("{next}.json"));
            let body = serde_json::to_vec_pretty(&version).map_err(|source| Error::Metadata {
                path: final_path.clone(),
                source,
            })?;
            let tmp = write_temp(&versions_dir, &body)?;
            crash_point("registry-before-link");
            let linked = fs::hard_link(&tmp, &final_path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(&versions_dir)?;
                    tracing::info!(
                        model = %name,
                        version = next,
                        status = version.status.as_str(),
                        "registered model version"
                    );
                    return Ok(version);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
                Err(e) => return Err(Error::io(final_path, e)),
            }
        }
    }

    /// The names of the registered models, sorted.
    pub fn models(&self) -> Result<Vec<String>> {
        let dir = self.root.join("models");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            if let Some(name) = entry.file_name().to_str()
                && validate_name(name).is_ok()
                && (self.model_dir(name).join("model.json").is_file()
                    || !self.version_numbers(name)?.is_empty())
            {
                names.push(name.to_string());
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
        let dir = self.versions_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut highest = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let stem = name
                .strip_suffix(".json")
                .or_else(|| name.strip_suffix(".deleted"));
            if let Some(number) = stem.and_then(|s| s.parse::<u64>().ok()) {
                highest = highest.max(number);
            }
        }
        Ok(highest)
    }

    /// The version numbers of `name`, ascending.
    pub(crate) fn version_numbers(&self, name: &str) -> Result<Vec<u64>> {
        validate_name(name)?;
        let dir = self.versions_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut numbers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(number) = stem.parse::<u64>() {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// One version of `name`.
    pub fn version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        validate_name(name)?;
        let path = self.versions_dir(name).join(format!("{version}.json"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::VersionNotFound {
                    model: name.to_string(),
                    version: version.to_string(),
                });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut version: ModelVersion =
            serde_json::from_slice(&bytes).map_err(|source| Error::Metadata { path, source })?;
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
        if numbers.is_empty() && !self.model_dir(name).join("model.json").is_file() {
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

    /// The ONNX bytes of a version, checked against the recorded digest.
    pub fn model_bytes(&self, version: &ModelVersion) -> Result<Vec<u8>> {
        if !version.is_ready() {
            return Err(Error::InvalidParameter(format!(
                "version {} of {} holds no model: its registration failed ({})",
                version.version,
                version.name,
                version
                    .status_message
                    .as_deref()
                    .unwrap_or("no reason recorded")
            )));
        }
        let path = self.blob_path(&version.sha256);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != version.sha256 {
            return Err(Error::Corrupt {
                path,
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
        let dir = self.attachments_dir(name, version);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tmp = write_temp(&dir, bytes)?;
        let path = dir.join(key);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&dir)
    }

    /// The attachment `key` of a version, if it has one.
    pub fn attachment(&self, name: &str, version: u64, key: &str) -> Result<Option<Vec<u8>>> {
        validate_name(key)?;
        let path = self.attachments_dir(name, version).join(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    pub(crate) fn attachments_dir(&self, name: &str, version: u64) -> PathBuf {
        self.model_dir(name)
            .join("attachments")
            .join(version.to_string())
    }

    /// The path of a version's ONNX file (for streaming it out).
    pub fn blob_path_of(&self, version: &ModelVersion) -> Option<PathBuf> {
        version.is_ready().then(|| self.blob_path(&version.sha256))
    }

    pub(crate) fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }

    fn versions_dir(&self, name: &str) -> PathBuf {
        self.model_dir(name).join("versions")
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256}.onnx"))
    }

    fn write_blob(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(sha256);
        if path.is_file() {
            return Ok(());
        }
        let dir = self.root.join("blobs");
        let tmp = write_temp(&dir, bytes)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&dir)
    }
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

/// Writes `bytes` to a new, uniquely named temporary file in `dir`, synced.
pub(crate) fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{nonce}-{count}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Replaces `path` with `bytes` atomically (a temporary file renamed over
/// it), so readers see the old or the new document.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = write_temp(dir, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(dir)
}

/// The current time as the registry records it.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
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
}
