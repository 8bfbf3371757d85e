//! The registry's domain API on real ONNX models (built with the onnx
//! crate's graph builder, loaded by ONNX Runtime): aliases and their
//! history, rollback, deletion rules, renaming, concurrent registrations.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use onnx::{Dim, GraphBuilder};
use registry::{Error, NewVersion, Registry};

use crate::cli::{crashes_at, fails, ok};
use crate::python;
use crate::server::{block_on, poll};

/// A valid model: sigmoid(x · w) over `width` float features.
pub fn model(width: usize, seed: f32) -> Vec<u8> {
    let mut g = GraphBuilder::new("linear");
    let weights: Vec<f32> = (0..width).map(|i| seed + i as f32).collect();
    g.input("x", &[Dim::Dynamic("batch"), Dim::Fixed(width as i64)])
        .output("y", &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("w", &[width as i64, 1], &weights)
        .node("MatMul", &["x", "w"], &["z"])
        .node("Sigmoid", &["z"], &["y"]);
    g.finish("test model")
}

fn features(width: usize) -> NewVersion {
    NewVersion {
        features: (0..width).map(|i| format!("v:f{i}")).collect(),
        ..NewVersion::default()
    }
}

/// Registers `count` models of `width` features as versions of `name`,
/// each with other weights (seeds 1, 2, …).
fn register_versions(registry: &Registry, name: &str, count: u32, width: usize) {
    for seed in 1..=count {
        registry
            .register(name, &model(width, seed as f32), features(width))
            .unwrap();
    }
}

/// Serves `registry` in process on a loopback port: the runtime (the server
/// lives as long as it does), the state and the server's base URL.
pub fn serve_in_process(
    registry: Registry,
) -> (
    tokio::runtime::Runtime,
    std::sync::Arc<serving::AppState>,
    String,
) {
    serve_configured(registry, |state| state)
}

/// Like [`serve_in_process`], with the state configured by `configure`
/// (called inside the server's runtime, so it may start tasks).
pub fn serve_configured(
    registry: Registry,
    configure: impl FnOnce(serving::AppState) -> serving::AppState,
) -> (
    tokio::runtime::Runtime,
    std::sync::Arc<serving::AppState>,
    String,
) {
    let online = std::sync::Arc::new(feature_store::OnlineStore::new(1 << 20));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = {
        let _inside = runtime.enter();
        std::sync::Arc::new(configure(serving::AppState::new(online, registry)))
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(serving::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (runtime, state, url)
}

#[test]
fn aliases_move_with_history_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    register_versions(&registry, "fraud", 3, 2);
    for version in 1..=3 {
        registry
            .set_alias("fraud", "champion", version, "ana")
            .unwrap();
    }
    registry.set_alias("fraud", "challenger", 1, "bo").unwrap();
    assert_eq!(registry.by_alias("fraud", "champion").unwrap().version, 3);
    let history = registry.alias_history("fraud").unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(
        (history[2].from, history[2].to, history[2].who.as_str()),
        (Some(2), Some(3), "ana")
    );

    // Each rollback undoes one move, then there is nothing left to undo.
    assert_eq!(
        registry.rollback("fraud", "champion", "cy").unwrap().to,
        Some(2)
    );
    assert_eq!(
        registry.rollback("fraud", "champion", "cy").unwrap().to,
        Some(1)
    );
    let err = registry.rollback("fraud", "champion", "cy").unwrap_err();
    assert!(matches!(err, Error::NothingToRollBack { .. }), "{err}");
    let last = registry.alias_history("fraud").unwrap().pop().unwrap();
    assert!(last.rollback && last.who == "cy" && last.from == Some(2));

    // A version an alias points at cannot be deleted; numbers are not reused.
    let err = registry.delete_version("fraud", 1).unwrap_err();
    assert!(err.to_string().contains("champion"), "{err}");
    assert!(err.to_string().contains("challenger"), "{err}");
    registry.delete_version("fraud", 2).unwrap();
    assert!(matches!(
        registry.version("fraud", 2),
        Err(Error::VersionNotFound { .. })
    ));
    registry.delete_version("fraud", 3).unwrap();
    let next = registry
        .register("fraud", &model(2, 9.0), features(2))
        .unwrap();
    assert_eq!(next.version, 4);

    // Tags and descriptions change; a rename keeps versions and aliases.
    registry
        .set_version_tag("fraud", 4, "stage", "shadow")
        .unwrap();
    registry
        .set_version_description("fraud", 4, "retrained")
        .unwrap();
    registry.set_model_tag("fraud", "team", "risk").unwrap();
    registry.rename_model("fraud", "fraud_v2").unwrap();
    assert!(matches!(
        registry.model("fraud"),
        Err(Error::ModelNotFound(_))
    ));
    let v4 = registry.version("fraud_v2", 4).unwrap();
    assert_eq!(
        (
            v4.name.as_str(),
            v4.tags["stage"].as_str(),
            v4.description.as_str()
        ),
        ("fraud_v2", "shadow", "retrained")
    );
    assert_eq!(
        registry.by_alias("fraud_v2", "champion").unwrap().version,
        1
    );
    assert_eq!(registry.model("fraud_v2").unwrap().tags["team"], "risk");

    // A model with aliases is not deleted; without, it is.
    let err = registry.delete_model("fraud_v2").unwrap_err();
    assert!(matches!(err, Error::ModelAliased { .. }), "{err}");
    registry
        .delete_alias("fraud_v2", "champion", "ana")
        .unwrap();
    registry
        .delete_alias("fraud_v2", "challenger", "ana")
        .unwrap();
    registry.delete_model("fraud_v2").unwrap();
    assert!(registry.models().unwrap().is_empty());
}

#[test]
fn bad_names_and_aliases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry.register("m", &model(1, 1.0), features(1)).unwrap();
    for bad in ["", "../x", "a/b", "a\u{7}b", ".hidden", &"n".repeat(200)] {
        let err = registry
            .create_model(bad, "", Default::default())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName(_)), "{bad:?}: {err}");
    }
    for bad in ["", "latest", "v3", "a b", "x/y", "é1"] {
        let err = registry.set_alias("m", bad, 1, "t").unwrap_err();
        assert!(matches!(err, Error::InvalidParameter(_)), "{bad:?}: {err}");
    }
    assert!(matches!(
        registry.set_alias("m", "champion", 7, "t"),
        Err(Error::VersionNotFound { .. })
    ));
    assert!(matches!(
        registry.by_alias("m", "nobody"),
        Err(Error::AliasNotFound { .. })
    ));
    assert!(matches!(
        registry.create_model("m", "", Default::default()),
        Err(Error::ModelExists(_))
    ));
}

