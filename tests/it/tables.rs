//! `aurum table show`: Delta tables written by Spark and Databricks
//! (tests/fixtures/delta, from delta-rs' test data) read through aurum's one
//! protocol-complete read path, checked against what the protocol says and
//! against Python's deltalake where it can read the table.

use std::ffi::OsStr;
use std::path::PathBuf;

use serde_json::Value;

use crate::cli;
use crate::python;

fn fixture(name: &str) -> PathBuf {
    python::workspace().join("tests/fixtures/delta").join(name)
}

fn show(name: &str, extra: &[&str]) -> Value {
    let path = fixture(name);
    let path = path.to_str().expect("a UTF-8 path");
    let mut args = vec!["table", "show", path, "--json", "--limit", "1000"];
    args.extend_from_slice(extra);
    cli::json(&python::workspace(), &args)
}

/// Rows as sorted JSON texts, so that two readers compare whatever their
/// file order (serde_json orders object keys).
fn row_texts(rows: &Value) -> Vec<String> {
    let mut texts: Vec<String> = rows
        .as_array()
        .map(|rows| rows.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    texts.sort();
    texts
}

#[test]
fn deletion_vectors_are_honoured() {
    let answer = show("table-with-dv-small", &[]);
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["rows"], 8);
    let mut values: Vec<i64> = answer["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["value"].as_i64().expect("an integer value"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=8).collect::<Vec<_>>());
    let before = show("table-with-dv-small", &["--version", "0"]);
    assert_eq!(before["rows"], 10);
}

#[test]
fn partitions_read_as_python_deltalake_reads_them() {
    let name = "delta-2.2.0-partitioned-types";
    let ours = show(name, &[]);
    let theirs = python::reader("read_any_table.py", &[fixture(name).as_os_str()]);
    assert_eq!(ours["version"], theirs["version"], "{name}: version");
    assert_eq!(
        row_texts(&ours["data"]),
        row_texts(&theirs["rows"]),
        "{name}: rows"
    );
}

/// Python's deltalake refuses column mapping ("Unsupported reader features
/// required: [ColumnMapping]"), so the expected rows are the protocol's:
/// logical names, the partition column's values from the log.
#[test]
fn column_mapping_gives_logical_names() {
    let answer = show("table_with_column_mapping", &[]);
    assert_eq!(answer["rows"], 5);
    let fields: Vec<&str> = answer["schema"]
        .as_array()
        .expect("a schema")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert!(fields.contains(&"Company Very Short"), "{fields:?}");
    assert!(fields.contains(&"Super Name"), "{fields:?}");
    let expected = serde_json::json!([
        {"Company Very Short": "BMS", "Super Name": "Mr. Daniel Ferguson MD"},
        {"Company Very Short": "BMS", "Super Name": "Stephanie Mcgrath"},
        {"Company Very Short": "BMS", "Super Name": "Anthony Johnson"},
        {"Company Very Short": "BMS", "Super Name": "Nathan Bennett"},
        {"Company Very Short": "BME", "Super Name": "Timothy Lamb"},
    ]);
    assert_eq!(row_texts(&answer["data"]), row_texts(&expected));
}

#[test]
fn out_writes_every_row_to_parquet() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("rows.parquet");
    let table = fixture("checkpoint-v2-table");
    cli::ok(
        dir.path(),
        &[
            "table",
            "show",
            table.to_str().expect("a UTF-8 path"),
            "--out",
            out.to_str().expect("a UTF-8 path"),
            "--limit",
            "1",
        ],
    );
    let printed = python::run(
        "pyarrow reading the written file",
        "tests/python/count_parquet.py",
        &[OsStr::new(&out)],
    );
    assert_eq!(printed.trim(), "44 1 44", "rows, min id, max id");
}

#[test]
fn a_missing_table_and_a_bad_scheme_are_named() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let error = cli::fails(
        dir.path(),
        &["table", "show", dir.path().to_str().expect("a UTF-8 path")],
    );
    assert!(error.contains("not a readable Delta table"), "{error}");
    let error = cli::fails(dir.path(), &["table", "show", "ftp://host/table"]);
    assert!(error.contains("unsupported scheme \"ftp\""), "{error}");
}

#[test]
fn a_v1_checkpoint_is_read_when_the_commits_before_it_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("checkpointed");
    let expected = python::reader("checkpointed_table.py", &[table.as_os_str()]);
    let path = table.to_str().expect("a UTF-8 path");
    let answer = cli::json(
        &python::workspace(),
        &["table", "show", path, "--json", "--limit", "1000"],
    );
    assert_eq!(answer["version"], expected["version"]);
    let mut ids: Vec<i64> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    let expected: Vec<i64> = expected["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(ids.len(), 32);
}
