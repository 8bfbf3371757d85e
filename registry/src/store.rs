//! The registry on a local directory.
//!
//! Layout under the root:
//! - `blobs/<sha256>.onnx`: model files, content-addressed, written once;
//! - `models/<name>/versions/<version>.json`: one metadata document per version.
//!
//! A version exists exactly when its metadata document exists. The document is
//! written to a temporary file, synced, and then hard-linked to its final name,
//! which fails if the name is taken: version numbers are never reused and two
//! concurrent registrations cannot both claim one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{ModelVersion, NewVersion};
use crate::runtime;

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

    /// Validates an ONNX model and registers it as the next version of `name`.
    ///
    /// The model must load in ONNX Runtime, and its first input must take one
    /// column per declared feature. Nothing is written unless it does.
    pub fn register(&self, name: &str, onnx: &[u8], new: NewVersion) -> Result<ModelVersion> {
        validate_name(name)?;
        let session = runtime::load_session(name, onnx)?;
        let signature = runtime::signature(&session);
        check_features(name, &signature, &new)?;

        let sha256 = hex::encode(Sha256::digest(onnx));
        self.write_blob(&sha256, onnx)?;

        let versions_dir = self.versions_dir(name);
        fs::create_dir_all(&versions_dir).map_err(|e| Error::io(&versions_dir, e))?;
        let imputation = if new.imputation.is_empty() {
            vec![0.0; new.features.len()]
        } else {
            new.imputation
        };
        let mut version = ModelVersion {
            name: name.to_string(),
            version: 0,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            description: new.description,
            sha256,
            signature,
            features: new.features,
            imputation,
            metrics: new.metrics,
            lineage: new.lineage,
            tags: new.tags,
        };
        let mut next = self.versions(name)?.last().map_or(1, |v| v.version + 1);
        loop {
            version.version = next;
            let final_path = versions_dir.join(format!("{next}.json"));
            let body = serde_json::to_vec_pretty(&version).map_err(|source| Error::Metadata {
                path: final_path.clone(),
                source,
            })?;
            let tmp = write_temp(&versions_dir, &body)?;
            let linked = fs::hard_link(&tmp, &final_path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(&versions_dir)?;
                    tracing::info!(model = name, version = next, "registered model version");
                    return Ok(version);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
                Err(e) => return Err(Error::io(final_path, e)),
            }
        }
    }

    /// The names of the models with at least one version, sorted.
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
                && !self.versions(name)?.is_empty()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
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
        numbers.into_iter().map(|n| self.version(name, n)).collect()
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
        serde_json::from_slice(&bytes).map_err(|source| Error::Metadata { path, source })
    }

    /// The newest version of `name`.
    pub fn latest(&self, name: &str) -> Result<ModelVersion> {
        self.versions(name)?
            .pop()
            .ok_or_else(|| Error::ModelNotFound(name.to_string()))
    }

    /// The ONNX bytes of a version, checked against the recorded digest.
    pub fn model_bytes(&self, version: &ModelVersion) -> Result<Vec<u8>> {
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

    fn versions_dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name).join("versions")
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

fn validate_name(name: &str) -> Result<()> {
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
    // aurum feeds one float32 matrix [batch, features] and reads a float32
    // first output; anything else could load but never serve.
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
    match signature.outputs.first() {
        Some(output) if output.dtype == "f32" => {}
        Some(output) => {
            return Err(mismatch(format!(
                "the first output {:?} is {}; aurum needs a float32 first output",
                output.name, output.dtype
            )));
        }
        None => return Err(mismatch("the model has no outputs".to_string())),
    }
    if new.features.is_empty() {
        return Err(mismatch(
            "no features were declared for the model input".to_string(),
        ));
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

fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dir.join(format!(".tmp-{}-{nonce}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
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
