//! Running the real `aurum` binary: its output, its success or failure, and
//! the example project most tests start from.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `aurum args` in `dir`. A crash point set in the test's own
/// environment is not passed on: only [`crashes_at`] sets one.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    run_in_env(dir, args, &[])
}

/// [`run`] with more environment variables (an object store's endpoint
/// and credentials).
pub(crate) fn run_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(args)
        .current_dir(dir)
        .env_remove("AURUM_CRASH_AT")
        .envs(env.iter().copied())
        .output()
        .expect("running aurum")
}

/// Runs `aurum args` in `dir` with more environment variables
/// (credentials), which must succeed; returns what it printed.
pub(crate) fn ok_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_in_env(dir, args, env);
    assert!(
        output.status.success(),
        "aurum {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `aurum args` in `dir`, which must succeed; returns what it printed.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    ok_in_env(dir, args, &[])
}

/// Runs `aurum args` in `dir`, which must succeed printing JSON.
pub(crate) fn json(dir: &Path, args: &[&str]) -> Value {
    let stdout = ok(dir, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("aurum {args:?} printed no JSON ({e}): {stdout}"))
}

/// Runs `aurum args` in `dir`, which must fail; returns its error output.
pub(crate) fn fails(dir: &Path, args: &[&str]) -> String {
    let output = run(dir, args);
    assert!(!output.status.success(), "aurum {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `aurum args` in `dir` with the process aborting at crash point
/// `point` (`AURUM_CRASH_AT`), which must be reached.
pub(crate) fn crashes_at(dir: &Path, point: &str, args: &[&str]) {
    crashes_at_in_env(dir, point, args, &[]);
}

/// [`crashes_at`] with more environment variables (an object store's
/// endpoint and credentials).
pub(crate) fn crashes_at_in_env(dir: &Path, point: &str, args: &[&str], env: &[(&str, &str)]) {
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("AURUM_CRASH_AT", point)
        .output()
        .expect("running aurum");
    assert!(
        !output.status.success(),
        "{point}: the process should abort, the crash point was not reached"
    );
}

/// A fresh example project (`aurum init`) with `rows` generated
/// transactions from `seed` (ending at the current hour, so values are
/// within the view's TTL) run through the pipeline.
/// [`example_project`] whose view serves its gold rows' window values
/// (`windows_at = "event"`), for tests of rows pushed or stored as they
/// are.
pub(crate) fn example_project_event_windows(rows: &str, seed: &str) -> tempfile::TempDir {
    let project = example_project(rows, seed);
    let file = project.path().join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("windows_at = \"request\""), "{text}");
    std::fs::write(
        &file,
        text.replace("windows_at = \"request\"", "windows_at = \"event\""),
    )
    .unwrap();
    project
}

pub(crate) fn example_project(rows: &str, seed: &str) -> tempfile::TempDir {
    let project = tempfile::tempdir().expect("a temporary project directory");
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", rows, "--seed", seed]);
    ok(dir, &["pipeline"]);
    project
}
