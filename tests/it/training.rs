//! `aurum train` and `aurum retrain` through the real binary on the example
//! project: a registered challenger with lineage, byte-identical retraining
//! from the same table versions and seed, skipping when nothing is new,
//! promotion decided on the same validation window, and a failed run that
//! registers nothing.

use registry::Registry;

use crate::cli::{example_project, fails, json, ok};

#[test]
fn train_registers_a_reproducible_challenger_and_retrain_waits_for_new_data() {
    let project = example_project("4000", "5");
    let dir = project.path();

    let first = json(dir, &["train", "--promote-if-better", "--json"]);
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["promoted"], true, "{first}");
    // The generator plants signal the features carry: better than chance.
    assert!(
        first["metrics"]["val_roc_auc"].as_f64().unwrap() > 0.6,
        "{first}"
    );
    assert!(first["metrics"]["importance.customer_features__amount_mean_7d"].is_number());

    // Nothing new: retrain says so and registers nothing.
    let skipped = json(dir, &["retrain", "--json"]);
    assert!(
        skipped["skipped"]
            .as_str()
            .unwrap()
            .contains("no new data since v1"),
        "{skipped}"
    );
    // Training again on the same versions with the same seed: the same bytes.
    let again = json(dir, &["train", "--json"]);
    assert_eq!(again["version"], 2);
    assert_eq!(again["sha256"], first["sha256"]);

    let registry = Registry::open(dir.join("data/registry")).unwrap();
    let v2 = registry.version("fraud", 2).unwrap();
    assert_eq!(v2.lineage.parameters["seed"], "42");
    assert_eq!(v2.lineage.parameters["family"], "mlp");
    assert_eq!(
        serde_json::to_value(&v2.lineage.table_versions).unwrap(),
        first["table_versions"]
    );
    assert_eq!(registry.by_alias("fraud", "champion").unwrap().version, 1);
    assert_eq!(registry.by_alias("fraud", "challenger").unwrap().version, 2);
    assert!(
        v2.features
            .iter()
            .all(|f| f.starts_with("customer_features:"))
    );
    assert_eq!(v2.imputation.len(), v2.features.len());

    // New data: retrain trains, and compares with the champion on the same
    // validation rows.
    ok(
        dir,
        &["generate", "--rows", "600", "--seed", "6", "--days", "0.2"],
    );
    ok(dir, &["pipeline"]);
    let third = json(dir, &["retrain", "--promote-if-better", "--json"]);
    assert_eq!(third["version"], 3, "{third}");
    assert!(third["champion_value"].is_number(), "{third}");
    assert_ne!(third["table_versions"], first["table_versions"]);
    let champion = registry.by_alias("fraud", "champion").unwrap().version;
    assert_eq!(champion == 3, third["promoted"] == true, "{third}");

    // A spec that cannot train fails naming the problem; nothing registered.
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("label = \"is_fraud\"", "label = \"is_fruad\""),
    )
    .unwrap();
    let stderr = fails(dir, &["train"]);
    assert!(stderr.contains("\"is_fruad\""), "{stderr}");
    assert_eq!(registry.versions("fraud").unwrap().len(), 3);
}
