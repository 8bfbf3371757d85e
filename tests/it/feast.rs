//! Feast's own SDK (from PyPI) against `aurum serve`, in the repository
//! `aurum feast-repo` writes: `feast apply` works, online features by list
//! and by feature service equal aurum's own answer, Feast's remote offline
//! store gets the same point-in-time training set aurum's Flight command
//! builds, and a Feast online write is read back.

use std::ffi::OsStr;

use serde_json::{Value, json};

use crate::cli::{example_project_event_windows, ok};
use crate::python;
use crate::server::{call, start};

#[test]
fn feasts_sdk_works_against_aurum_unchanged() {
    let project = example_project_event_windows("3000", "3");
    let dir = project.path();
    let server = start(dir);
    let flight = server.flight.trim_start_matches("grpc://").to_string();
    ok(
        dir,
        &[
            "feast-repo",
            "feast",
            "--url",
            &server.url,
            "--flight",
            &flight,
        ],
    );
    // A second run does not overwrite the repository unasked.
    let again = crate::cli::fails(
        dir,
        &[
            "feast-repo",
            "feast",
            "--url",
            &server.url,
            "--flight",
            &flight,
        ],
    );
    assert!(again.contains("--force"), "{again}");

    let customers = "1,2,999999";
    let stdout = python::run(
        "Feast's SDK",
        "tests/python/feast_sdk.py",
        &[
            dir.join("feast").as_os_str(),
            OsStr::new(&format!("grpc://{flight}")),
            OsStr::new(customers),
        ],
    );
    let feast: Value = serde_json::from_str(&stdout).expect("the script prints JSON");

    // Online: the values aurum answers itself.
    let features = [
        "customer_features:amount_sum_1d",
        "customer_features:amount_count_1h",
        "customer_features:amount_mean_7d",
    ];
    let reply = call(
        "POST",
        &format!("{}/get-online-features", server.url),
        Some(&json!({"entities": {"customer_id": [1, 2, 999999]}, "features": features})),
        None,
    );
    let own = reply.json();
    for (i, reference) in features.iter().enumerate() {
        let name = reference.split_once(':').unwrap().1;
        assert_eq!(
            feast["online"][name],
            own["results"][i + 1]["values"],
            "{name}: Feast's SDK and aurum differ"
        );
        assert_eq!(
            feast["service"][format!("customer_features__{name}")],
            own["results"][i + 1]["values"],
            "{name} through the feature service"
        );
    }
    assert!(feast["online"]["amount_sum_1d"][0].is_number(), "{feast}");

    // Offline: Feast's get_historical_features equals aurum's own training
    // set, row for row; 60 days back is outside the TTL (null), now is not.
    assert_eq!(feast["historical"], feast["aurum"]);
    let sums = feast["historical"]["amount_sum_1d"].as_array().unwrap();
    assert_eq!(sums.len(), 9);
    assert!(sums[0].is_number() && sums[2].is_null(), "{sums:?}");
    assert!(sums[6..].iter().all(Value::is_null), "{sums:?}");

    // A Feast online write is served.
    assert_eq!(feast["written"]["amount_sum_1d"], json!([7.5]));
}
