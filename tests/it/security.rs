//! Tokens and roles with the real binary and the clients users run:
//! `aurum token new` makes them; `aurum serve --tokens` checks them on
//! HTTP, Arrow Flight (pyarrow.flight's basic-token handshake), the MLflow
//! API (the official client's `MLFLOW_TRACKING_TOKEN`) and the Open
//! Inference Protocol over gRPC (tritonclient); `aurum materialize` sends
//! `AURUM_TOKEN`; a non-loopback address without tokens is refused before
//! anything is bound.

use std::ffi::OsStr;

use serde_json::{Value, json};

use crate::cli::{example_project, ok, ok_in_env, run_in_env};
use crate::python;
use crate::server::{call, start_with};

fn new_token(dir: &std::path::Path, name: &str, role: &str) -> String {
    let out = ok(dir, &["token", "new", name, "--role", role]);
    out.trim().to_string()
}

#[test]
fn every_protocol_checks_tokens_and_roles() {
    let project = example_project("2000", "3");
    let dir = project.path();
    let read = new_token(dir, "dashboards", "read");
    let write = new_token(dir, "ingest", "write");
    let admin = new_token(dir, "ops", "admin");
    let file = std::fs::read_to_string(dir.join("tokens.toml")).unwrap();
    for token in [&read, &write, &admin] {
        assert_eq!(token.len(), 64, "{token}");
        assert!(!file.contains(token.as_str()), "a token is kept in clear");
    }
    let again = run_in_env(dir, &["token", "new", "ops", "--role", "read"], &[]);
    assert!(!again.status.success(), "a name was given twice");

    let server = start_with(dir, &["--tokens", "tokens.toml"]);
    let predict = json!({"model": "fraud", "entities": {"customer_id": [1]}});
    let reply = call(
        "POST",
        &format!("{}/predict", server.url),
        Some(&predict),
        None,
    );
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert!(!reply.text.contains(&read));

    let answer: Value = serde_json::from_str(&python::run(
        "the clients with tokens",
        "tests/python/auth_clients.py",
        &[
            OsStr::new(&server.url),
            OsStr::new(&server.flight),
            OsStr::new(&server.grpc),
            OsStr::new(&read),
            OsStr::new(&write),
            OsStr::new(&admin),
        ],
    ))
    .unwrap();
    let expect = |key: &str, want: &str| {
        let got = answer[key].as_str().unwrap_or_default();
        assert!(
            got.starts_with(want),
            "{key}: {got} (wanted {want}) in {answer}"
        );
    };
    expect("flight_get_none", "unauthenticated");
    expect("flight_list_none", "unauthenticated");
    expect("flight_get_read", "ok");
    expect("flight_list_read", "ok");
    expect("flight_get_write", "ok");
    expect("flight_put_read", "unauthorized");
    // Let in, then refused for its rows (not for its token).
    let put = answer["flight_put_write"].as_str().unwrap();
    assert!(!put.contains("unauth"), "{put}");
    expect("flight_bad_handshake", "unauthenticated");
    expect("mlflow_search_none", "UNAUTHENTICATED");
    expect("mlflow_search_read", "ok");
    expect("mlflow_create_read", "PERMISSION_DENIED");
    expect("mlflow_create_admin", "ok");
    expect("grpc_none", "StatusCode.UNAUTHENTICATED");
    expect("grpc_read", "ok");
    assert_eq!(answer["grpc_live_none"], true, "health stays open");

    // `aurum materialize` sends AURUM_TOKEN.
    let args = ["materialize", "--server", server.url.as_str()];
    let refused = run_in_env(dir, &args, &[]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("401"), "{error}");
    let too_small = run_in_env(dir, &args, &[("AURUM_TOKEN", read.as_str())]);
    assert!(!too_small.status.success());
    assert!(String::from_utf8_lossy(&too_small.stderr).contains("403"));
    ok_in_env(dir, &args, &[("AURUM_TOKEN", admin.as_str())]);
}

#[test]
fn a_non_loopback_address_without_tokens_is_refused_before_binding() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    // 0.0.0.0 is only named, never bound: the check comes first.
    let output = run_in_env(dir, &["serve", "--addr", "0.0.0.0:0"], &[]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("without tokens") && error.contains("--insecure"),
        "{error}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}
