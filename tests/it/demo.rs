//! `aurum demo` end to end: the binary runs every stage, Python's `deltalake`
//! and `polars` read the Delta tables it wrote, and the served predictions
//! are reproduced by running the registered ONNX model on those features.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::cli;
use crate::python::read_tables;

/// `aurum demo` of 4000 rows in `dir`, asking for `customers`' answers; its
/// JSON summary.
fn run_demo(dir: &Path, customers: &str) -> Value {
    let target = dir.to_str().expect("a UTF-8 temporary directory");
    cli::json(
        dir,
        &[
            "demo",
            "--rows",
            "4000",
            "--json",
            "--customers",
            customers,
            "--dir",
            target,
        ],
    )
}

#[test]
fn demo_serves_the_registered_model_on_the_features_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let customers = "17,42";
    let summary = run_demo(dir.path(), customers);
    let tables = read_tables(dir.path(), customers);

    // The Delta tables are real: Python's deltalake sees the same versions
    // and rows, with aurum's lineage in the gold commit.
    assert_eq!(tables["gold_version"], summary["gold_version"]);
    assert_eq!(tables["silver_version"], summary["silver_version"]);
    assert_eq!(tables["gold_rows"], summary["gold_rows"]);
    assert_eq!(tables["silver_rows"], summary["silver_rows"]);
    // Silver resolves the re-delivered duplicates and quarantines the few
    // broken rows the generator plants: every transaction is in one place.
    let quarantined = summary["quarantined"].as_u64().unwrap();
    assert_eq!(
        tables["silver_rows"].as_u64().unwrap() + quarantined,
        4000,
        "silver rows + quarantined rows = generated transactions"
    );
    assert_eq!(tables["quarantine_rows"].as_u64().unwrap(), quarantined);
    assert!(summary["quality_score"].as_f64().unwrap() > 0.95);
    assert_eq!(tables["gold_lineage"]["operation"], "gold-full");
    assert_eq!(
        tables["gold_lineage"]["input_tables"]["silver_transactions"],
        summary["silver_version"]
    );
    assert_eq!(
        tables["gold_schema"]["event_timestamp"],
        "Datetime(time_unit='us', time_zone='UTC')"
    );

    // The answer names the registered model and the Delta version it used.
    let response = &summary["response"];
    assert_eq!(summary["model_version"], 1);
    assert_eq!(
        response["feature_versions"]["customer_features"],
        summary["gold_version"]
    );
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    for p in predictions {
        assert_eq!(p["model"], "fraud");
        assert_eq!(p["version"], 1);
        let v = p["prediction"].as_f64().unwrap();
        assert!(v > 0.0 && v < 1.0, "{v} is not a probability");
    }

    // Different customers with different features get different answers,
    // and each answer is what the registered model computes on the
    // features served at the read (the view values its windows at the
    // request's time, from the events Python's deltalake reads too).
    assert_ne!(tables["features"]["17"], tables["features"]["42"]);
    let online = &summary["online_features"];
    let names = online["metadata"]["feature_names"].as_array().unwrap();
    let served_value = |customer: usize, name: &str| -> Option<f64> {
        let at = names.iter().position(|n| n == name)?;
        online["results"][at]["values"][customer].as_f64()
    };
    let p17 = predictions[0]["prediction"].as_f64().unwrap();
    let p42 = predictions[1]["prediction"].as_f64().unwrap();
    assert!((p17 - p42).abs() > 1e-6, "both customers got {p17}");

    let registry = registry::Registry::open(dir.path().join("data/registry")).unwrap();
    let version = registry.latest("fraud").unwrap();
    let model = serving::LoadedModel::load(&registry, version.clone(), 1).unwrap();
    for (row, (customer, served)) in ["17", "42"].iter().zip(predictions).enumerate() {
        let row: Vec<f32> = version
            .features
            .iter()
            .map(|reference| {
                let name = reference.split_once(':').unwrap().1;
                // A feature the server reported missing (stale or absent)
                // was imputed inside the model: feed NaN the same way.
                if served["feature_statuses"].get(reference).is_some() {
                    f32::NAN
                } else {
                    served_value(row, name)
                        .unwrap_or_else(|| panic!("{name} of {customer} is not served: {online}"))
                        as f32
                }
            })
            .collect();
        let expected = model.predict(row, 1).unwrap()[0][0];
        let got = served["prediction"].as_f64().unwrap() as f32;
        assert!(
            (expected - got).abs() < 1e-6,
            "customer {customer}: served {got}, the registered model gives {expected}"
        );
    }
}

#[test]
fn a_missing_onnx_runtime_is_reported_with_the_command_that_installs_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env(
            "ORT_DYLIB_PATH",
            dir.path().join("no-such-libonnxruntime.so"),
        )
        .output()
        .expect("running aurum demo");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("make onnxruntime"), "{stderr}");
    assert!(stderr.contains("no-such-libonnxruntime.so"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing should be written before the check"
    );
}
