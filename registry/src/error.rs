//! Errors of the registry.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the registry, with the input that caused it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded (the
    /// server's problem, not the model's): always
    /// [`onnx::Error::RuntimeMissing`], whose message names the command that
    /// installs it.
    #[error(transparent)]
    RuntimeMissing(onnx::Error),
    /// ONNX Runtime refused the model (the caller's problem).
    #[error(transparent)]
    InvalidModel(onnx::Error),
    /// The model's signature does not fit what was declared for it.
    #[error("model {model} does not match its declaration: {message}")]
    SignatureMismatch {
        /// The model name.
        model: String,
        /// What does not fit.
        message: String,
    },
    /// A model name is not usable as a registry key.
    #[error(
        "invalid model name {0:?}: use 1-128 characters of letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidName(String),
    /// The model or version does not exist.
    #[error("model {model} has no version {version}")]
    VersionNotFound {
        /// The model name.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// The model does not exist at all.
    #[error("no model named {0:?} is registered")]
    ModelNotFound(String),
    /// A model of that name exists already.
    #[error("a model named {0:?} is registered already")]
    ModelExists(String),
    /// The model has no such alias.
    #[error("model {model} has no alias {alias:?}")]
    AliasNotFound {
        /// The model name.
        model: String,
        /// The alias asked for.
        alias: String,
    },
    /// A version cannot be deleted while aliases point at it.
    #[error(
        "version {version} of {model} cannot be deleted: alias {aliases} points at it; move the alias first"
    )]
    VersionAliased {
        /// The model name.
        model: String,
        /// The version.
        version: u64,
        /// The aliases pointing at it, comma-separated.
        aliases: String,
    },
    /// A model cannot be deleted while it has aliases.
    #[error("model {model} cannot be deleted: it has aliases ({aliases}); delete them first")]
    ModelAliased {
        /// The model name.
        model: String,
        /// Its aliases, comma-separated.
        aliases: String,
    },
    /// A rollback found no earlier version to go back to.
    #[error("cannot roll {alias} of {model} back: {reason}")]
    NothingToRollBack {
        /// The model name.
        model: String,
        /// The alias.
        alias: String,
        /// Why.
        reason: String,
    },
    /// A request parameter is not acceptable (a filter, a page token, an
    /// alias or tag name); the message names it.
    #[error("{0}")]
    InvalidParameter(String),
    /// A call to an MLflow server failed.
    #[error("MLflow server {url}: {message}")]
    Mlflow {
        /// The URL called.
        url: String,
        /// What went wrong (the server's error code and message, or the
        /// transport error).
        message: String,
    },
    /// A stored file does not hash to its recorded digest.
    #[error("stored model file {path} is corrupt: expected sha256 {expected}, found {actual}")]
    Corrupt {
        /// The blob path.
        path: PathBuf,
        /// The recorded digest.
        expected: String,
        /// The digest of the bytes found.
        actual: String,
    },
    /// Reading or writing the registry directory failed.
    #[error("registry I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The object store holding the registry failed or refused a request.
    #[error("registry storage {location}: {message}")]
    Storage {
        /// The object's URI, without secrets.
        location: String,
        /// What the store said.
        message: String,
    },
    /// A metadata document could not be read or written.
    #[error("registry metadata {path}: {source}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Sorts the ONNX layer's errors by whose problem they are: a missing
/// runtime is the server's, anything else about loading a model is the
/// model's.
impl From<onnx::Error> for Error {
    fn from(e: onnx::Error) -> Self {
        match e {
            onnx::Error::RuntimeMissing { .. } => Error::RuntimeMissing(e),
            _ => Error::InvalidModel(e),
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
