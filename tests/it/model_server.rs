//! The model server through the real binary: an A/B split between aliases
//! sticky by entity, a header override, a shadow that never answers, the
//! prediction log read back by Python's deltalake after a graceful
//! shutdown on SIGTERM.

use std::collections::BTreeMap;
use std::process::Command;

use registry::{NewVersion, Registry};
use serde_json::{Value, json};

use crate::cli::example_project;
use crate::model_registry::model;
use crate::server::{call, start};

const FEATURES: [&str; 3] = [
    "customer_features:amount_sum_7d",
    "customer_features:amount_count_1d",
    "customer_features:amount_mean_7d",
];

/// POSTs `body` to `/predict`, on `arm` if one is given; returns status,
/// JSON and the `x-request-id` answered.
fn predict(url: &str, body: &Value, arm: Option<&str>) -> (u16, Value, String) {
    let reply = call("POST", &format!("{url}/predict"), Some(body), arm);
    (reply.status, reply.json(), reply.request_id)
}

fn metrics(url: &str) -> String {
    call("GET", &format!("{url}/metrics"), None, None).text
}

#[test]
fn ab_split_shadow_and_prediction_log_through_the_real_server() {
    let project = example_project("2000", "5");
    let dir = project.path();
    let file = dir.join("aurum.toml");
    // The example project serves `fraud` 90/10; make it 50/50 with a shadow.
    let text = std::fs::read_to_string(&file).unwrap();
    let split = "split = { champion = 90, challenger = 10 }";
    assert!(text.contains(split));
    let text = text.replace(
        split,
        "split = { champion = 50, challenger = 50 }\nshadow = \"candidate\"",
    );
    std::fs::write(&file, text).unwrap();
    let registry = Registry::open(dir.join("data/registry")).unwrap();
    for (seed, alias) in [
        (0.001, "champion"),
        (0.002, "challenger"),
        (0.003, "candidate"),
    ] {
        let new = NewVersion {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            ..NewVersion::default()
        };
        let version = registry.register("fraud", &model(3, seed), new).unwrap();
        registry
            .set_alias("fraud", alias, version.version, "test")
            .unwrap();
    }

    let mut server = start(dir);
    let url = server.url.clone();
    let want_version = BTreeMap::from([("champion", 1), ("challenger", 2)]);
    let mut arm_of = BTreeMap::new();
    let mut live_ids = Vec::new();
    for customer in 1..=40 {
        for _ in 0..2 {
            let body = json!({"model": "fraud", "entities": {"customer_id": [customer]}});
            let (status, answer, id) = predict(&url, &body, None);
            assert_eq!(status, 200, "{answer}");
            let row = &answer["predictions"][0];
            let arm = row["arm"].as_str().unwrap().to_string();
            assert_eq!(row["version"], want_version[arm.as_str()], "{answer}");
            // The same entity always gets the same arm.
            assert_eq!(arm_of.entry(customer).or_insert(arm.clone()), &arm);
            live_ids.push(id);
        }
    }
    let on_challenger = arm_of.values().filter(|a| *a == "challenger").count();
    assert!(
        (8..=32).contains(&on_challenger),
        "{on_challenger} of 40 customers on the challenger"
    );

    // The header overrides the split; an arm that is not served is named.
    let champion_customer = *arm_of.iter().find(|(_, a)| *a == "champion").unwrap().0;
    let body = json!({"model": "fraud", "entities": {"customer_id": [champion_customer]}});
    let (status, answer, id) = predict(&url, &body, Some("challenger"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["arm"], "challenger");
    assert_eq!(answer["predictions"][0]["version"], 2);
    live_ids.push(id);
    let (status, answer, _) = predict(&url, &body, Some("blue"));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_arm");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"blue\"")
    );

    // Per-arm metrics, and the versions each arm serves.
    let text = metrics(&url);
    for needle in [
        "aurum_predict_request_seconds_count{model=\"fraud\",version=\"1\",arm=\"champion\",shadow=\"false\"}",
        "aurum_predict_inference_seconds_count{model=\"fraud\",version=\"2\",arm=\"challenger\",shadow=\"false\"}",
        "aurum_model_served_version{model=\"fraud\",arm=\"candidate\"} 3",
        "aurum_http_errors_total{route=\"/predict\",status=\"400\",code=\"unknown_arm\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    // SIGTERM: the server drains, waits for shadow runs and flushes the log.
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "aurum serve exited with {exit}");

    let log = crate::python::reader(
        "read_prediction_log.py",
        &[dir.join("data/logs/predictions").as_os_str()],
    );
    live_ids.sort();
    assert_eq!(log["live_request_ids"], json!(live_ids));
    // Every live request was shadowed by the candidate, off the response
    // path, under the same request id.
    assert_eq!(log["shadow_request_ids"], json!(live_ids));
    let groups: Vec<(String, bool, i64, i64)> = log["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["arm"].as_str().unwrap().to_string(),
                g["shadow"].as_bool().unwrap(),
                g["version"].as_i64().unwrap(),
                g["len"].as_i64().unwrap(),
            )
        })
        .collect();
    let challenger_rows = 2 * on_challenger as i64 + 1;
    assert_eq!(
        groups,
        vec![
            ("candidate".to_string(), true, 3, 81),
            ("challenger".to_string(), false, 2, challenger_rows),
            ("champion".to_string(), false, 1, 81 - challenger_rows),
        ]
    );
    assert_eq!(log["feature_names"], json!(FEATURES));
    assert_eq!(log["feature_widths"], json!([3]));
    assert_eq!(log["predictions_in_range"], true);
    assert!(
        log["entities"][0]
            .as_str()
            .unwrap()
            .starts_with("customer_id=")
    );
}
