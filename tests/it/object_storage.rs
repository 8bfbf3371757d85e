//! The project's Delta tables and model registry on object storage: the demo
//! path (pipeline → training → registry → serving → the prediction log)
//! against a real S3 server
//! (moto's server mode, from PyPI) and a real Azure Blob emulator (Azurite,
//! from npm), both on loopback, with the tables read back from the same
//! store by Python's deltalake and by `aurum table show`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{crashes_at_in_env, ok, ok_in_env, run_in_env};
use crate::python;
use crate::server::{call, poll, start_in_env};

/// moto's S3 server with one bucket; stopped when dropped (its standard
/// input closes, then it is killed if it has not ended).
struct S3Server {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
}

impl S3Server {
    fn start(bucket: &str) -> S3Server {
        let mut child = Command::new(python::venv_python())
            .arg(python::workspace().join("tests/python/s3_server.py"))
            .arg(bucket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto's S3 server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the S3 server's address");
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the S3 server printed {line:?}: {e}"));
        S3Server {
            child,
            stdin,
            endpoint: started["endpoint"]
                .as_str()
                .expect("an endpoint")
                .to_string(),
        }
    }

    /// What a client needs in its environment: the endpoint and the
    /// (test) credentials, the way AWS tools read them.
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's Blob service with one container; killed when dropped.
struct Azurite {
    child: Child,
    endpoint: String,
}

impl Azurite {
    fn start(container: &str) -> Azurite {
        let binary = python::workspace().join(".tools/azurite/node_modules/.bin/azurite-blob");
        assert!(
            binary.is_file(),
            "{} is missing: run `make azurite` (or `make test`, which does)",
            binary.display()
        );
        let mut child = Command::new(binary)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting Azurite");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut endpoint = None;
        for line in lines.by_ref() {
            let line = line.expect("reading Azurite's output");
            if let Some(url) = line.split("successfully listens on ").nth(1) {
                endpoint = Some(url.trim().to_string());
                break;
            }
        }
        // Azurite keeps writing to its output: keep reading it, or a
        // closed pipe would stop the emulator.
        std::thread::spawn(move || lines.for_each(drop));
        let azurite = Azurite {
            child,
            endpoint: endpoint.expect("Azurite printed its address"),
        };
        python::run(
            "creating the container",
            "tests/python/azure_container.py",
            &[OsStr::new(&azurite.endpoint), OsStr::new(container)],
        );
        azurite
    }

    /// The emulator's address for clients (its development account and key
    /// are the emulator's public defaults).
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.as_str()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `table` as Python's deltalake reads it from the store.
fn python_reads(env: &[(&str, &str)], uri: &str) -> Value {
    let stdout = python::run_in_env(
        "Python's deltalake on object storage",
        "tests/python/read_any_table.py",
        &[OsStr::new(uri)],
        env,
    );
    serde_json::from_str(&stdout).expect("the reader prints JSON")
}

/// An example project whose tables live at `uri`, with the `[storage]`
/// `options` given (an inline TOML table: non-secret settings only).
fn project_on(dir: &Path, uri: &str, options: &str) {
    ok(dir, &["init", "."]);
    let file = dir.join("aurum.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "\n[storage]\nuri = \"{uri}\"\noptions = {options}\n"
    ));
    std::fs::write(&file, text).unwrap();
}

/// S3 options: the endpoint is not a secret, it may sit in the project
/// file; the credentials only come from the environment.
fn s3_options(server: &S3Server) -> String {
    format!(
        "{{ endpoint = \"{}\", allow_http = \"true\", region = \"us-east-1\" }}",
        server.endpoint
    )
}

#[test]
fn the_demo_path_runs_on_s3() {
    let server = S3Server::start("lake");
    demo_path_on(
        &server.env(),
        "s3://lake/shop",
        &s3_options(&server),
        "s3://lake/shop",
    );
}

#[test]
fn the_demo_path_runs_on_azure_blob_storage() {
    let azurite = Azurite::start("lake");
    // Python's deltalake names the same container and prefix `abfs://`
    // (it reads `az://` URLs differently against the emulator).
    demo_path_on(&azurite.env(), "az://lake/shop", "{}", "abfs://lake/shop");
}

/// Pipeline, training, serving and the prediction log on the store at
/// `uri`, read back from it by Python's deltalake (at `python_uri`, the
/// same place) and `aurum table show`.
fn demo_path_on(env: &[(&str, &str)], uri: &str, options: &str, python_uri: &str) {
    let env = env.to_vec();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    project_on(dir, uri, options);
    ok(dir, &["generate", "--rows", "3000", "--seed", "5"]);
    ok_in_env(dir, &["pipeline"], &env);
    assert!(
        !dir.join("data/delta").exists(),
        "no table was written to local disk"
    );
    let again = ok_in_env(dir, &["pipeline"], &env);
    assert!(again.contains("nothing new"), "{again}");

    // Gold as Python's deltalake and `aurum table show` read it from S3.
    let gold_uri = format!("{uri}/delta/customer_features");
    let gold_uri = gold_uri.as_str();
    let python = python_reads(&env, &format!("{python_uri}/delta/customer_features"));
    let shown: Value = serde_json::from_str(&ok_in_env(
        dir,
        &["table", "show", gold_uri, "--json", "--limit", "0"],
        &env,
    ))
    .unwrap();
    assert_eq!(shown["version"], python["version"]);
    assert_eq!(
        shown["rows"].as_u64().unwrap() as usize,
        python["rows"].as_array().unwrap().len()
    );
    assert!(shown["rows"].as_u64().unwrap() > 0);

    ok_in_env(dir, &["train", "--promote-if-better"], &env);
    // The registry (model file, version documents, aliases with their
    // history, the drift reference profile) is in the store too.
    assert!(
        !dir.join("data/registry").exists(),
        "the registry was written to local disk"
    );
    ok_in_env(dir, &["registry", "alias", "fraud", "staging", "1"], &env);
    ok_in_env(dir, &["registry", "alias", "fraud", "staging", "1"], &env);
    let shown = ok_in_env(dir, &["registry", "show", "fraud"], &env);
    assert!(shown.starts_with("v1 "), "{shown}");
    assert!(shown.contains("staging"), "{shown}");
    let history = ok_in_env(dir, &["registry", "history", "fraud"], &env);
    let staging_moves = history.lines().filter(|l| l.contains("@staging")).count();
    assert_eq!(staging_moves, 2, "{history}");
    let serving = start_in_env(dir, &[], &env);
    let reply = call(
        "POST",
        &format!("{}/predict", serving.url),
        Some(&json!({"model": "fraud", "entities": {"customer_id": [17, 42]}})),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json();
    let predictions = answer["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2, "{answer}");
    assert_eq!(predictions[0]["version"], 1, "{answer}");

    // The prediction log lands in the same bucket.
    let log_uri = format!("{python_uri}/logs/predictions");
    let log_uri = log_uri.as_str();
    let logged = poll(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            // Until the writer's first commit there is no table to read.
            let output = Command::new(python::venv_python())
                .arg(python::workspace().join("tests/python/read_any_table.py"))
                .arg(log_uri)
                .envs(env.iter().copied())
                .output()
                .ok()?;
            let read: Value = serde_json::from_slice(&output.stdout).ok()?;
            (read["rows"].as_array()?.len() >= 2).then_some(read)
        },
        || "the prediction log never reached S3".to_string(),
    );
    assert!(logged["rows"].as_array().unwrap().len() >= 2);
}

#[test]
fn a_missing_bucket_is_named_and_nothing_is_written() {
    let server = S3Server::start("lake");
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    project_on(dir, "s3://no-such-bucket/shop", &s3_options(&server));
    ok(dir, &["generate", "--rows", "200", "--seed", "5"]);
    let output = run_in_env(dir, &["pipeline"], &server.env());
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("s3://no-such-bucket/shop/"), "{error}");
    assert!(error.contains("NoSuchBucket"), "{error}");
    assert!(
        !error.contains("testing-secret"),
        "a secret was shown: {error}"
    );
    assert!(!dir.join("data/delta").exists());
}

/// A wrong account key: the pipeline and the registry fail with the store's
/// refusal and the URI, never the key, and nothing is written anywhere.
#[test]
fn a_wrong_azure_key_is_refused_without_showing_it() {
    let azurite = Azurite::start("lake");
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    project_on(dir, "az://lake/shop", "{}");
    ok(dir, &["generate", "--rows", "200", "--seed", "5"]);
    // Valid base64, the emulator's account, not its key.
    let wrong_key = "bm90LXRoZS1lbXVsYXRvcnMta2V5LWF0LWFsbA==";
    let mut env = azurite.env();
    env.push(("AZURE_STORAGE_ACCOUNT_KEY", wrong_key));
    for (args, shown) in [
        (&["pipeline"][..], "az://lake/shop/"),
        (&["registry", "list"][..], "az://lake/shop/registry/"),
    ] {
        let output = run_in_env(dir, args, &env);
        assert!(!output.status.success(), "{args:?} succeeded");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains(shown), "{args:?}: {error}");
        assert!(
            error.contains("403") || error.to_lowercase().contains("authoriz"),
            "{args:?}: the store's refusal is not shown: {error}"
        );
        assert!(!error.contains(wrong_key), "the key was shown: {error}");
    }
    assert!(!dir.join("data/delta").exists());
    assert!(!dir.join("data/registry").exists());
    // With the right key, the same project runs.
    ok_in_env(dir, &["pipeline"], &azurite.env());
}

/// A run killed between two commits on S3 leaves every table at a committed
/// version; the next run resumes and ends where an uninterrupted run does,
/// with nothing lost or appended twice.
#[test]
fn a_run_killed_between_commits_on_s3_resumes_without_duplicates() {
    let server = S3Server::start("lake");
    let env = server.env();
    let rows_of = |dir: &Path, uri: &str, table: &str| -> u64 {
        let shown: Value = serde_json::from_str(&ok_in_env(
            dir,
            &[
                "table",
                "show",
                &format!("{uri}/delta/{table}"),
                "--json",
                "--limit",
                "0",
            ],
            &env,
        ))
        .unwrap();
        shown["rows"].as_u64().unwrap()
    };
    let tables = [
        "bronze_transactions",
        "silver_transactions",
        "quarantine",
        "customer_features",
    ];

    let clean = tempfile::tempdir().unwrap();
    project_on(clean.path(), "s3://lake/clean", &s3_options(&server));
    ok(clean.path(), &["generate", "--rows", "8000", "--seed", "5"]);
    ok_in_env(clean.path(), &["pipeline"], &env);
    let expected: Vec<u64> = tables
        .iter()
        .map(|t| rows_of(clean.path(), "s3://lake/clean", t))
        .collect();
    assert!(expected[2] > 0, "the generator planted no broken rows");

    for (n, point) in [
        "after-commit:bronze_transactions",
        "after-commit:silver_transactions",
    ]
    .into_iter()
    .enumerate()
    {
        let uri = format!("s3://lake/crashed-{n}");
        let crashed = tempfile::tempdir().unwrap();
        let dir = crashed.path();
        project_on(dir, &uri, &s3_options(&server));
        ok(dir, &["generate", "--rows", "8000", "--seed", "5"]);
        crashes_at_in_env(dir, point, &["pipeline"], &env);
        ok_in_env(dir, &["pipeline"], &env);
        let got: Vec<u64> = tables.iter().map(|t| rows_of(dir, &uri, t)).collect();
        assert_eq!(got, expected, "{point}: rows of {tables:?}");
    }
}