#[test]
fn concurrent_registrations_get_distinct_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let registry = registry.clone();
            std::thread::spawn(move || {
                registry
                    .register("m", &model(2, i as f32), features(2))
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut numbers: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}

/// The official `mlflow` Python client drives aurum's MLflow-compatible API
/// (served in process on a loopback port): models, versions from an ONNX
/// file, aliases, tags, search with filters and pages, errors, download.
#[test]
fn the_official_mlflow_client_works_against_aurum() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    let onnx = dir.path().join("model.onnx");
    std::fs::write(&onnx, model(2, 0.5)).unwrap();
    let root = dir.path().to_path_buf();
    let (runtime, _state, url) = serve_configured(registry, |state| {
        state.with_limits(serving::Limits {
            import_root: Some(root),
            ..serving::Limits::default()
        })
    });

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    python::run(
        "the MLflow client",
        "tests/python/mlflow_registry.py",
        &[url.as_ref(), onnx.as_os_str(), work.as_os_str()],
    );

    // What a web page could forge is refused: a change not sent as JSON,
    // and any request from another origin.
    let delete = format!("{url}/api/2.0/mlflow/registered-models/delete");
    let status = |request: reqwest::RequestBuilder| {
        runtime.block_on(async { request.send().await.unwrap().status().as_u16() })
    };
    let client = reqwest::Client::new();
    assert_eq!(
        status(
            client
                .post(&delete)
                .header("content-type", "text/plain")
                .body(r#"{"name": "dir_model"}"#)
        ),
        415
    );
    assert_eq!(
        status(
            client
                .post(&delete)
                .header("origin", "http://evil.example")
                .json(&serde_json::json!({"name": "dir_model"}))
        ),
        403
    );
    assert_eq!(
        status(
            client
                .post(&delete)
                .json(&serde_json::json!({"name": "dir_model"}))
        ),
        200
    );
}

/// Rolling back past a deleted version lands on the one before it, and the
/// next rollback goes further back rather than nowhere.
#[test]
fn rollback_skips_deleted_versions_and_keeps_walking_back() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    register_versions(&registry, "m", 4, 1);
    for version in [1, 2, 3, 4] {
        registry.set_alias("m", "champion", version, "t").unwrap();
    }
    registry.delete_version("m", 3).unwrap();
    assert_eq!(registry.rollback("m", "champion", "t").unwrap().to, Some(2));
    assert_eq!(registry.rollback("m", "champion", "t").unwrap().to, Some(1));
    assert!(registry.rollback("m", "champion", "t").is_err());
    // A move after rollbacks starts a new line of history.
    registry.set_alias("m", "champion", 4, "t").unwrap();
    assert_eq!(registry.rollback("m", "champion", "t").unwrap().to, Some(1));
}

