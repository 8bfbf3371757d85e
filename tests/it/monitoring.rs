//! Drift, feedback and A/B analysis through the real binary: the reference
//! profile `aurum train` records, `aurum drift` on a Delta table and on two
//! Parquet files (JSON and HTML), the server's live window, `/drift/{model}`
//! (JSON and HTML), `/metrics` gauges, `POST /feedback` by request id and by
//! entity (with its defined refusals), live quality per arm, and `aurum ab
//! report --apply` moving the alias through the registry.

use std::path::Path;

use polars::prelude::*;
use registry::Registry;
use serde_json::{Value, json};

use crate::cli::{example_project, fails, json as aurum_json, ok};
use crate::server::{call, eventually, start_with};

/// One HTTP call from the synchronous test: status, body text and request
/// id.
fn http(method: &str, url: &str, body: Option<&Value>, arm: Option<&str>) -> (u16, String, String) {
    let reply = call(method, url, body, arm);
    (reply.status, reply.text, reply.request_id)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write_parquet(path: &Path, x: Vec<f64>, city: Vec<&str>) {
    let mut df = df!("x" => x, "city" => city).unwrap();
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
}

/// `aurum drift` of `current` against `a.parquet`, with `extra` flags.
fn drift_of_a<'a>(current: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["drift", "--reference", "a.parquet", "--current", current];
    args.extend(extra);
    args
}

/// `GET url` until `done` holds for its JSON (the monitor sees rows once
/// the prediction log's writer hands them over).
fn wait_for(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(url, || {
        let (status, text, _) = http("GET", url, None, None);
        assert_eq!(status, 200, "{text}");
        Some(json_of(&text)).filter(|body| done(body))
    })
}

