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
    for call in ["info", "schema", "exchange"] {
        expect(&format!("flight_{call}_none"), "unauthenticated");
        expect(&format!("flight_{call}_read"), "ok");
        expect(&format!("flight_{call}_write"), "ok");
    }
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

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as
/// `cert.pem` and `key.pem` into `dir`.
fn self_signed(dir: &std::path::Path) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
}

#[test]
fn tls_on_every_port_with_the_clients_users_run() {
    let project = example_project("2000", "3");
    let dir = project.path();
    ok(dir, &["train"]);
    self_signed(dir);
    let server = start_with(dir, &["--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(
        server.flight.starts_with("grpc+tls://"),
        "{}",
        server.flight
    );
    let answer: Value = serde_json::from_str(&python::run(
        "the clients over TLS",
        "tests/python/tls_clients.py",
        &[
            OsStr::new(&server.url),
            OsStr::new(&server.flight),
            OsStr::new(&server.grpc),
            dir.join("cert.pem").as_os_str(),
        ],
    ))
    .unwrap();
    assert_eq!(answer["https_ready"], 200, "{answer}");
    assert_eq!(answer["https_predict"], 2, "{answer}");
    assert_eq!(answer["https_untrusted"], "error SSLError", "{answer}");
    assert!(
        answer["http_plain"]
            .as_str()
            .is_some_and(|e| e.starts_with("error")),
        "{answer}"
    );
    assert!(
        answer["flight_views"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    assert!(
        answer["flight_rows"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    assert!(
        answer["flight_plain"]
            .as_str()
            .is_some_and(|e| e.starts_with("error")),
        "{answer}"
    );
    assert_eq!(answer["grpc_live"], true, "{answer}");
    assert_eq!(answer["grpc_model_ready"], true, "{answer}");

    // A key that is not the certificate's is refused before anything is
    // bound, naming both files and not the key.
    let other = tempfile::tempdir().unwrap();
    self_signed(other.path());
    let key = other.path().join("key.pem");
    let refused = run_in_env(
        dir,
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cert.pem") && stderr.contains("do not make a TLS"),
        "{stderr}"
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(!stderr.contains(secret.lines().nth(1).unwrap()), "{stderr}");
}

#[test]
fn a_client_that_sends_its_headers_slowly_is_cut_off() {
    use std::io::{Read, Write};
    let project = example_project("200", "1");
    let dir = project.path();
    let server = start_with(dir, &["--header-read-timeout-secs", "1"]);
    let address = server.url.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(address).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    // Headers begun and never finished.
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1")
        .unwrap();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(read.is_ok(), "the connection was not closed: {read:?}");
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(15),
        "closed after {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A client that sends its headers in time is answered on the same
    // server.
    let reply = call("GET", &format!("{}/health/live", server.url), None, None);
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A body that declares more than the limit is answered 413 at once, and
/// the client that goes on sending it all still reads that answer (the
/// server reads and drops the rest instead of resetting the connection).
#[test]
fn a_body_declared_too_large_is_answered_413_while_it_is_still_sent() {
    use std::io::{Read, Write};
    let project = example_project("200", "1");
    let server = crate::server::start(project.path());
    let address = server.url.trim_start_matches("http://");
    let mut client = std::net::TcpStream::connect(address).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let length = 9 << 20;
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < length {
        client
            .write_all(&chunk)
            .expect("the server kept reading the body");
        sent += chunk.len();
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
}

#[test]
fn flight_uploads_and_entity_keys_are_bounded() {
    let project = example_project("2000", "3");
    let dir = project.path();
    ok(dir, &["train"]);
    let server = start_with(dir, &["--flight-max-upload-mib", "1"]);
    let answer: Value = serde_json::from_str(&python::run(
        "pyarrow.flight against the limits",
        "tests/python/flight_limits.py",
        &[OsStr::new(&server.flight)],
    ))
    .unwrap();
    let large = answer["large_spine"].as_str().unwrap_or_default();
    assert!(
        large.contains("1048576 bytes") && large.contains("--flight-max-upload-mib"),
        "{answer}"
    );
    assert_eq!(answer["small_spine"], 1000, "{answer}");

    // HTTP: a key longer than the limit is refused, not looked up, and the
    // message does not echo it whole.
    let key = "k".repeat(feature_store::online::MAX_KEY_BYTES + 1);
    for (route, body) in [
        (
            "predict",
            json!({"model": "fraud", "entities": {"customer_id": [key]}}),
        ),
        (
            "get-online-features",
            json!({"feature_service": "fraud_detection", "entities": {"customer_id": [key]}}),
        ),
    ] {
        let reply = call(
            "POST",
            &format!("{}/{route}", server.url),
            Some(&body),
            None,
        );
        assert_eq!(reply.status, 400, "{route}: {}", reply.text);
        assert!(reply.text.contains("1024 bytes"), "{route}: {}", reply.text);
        assert!(reply.text.len() < 2000, "{route}: {}", reply.text);
    }
}