/// A real `mlflow server` (from the test virtualenv) on a loopback port
/// with a temporary backend store, stopped on drop.
struct MlflowServer {
    child: std::process::Child,
    url: String,
}

impl Drop for MlflowServer {
    /// `mlflow server` starts uvicorn and a job runner with its own workers
    /// as children that outlive it: the whole process group goes.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mlflow(dir: &std::path::Path) -> MlflowServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let python = python::venv_python();
    let mlflow = python.with_file_name("mlflow");
    let log = std::fs::File::create(dir.join("mlflow.log")).unwrap();
    let child = std::process::Command::new(&mlflow)
        .args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
            "--backend-store-uri",
            &format!("sqlite:///{}", dir.join("mlflow.db").display()),
            "--artifacts-destination",
            &dir.join("artifacts").display().to_string(),
        ])
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", python.parent().unwrap().display()),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("starting mlflow server");
    let server = MlflowServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // MLflow prints no machine-readable ready line: poll its health
    // endpoint, with a deadline.
    let health = format!("{}/health", server.url);
    poll(
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            block_on(async {
                reqwest::get(health.as_str())
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .then_some(())
        },
        || {
            format!(
                "mlflow server did not start: {}",
                std::fs::read_to_string(dir.join("mlflow.log")).unwrap_or_default()
            )
        },
    );
    server
}

/// The arguments of `aurum registry push|pull model` against the MLflow
/// server at `url`.
fn mlflow_sync<'a>(verb: &'a str, model: &'a str, url: &'a str) -> [&'a str; 5] {
    ["registry", verb, model, "--mlflow-uri", url]
}

