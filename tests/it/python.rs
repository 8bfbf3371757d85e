//! Python from the test virtualenv (`make python`): the real clients —
//! deltalake, polars, pyarrow.flight, mlflow, scikit-learn — that check
//! what aurum writes and serves from the outside.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtualenv's interpreter.
pub(crate) fn venv_python() -> PathBuf {
    let python = workspace().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make python` (or `make test`, which does)",
        python.display()
    );
    python
}

/// Runs `script` (a path in the workspace) with `args`, which must succeed
/// (else the failure names `what`); returns what it printed.
pub(crate) fn run(what: &str, script: &str, args: &[&OsStr]) -> String {
    run_in_env(what, script, args, &[])
}

/// [`run`] with more environment variables (an object store's endpoint
/// and credentials).
pub(crate) fn run_in_env(
    what: &str,
    script: &str,
    args: &[&OsStr],
    env: &[(&str, &str)],
) -> String {
    let output = Command::new(venv_python())
        .arg(workspace().join(script))
        .args(args)
        // MLflow's usage telemetry thread edits the environment while the
        // client's requests read it (a KeyError seen once); tests are
        // hermetic anyway.
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs one of the readers in `tests/python/` and returns the JSON it
/// prints.
pub(crate) fn reader(script: &str, args: &[&OsStr]) -> Value {
    let stdout = run("the Python reader", &format!("tests/python/{script}"), args);
    serde_json::from_str(&stdout).expect("the Python reader prints JSON")
}

/// The demo tables as Python's deltalake reads them, with the latest
/// features of `customers` (comma-separated ids).
pub(crate) fn read_tables(dir: &Path, customers: &str) -> Value {
    reader(
        "read_demo_tables.py",
        &[dir.as_os_str(), OsStr::new(customers)],
    )
}