#[test]
fn drift_feedback_and_ab_analysis_through_the_binary() {
    let project = example_project("4000", "5");
    let dir = project.path();
    let first = aurum_json(dir, &["train", "--promote-if-better", "--json"]);
    assert_eq!(first["version"], 1, "{first}");
    let second = aurum_json(dir, &["train", "--json"]);
    assert_eq!(second["version"], 2, "{second}");

    // The reference profile recorded at registration.
    let registry = Registry::open(dir.join("data/registry")).unwrap();
    let bytes = registry
        .attachment("fraud", 1, drift::profile::REFERENCE_PROFILE)
        .unwrap()
        .expect("aurum train records a reference profile");
    let profile: drift::Profile = serde_json::from_slice(&bytes).unwrap();
    let v1 = registry.version("fraud", 1).unwrap();
    assert_eq!(
        profile
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
        v1.features
    );
    assert!(profile.prediction.is_some());

    // Batch drift of the gold table against v1's reference.
    let report = aurum_json(
        dir,
        &[
            "drift",
            "--model",
            "fraud",
            "--current",
            "data/delta/customer_features",
            "--json",
        ],
    );
    assert!(report["tested_columns"].as_u64().unwrap() > 0, "{report}");
    for c in report["columns"].as_array().unwrap() {
        if c["status"] == "tested" {
            assert!(
                c["statistic"].is_number() && c["threshold"].is_number(),
                "{c}"
            );
            assert!(c["drifted"].is_boolean());
        }
    }

    // Any two datasets: a planted shift in x, none in city.
    let a = dir.join("a.parquet");
    let b = dir.join("b.parquet");
    let cities = |n: usize| {
        (0..n)
            .map(|i| ["lisbon", "oslo", "rome"][i % 3])
            .collect::<Vec<_>>()
    };
    write_parquet(
        &a,
        (0..3000).map(|i| f64::from(i % 100)).collect(),
        cities(3000),
    );
    write_parquet(
        &b,
        (0..2000).map(|i| f64::from(i % 100) + 30.0).collect(),
        cities(2000),
    );
    let report = aurum_json(dir, &drift_of_a("b.parquet", &["--json"]));
    let column = |name: &str| {
        report["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["column"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(column("x")["method"], "wasserstein");
    assert_eq!(column("x")["drifted"], true, "{report}");
    assert_eq!(column("city")["method"], "jensen_shannon");
    assert_eq!(column("city")["drifted"], false, "{report}");
    ok(dir, &drift_of_a("b.parquet", &["--out", "report.html"]));
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        page.contains("<svg") && page.contains("dataset drift detected"),
        "{page}"
    );
    let error = fails(dir, &drift_of_a("missing.parquet", &[]));
    assert!(error.contains("missing.parquet"), "{error}");
    let error = fails(dir, &drift_of_a("b.parquet", &["--test", "x=magic"]));
    assert!(error.contains("unknown drift test \"magic\""), "{error}");

    // Live: the server watches what it serves.
    let server = start_with(
        dir,
        &[
            "--drift-interval-s",
            "1",
            "--drift-min-rows",
            "20",
            "--prediction-log-flush-ms",
            "100",
        ],
    );
    let url = server.url.clone();
    let mut served = Vec::new();
    for customer in 1..=60 {
        for arm in ["champion", "challenger"] {
            let body = json!({"model": "fraud", "entities": {"customer_id": [customer]}});
            let (status, text, id) =
                http("POST", &format!("{url}/predict"), Some(&body), Some(arm));
            assert_eq!(status, 200, "{text}");
            let answer = json_of(&text);
            let prediction = answer["predictions"][0]["prediction"].as_f64().unwrap();
            served.push((id, arm, prediction));
        }
    }
    let live = wait_for(&format!("{url}/drift/fraud"), |b| {
        b["window_rows"].as_u64() >= Some(60)
    });
    assert_eq!(live["version"], 1);
    assert!(
        live["report"]["tested_columns"].as_u64().unwrap() > 0,
        "{live}"
    );
    assert!(live["report"]["prediction"]["method"].is_string(), "{live}");
    let (status, page, _) = http("GET", &format!("{url}/drift/fraud?format=html"), None, None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<svg") && page.contains("Drift — fraud"),
        "{page}"
    );
    std::fs::write(dir.join("live_report.html"), &page).unwrap();
    let (status, text, _) = http("GET", &format!("{url}/drift/nope"), None, None);
    assert_eq!(
        (status, json_of(&text)["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );
    let (status, _, _) = http("GET", &format!("{url}/drift/fraud?format=pdf"), None, None);
    assert_eq!(status, 400);
    // The periodic evaluation's gauges.
    eventually("the drift gauges", || {
        let (_, metrics, _) = http("GET", &format!("{url}/metrics"), None, None);
        (metrics.contains("aurum_drift_score{model=\"fraud\",version=\"1\"")
            && metrics.contains("aurum_drift_window_rows{model=\"fraud\",version=\"2\"}"))
        .then_some(())
    });

    // Feedback: the challenger's answers turn out right, the champion's
    // wrong.
    let outcomes: Vec<Value> = served
        .iter()
        .map(|(id, arm, p)| {
            let said = f64::from(u8::from(*p >= 0.5));
            let truth = if *arm == "challenger" {
                said
            } else {
                1.0 - said
            };
            json!({"request_id": id, "outcome": truth})
        })
        .collect();
    let feedback = format!("{url}/feedback");
    let (status, text, _) = http(
        "POST",
        &feedback,
        Some(&json!({"outcomes": outcomes})),
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["accepted"], 120, "{text}");
    // Defined refusals: labelled twice, unknown ids, malformed items.
    let (status, text, _) = http(
        "POST",
        &feedback,
        Some(&json!({"outcomes": outcomes[..1]})),
        None,
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("already has an outcome"), "{text}");
    let unknown = json!({"outcomes": [{"request_id": "no-such-request", "outcome": 1}]});
    let (status, text, _) = http("POST", &feedback, Some(&unknown), None);
    assert_eq!(
        (status, json_of(&text)["error"]["code"].clone()),
        (404, json!("unknown_predictions"))
    );
    let malformed = json!({"outcomes": [{"request_id": "x"}]});
    assert_eq!(http("POST", &feedback, Some(&malformed), None).0, 400);
    let both =
        json!({"outcomes": [{"request_id": "x", "entity": {"customer_id": 1}, "outcome": 1}]});
    assert_eq!(http("POST", &feedback, Some(&both), None).0, 400);
    // By entity: the latest prediction for the customer.
    let body = json!({"model": "fraud", "entities": {"customer_id": [61]}});
    let (status, _, id) = http(
        "POST",
        &format!("{url}/predict"),
        Some(&body),
        Some("challenger"),
    );
    assert_eq!(status, 200);
    let by_entity =
        json!({"model": "fraud", "outcomes": [{"entity": {"customer_id": 61}, "outcome": 0}]});
    let accepted = eventually(&format!("request {id} to be remembered"), || {
        let (status, text, _) = http("POST", &feedback, Some(&by_entity), None);
        (status == 200).then(|| json_of(&text))
    });
    assert_eq!(accepted["accepted"], 1);

    // Live quality per version and arm.
    let (_, text, _) = http("GET", &format!("{url}/drift/fraud"), None, None);
    let performance = json_of(&text)["performance"].clone();
    let row = |arm: &str| {
        performance
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["arm"] == arm)
            .unwrap_or_else(|| panic!("no {arm} row: {performance}"))
            .clone()
    };
    assert_eq!(row("champion")["feedback"], 60);
    assert_eq!(row("champion")["classification"]["accuracy"], 0.0);
    assert_eq!(row("challenger")["feedback"], 61);
    let (_, metrics, _) = http("GET", &format!("{url}/metrics"), None, None);
    assert!(
        metrics.contains("aurum_model_accuracy{model=\"fraud\",version=\"1\",arm=\"champion\"} 0"),
        "{metrics}"
    );
    drop(server);

    // A/B: the challenger is better past the horizon → promote, applied
    // through the registry.
    let report = aurum_json(dir, &["ab", "report", "fraud", "--mde", "0.2", "--json"]);
    let result = &report[0]["result"];
    assert_eq!(report[0]["arm"], "challenger", "{report}");
    assert_eq!(result["test"], "two_proportion_z");
    assert_eq!(result["decision"], "promote", "{report}");
    assert!(result["p_value"].as_f64().unwrap() < 0.05);
    ok(dir, &["ab", "report", "fraud", "--mde", "0.2", "--apply"]);
    assert_eq!(registry.by_alias("fraud", "champion").unwrap().version, 2);
    let history = registry.alias_history("fraud").unwrap();
    assert!(
        history
            .last()
            .unwrap()
            .who
            .contains("aurum ab report --apply"),
        "{history:?}"
    );
}