/// `aurum registry push` registers versions, metadata and aliases in a real
/// MLflow server; `aurum registry pull` imports them into another project.
#[test]
fn push_to_and_pull_from_a_real_mlflow_server() {
    let dir = tempfile::tempdir().unwrap();
    let mlflow = start_mlflow(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for project in [&a, &b] {
        ok(dir.path(), &["init", project.to_str().unwrap()]);
    }
    for seed in [1.0, 2.0] {
        let file = dir.path().join(format!("m{seed}.onnx"));
        std::fs::write(&file, model(2, seed)).unwrap();
        ok(
            &a,
            &[
                "registry",
                "register",
                "fraud",
                file.to_str().unwrap(),
                "--features",
                "v:f0,v:f1",
            ],
        );
    }
    ok(&a, &["registry", "alias", "fraud", "champion", "2"]);
    let pushed = ok(&a, &mlflow_sync("push", "fraud", &mlflow.url));
    assert!(
        pushed.contains("2 pushed, 0 already there; aliases set: champion=v2"),
        "{pushed}"
    );
    let again = ok(&a, &mlflow_sync("push", "fraud", &mlflow.url));
    assert!(again.contains("0 pushed, 2 already there"), "{again}");

    let pulled = ok(&b, &mlflow_sync("pull", "fraud", &mlflow.url));
    assert!(
        pulled.contains("2 pulled, 0 already here; aliases set: champion=v2"),
        "{pulled}"
    );
    let here = Registry::open(a.join("data/registry")).unwrap();
    let there = Registry::open(b.join("data/registry")).unwrap();
    for (x, y) in here
        .versions("fraud")
        .unwrap()
        .iter()
        .zip(there.versions("fraud").unwrap())
    {
        assert_eq!(
            (x.version, &x.sha256, &x.features),
            (y.version, &y.sha256, &y.features)
        );
    }
    assert_eq!(there.by_alias("fraud", "champion").unwrap().version, 2);
    let again = ok(&b, &mlflow_sync("pull", "fraud", &mlflow.url));
    assert!(again.contains("0 pulled, 2 already here"), "{again}");

    // An unknown model is named in MLflow's words.
    let stderr = fails(&b, &mlflow_sync("pull", "nobody", &mlflow.url));
    assert!(stderr.contains("RESOURCE_DOES_NOT_EXIST"), "{stderr}");
}

/// A registration killed after the file and a temporary metadata document
/// were written, before the version was linked into place, leaves no
/// version; the next registration takes number 1.
#[test]
fn a_registration_killed_mid_write_leaves_no_version() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    let file = dir.path().join("m.onnx");
    std::fs::write(&file, model(2, 1.0)).unwrap();
    let args = [
        "registry",
        "register",
        "fraud",
        file.to_str().unwrap(),
        "--features",
        "v:f0,v:f1",
    ];
    crashes_at(dir.path(), "registry-before-link", &args);
    let registry = Registry::open(dir.path().join("data/registry")).unwrap();
    assert!(registry.versions("fraud").unwrap().is_empty());
    let out = ok(dir.path(), &args);
    assert!(out.contains("registered fraud v1"), "{out}");
}

/// The numbers of a JSON array of rows (or of numbers), flattened.
fn numbers(value: &serde_json::Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .flat_map(|r| match r.as_array() {
            Some(row) => row.iter().map(|v| v.as_f64().unwrap()).collect(),
            None => vec![r.as_f64().unwrap()],
        })
        .collect()
}

/// `got` equals scikit-learn's `want` to within float32 rounding.
fn assert_probabilities(who: &str, got: &serde_json::Value, want: &[f64]) {
    let got = numbers(got);
    assert_eq!(got.len(), want.len(), "{who}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{who} {g} vs scikit-learn {w}");
    }
}

