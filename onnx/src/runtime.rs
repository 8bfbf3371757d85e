//! The process-wide ONNX Runtime environment.
//!
//! aurum loads `libonnxruntime.so` dynamically (ort's `load-dynamic`): the
//! library comes from the `onnxruntime` wheel on PyPI, installed by
//! `make onnxruntime` into the project's git-ignored `.tools/onnxruntime/`.
//! It is found without any environment variable by looking in `.tools/` of
//! every ancestor of the running executable and of the current directory;
//! `ORT_DYLIB_PATH` overrides the search.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{Error, Result};

/// The project command that installs the ONNX Runtime library.
pub const INSTALL_COMMAND: &str = "make onnxruntime";

/// The environment variable that overrides where the library is looked for.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Where, relative to a project root, `make onnxruntime` puts the library.
pub const PROJECT_DYLIB: &str = ".tools/onnxruntime/libonnxruntime.so";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Finds the ONNX Runtime shared library, or says how to install it.
pub fn locate() -> Result<PathBuf> {
    find_dylib().map_err(missing)
}

/// Loads ONNX Runtime now rather than with the first model, so a command
/// that will need it fails before doing any work, with the message naming
/// the command that installs it.
pub fn init() -> Result<()> {
    environment().map(|_| ())
}

fn find_dylib() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{DYLIB_ENV} is set to {}, which is not a file",
                path.display()
            ))
        };
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Ok(dir) = std::env::current_dir() {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    // The workspace this crate was built in, for binaries run from elsewhere.
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    roots
        .iter()
        .map(|root| root.join(PROJECT_DYLIB))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("{PROJECT_DYLIB} was not found above the executable or the current directory")
        })
}

/// The ONNX Runtime environment, created on first use and shared by the
/// whole process (ONNX Runtime allows one per process).
pub(crate) fn environment() -> Result<&'static Environment> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    // A failure is not cached: once `make onnxruntime` has run, the next
    // call succeeds without restarting the process.
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = find_dylib().map_err(missing)?;
    let env = ort::init_from(&path)
        .map_err(|e| missing(format!("cannot load {}: {e}", path.display())))?
        .with_name("aurum")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            missing(format!(
                "cannot start ONNX Runtime from {}: {e}",
                path.display()
            ))
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

fn missing(reason: String) -> Error {
    Error::RuntimeMissing {
        reason,
        install: INSTALL_COMMAND,
    }
}