/// A scikit-learn gradient-boosted classifier exported by skl2onnx (zipmap
/// off: an INT64 label and FP32 probabilities) is registered and served
/// through the Open Inference Protocol, and answers what scikit-learn does.
#[test]
fn an_skl2onnx_model_answers_like_scikit_learn_over_the_open_inference_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("gbt.onnx");
    let stdout = python::run(
        "skl2onnx",
        "tests/python/skl2onnx_model.py",
        &[onnx.as_os_str()],
    );
    let expected: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    registry
        .register("gbt", &std::fs::read(&onnx).unwrap(), NewVersion::default())
        .unwrap();
    let (runtime, state, url) = serve_in_process(registry);
    // Served under its name too (its newest version), for clients that
    // name no version.
    state.sync_models();

    let get = |path: &str| -> serde_json::Value {
        runtime.block_on(async {
            reqwest::get(format!("{url}{path}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let meta = get("/v2/models/gbt/versions/1");
    let input = meta["inputs"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    let rows = expected["rows"].as_array().unwrap();
    let body = serde_json::json!({
        "id": "sk",
        "inputs": [{"name": input, "shape": [rows.len(), 8], "datatype": "FP32", "data": rows}],
    });
    let answer: serde_json::Value = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/v2/models/gbt/versions/1/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    });
    let output = |datatype: &str| {
        answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["datatype"] == datatype)
            .unwrap_or_else(|| panic!("no {datatype} output in {answer}"))
            .clone()
    };
    let labels = output("INT64");
    assert_eq!(labels["data"], expected["labels"], "{answer}");
    let probabilities = output("FP32");
    assert_eq!(probabilities["shape"], serde_json::json!([rows.len(), 2]));
    let want = numbers(&expected["probabilities"]);
    assert_probabilities("ONNX Runtime", &probabilities["data"], &want);
    assert_eq!(answer["id"], "sk");

    // NVIDIA's tritonclient, with its default binary tensors both ways.
    let triton: serde_json::Value = serde_json::from_str(&python::run(
        "tritonclient",
        "tests/python/triton_client.py",
        &[
            std::ffi::OsStr::new(url.trim_start_matches("http://")),
            std::ffi::OsStr::new("gbt"),
            std::ffi::OsStr::new("1"),
            std::ffi::OsStr::new(&expected["rows"].to_string()),
        ],
    ))
    .unwrap();
    assert_eq!(triton["live"], true);
    assert_eq!(triton["ready"], true);
    assert_eq!(triton["INT64"], expected["labels"], "{triton}");
    assert_eq!(triton["INT64_binary"], true, "{triton}");
    assert_probabilities("tritonclient", &triton["FP32"], &want);

    // KServe's REST client, with JSON and with binary tensors.
    let kserve: serde_json::Value = serde_json::from_str(&python::run(
        "kserve's InferenceRESTClient",
        "tests/python/kserve_client.py",
        &[
            std::ffi::OsStr::new(&url),
            std::ffi::OsStr::new("gbt"),
            std::ffi::OsStr::new(&input),
            std::ffi::OsStr::new(&expected["rows"].to_string()),
        ],
    ))
    .unwrap();
    assert_eq!(kserve["live"], true, "{kserve}");
    assert_eq!(kserve["ready"], true, "{kserve}");
    for mode in ["json", "binary"] {
        assert_eq!(
            kserve[mode]["INT64"], expected["labels"],
            "{mode}: {kserve}"
        );
        assert_probabilities(&format!("kserve ({mode})"), &kserve[mode]["FP32"], &want);
    }
}

/// While requests keep coming, moving `champion` swaps the served version
/// without one failed request; a version that cannot load leaves the old
/// one serving and is counted.
#[test]
fn moving_the_champion_swaps_versions_under_load_without_a_failed_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("registry")).unwrap();
    registry.register("m", &model(2, 1.0), features(2)).unwrap();
    registry.set_alias("m", "champion", 1, "t").unwrap();
    let options = serving::ReloadOptions {
        interval: std::time::Duration::from_millis(50),
        ..serving::ReloadOptions::default()
    };
    let (runtime, state, base) =
        serve_configured(registry.clone(), |state| state.with_reload(options));
    assert_eq!(
        state.sync_models(),
        [("m".to_string(), "champion".to_string(), 1)]
    );
    let url = format!("{base}/v2/models/m/infer");
    let _watcher = runtime.enter();
    serving::tasks::spawn_model_watcher(state.clone());

    // A client that never stops asking, recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(u16, String)>::new()));
    let client = {
        let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let http = reqwest::Client::new();
            let body = serde_json::json!({"inputs": [
                {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.25]}
            ]});
            while !stop.load(Ordering::Relaxed) {
                let (status, version) = runtime.block_on(async {
                    let response = http.post(&url).json(&body).send().await.unwrap();
                    let status = response.status().as_u16();
                    let answer: serde_json::Value = response.json().await.unwrap_or_default();
                    (
                        status,
                        answer["model_version"].as_str().unwrap_or("").to_string(),
                    )
                });
                seen.lock().unwrap().push((status, version));
            }
        })
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        poll(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || done().then_some(()),
            || format!("timed out waiting for {what}"),
        )
    };
    let answered = |version: &str| seen.lock().unwrap().iter().any(|(_, v)| v == version);
    wait_for("answers from v1", &|| answered("1"));
    registry.register("m", &model(2, 2.0), features(2)).unwrap();
    registry.set_alias("m", "champion", 2, "t").unwrap();
    wait_for("answers from v2", &|| answered("2"));

    // v3's stored file goes missing: it cannot load, v2 keeps serving.
    let v3 = registry.register("m", &model(2, 3.0), features(2)).unwrap();
    std::fs::remove_file(
        dir.path()
            .join("registry/blobs")
            .join(format!("{}.onnx", v3.sha256)),
    )
    .unwrap();
    registry.set_alias("m", "champion", 3, "t").unwrap();
    wait_for("the failed load", &|| {
        state.reload.failures.load(Ordering::Relaxed) == 1
    });
    let after = seen.lock().unwrap().len();
    wait_for("more answers", &|| seen.lock().unwrap().len() > after + 20);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let seen = seen.lock().unwrap();
    let failed = seen.iter().filter(|(status, _)| *status != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", seen.len());
    assert!(
        seen.iter().all(|(_, v)| v == "1" || v == "2"),
        "a version other than 1 and 2 answered"
    );
    assert_eq!(seen.last().unwrap().1, "2");
    assert_eq!(state.reload.swaps.load(Ordering::Relaxed), 2);
}

/// tritonclient's gRPC client against the real `aurum serve`: health,
/// metadata and inference of an skl2onnx model equal scikit-learn's answer;
/// an unknown model is NOT_FOUND, a wrong shape INVALID_ARGUMENT and a
/// message over the limit RESOURCE_EXHAUSTED.
#[test]
fn tritonclient_grpc_works_against_aurum_serve() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("gbt.onnx");
    let expected: serde_json::Value = serde_json::from_str(&python::run(
        "skl2onnx",
        "tests/python/skl2onnx_model.py",
        &[onnx.as_os_str()],
    ))
    .unwrap();
    ok(dir.path(), &["init", "."]);
    let out = ok(
        dir.path(),
        &["registry", "register", "gbt", onnx.to_str().unwrap()],
    );
    assert!(out.contains("registered gbt v1"), "{out}");
    let server = crate::server::start(dir.path());
    let triton: serde_json::Value = serde_json::from_str(&python::run(
        "tritonclient.grpc",
        "tests/python/triton_grpc.py",
        &[
            std::ffi::OsStr::new(&server.grpc),
            std::ffi::OsStr::new("gbt"),
            std::ffi::OsStr::new(&expected["rows"].to_string()),
            std::ffi::OsStr::new(&serving::protocols::oip_grpc::MAX_MESSAGE_BYTES.to_string()),
        ],
    ))
    .unwrap();
    assert_eq!(
        (&triton["live"], &triton["ready"], &triton["model_ready"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(true)
        ),
        "{triton}"
    );
    assert_eq!(triton["server"], "aurum");
    assert_eq!(triton["inputs"][0]["datatype"], "FP32");
    assert_eq!(triton["id"], "g1");
    assert_eq!(triton["INT64"], expected["labels"], "{triton}");
    assert_probabilities(
        "gRPC",
        &triton["FP32"],
        &numbers(&expected["probabilities"]),
    );
    assert_eq!(triton["unknown_model"], "StatusCode.NOT_FOUND", "{triton}");
    assert_eq!(
        triton["wrong_shape"], "StatusCode.INVALID_ARGUMENT",
        "{triton}"
    );
    assert_eq!(
        triton["too_big"], "StatusCode.RESOURCE_EXHAUSTED",
        "{triton}"
    );
}
