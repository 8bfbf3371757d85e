//! `aurum serve` through the real binary: it warm-starts the online store
//! from the gold Delta tables, answers Feast's `/get-online-features` with
//! the values Python's `deltalake` reads from those tables, and a restarted
//! server answers exactly the same.

use serde_json::{Value, json};

use crate::cli::{self, example_project_event_windows, ok};
use crate::python::{self, read_tables};
use crate::server::{call, start};

fn post(url: &str, body: &Value) -> (u16, Value) {
    let reply = call("POST", url, Some(body), None);
    (reply.status, reply.json())
}

fn get(url: &str) -> Value {
    let reply = call("GET", url, None, None);
    assert_eq!(reply.status, 200, "GET {url}: {}", reply.json());
    reply.json()
}

#[test]
fn serve_warm_starts_from_gold_and_answers_feast_requests() {
    // Recent data (the default end is the current hour), so values are
    // within the view's 7-day TTL.
    let project = example_project_event_windows("3000", "3");
    let dir = project.path();

    let features = [
        "customer_features:amount_sum_7d",
        "customer_features:amount_count_1d",
        "customer_features:amount_mean_7d",
    ];
    let request = json!({
        "entities": {"customer_id": [1, 2, 999999]},
        "features": features,
    });
    let server = start(dir);
    let (status, answer) = post(&format!("{}/get-online-features", server.url), &request);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["values"], json!([1, 2, 999999]));

    // The values are the latest gold rows Python's deltalake reads.
    let tables = read_tables(dir, "1,2");
    for (i, reference) in features.iter().enumerate() {
        let name = reference.split_once(':').unwrap().1;
        let column = &results[i + 1];
        for (row, customer) in ["1", "2"].iter().enumerate() {
            let expected = &tables["features"][customer][name];
            match column["statuses"][row].as_str().unwrap() {
                "PRESENT" => assert_eq!(&column["values"][row], expected, "{name} of {customer}"),
                "OUTSIDE_MAX_AGE" => assert!(column["values"][row].is_null()),
                other => panic!("{name} of {customer}: unexpected status {other}"),
            }
        }
        assert_eq!(column["statuses"][2], "NOT_FOUND");
    }

    // A feature service from the project file stands for its feature list.
    let (status, by_service) = post(
        &format!("{}/get-online-features", server.url),
        &json!({"entities": {"customer_id": [1, 2, 999999]}, "feature_service": "fraud_detection"}),
    );
    assert_eq!(status, 200, "{by_service}");
    assert_eq!(
        by_service["metadata"]["feature_names"],
        json!([
            "customer_id",
            "amount_count_1h",
            "amount_sum_1d",
            "amount_mean_7d",
            "amount_ratio_1d_7d",
            "merchant_id_distinct_count_7d"
        ])
    );
    let (status, missing) = post(
        &format!("{}/get-online-features", server.url),
        &json!({"entities": {"customer_id": [1]}, "feature_service": "nope"}),
    );
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["code"], "unknown_feature_service");

    // The views are listed with their feature types and Delta versions.
    let views = get(&format!("{}/feature-views", server.url));
    assert_eq!(views[0]["name"], "customer_features");
    assert_eq!(views[0]["ttl_seconds"], 7 * 86_400);
    assert_eq!(views[0]["delta_version"], tables["gold_version"]);
    let types: Vec<&str> = views[0]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == "float64"),
        "{views}"
    );

    // New gold data reaches the running server with `aurum materialize`.
    ok(
        dir,
        &["generate", "--rows", "200", "--seed", "4", "--days", "0.04"],
    );
    ok(dir, &["pipeline"]);
    let report = cli::json(
        dir,
        &[
            "materialize",
            "--incremental",
            "--json",
            "--server",
            &server.url,
        ],
    );
    let view = &report["views"][0];
    assert_eq!(view["from_version"], tables["gold_version"]);
    assert_eq!(
        view["to_version"],
        tables["gold_version"].as_u64().unwrap() + 1
    );
    assert!(view["rows_read"].as_u64().unwrap() > 0, "{report}");
    let views = get(&format!("{}/feature-views", server.url));
    assert_eq!(views[0]["delta_version"], view["to_version"]);
    // A push lands online at once and in the gold table (one group commit).
    let names: Vec<String> = views[0]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let mut df = serde_json::Map::new();
    df.insert("customer_id".into(), json!([777777]));
    df.insert(
        "event_timestamp".into(),
        json!([chrono::Utc::now().to_rfc3339()]),
    );
    for name in &names {
        df.insert(name.clone(), json!([1.5]));
    }
    let pushed =
        json!({"push_source_name": "customer_features", "df": df, "to": "online_and_offline"});
    let (status, answer) = post(&format!("{}/push", server.url), &pushed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["online_written"], 1);
    let pushed_version = answer["offline_version"].as_u64().unwrap();
    assert_eq!(pushed_version, view["to_version"].as_u64().unwrap() + 1);
    let lookup = json!({"entities": {"customer_id": [777777]}, "features": [features[0]]});
    let (_, online) = post(&format!("{}/get-online-features", server.url), &lookup);
    assert_eq!(online["results"][1]["values"], json!([1.5]));
    let gold = read_tables(dir, "777777");
    assert_eq!(gold["gold_version"], pushed_version);
    assert_eq!(gold["features"]["777777"][&names[0]], 1.5);

    // pyarrow.flight pushes through DoPut: visible online at once, in gold
    // with the next commit; a batch with a null key is refused whole,
    // naming the row and the column.
    let flight = python::reader(
        "flight_push.py",
        &[
            server.flight.as_ref(),
            "customer_features".as_ref(),
            names.join(",").as_ref(),
            "888888".as_ref(),
        ],
    );
    assert_eq!(flight["outcome"]["accepted"], 2, "{flight}");
    assert_eq!(
        flight["many"], 2000,
        "one result per batch, none lost: {flight}"
    );
    assert_eq!(flight["outcome"]["online_written"], 2, "{flight}");
    let flight_version = flight["outcome"]["offline_version"].as_u64().unwrap();
    assert_eq!(flight_version, pushed_version + 1);
    let error = flight["error"].as_str().unwrap();
    assert!(
        error.contains("row 1: customer_id: a join key cannot be null")
            && error.contains("nothing was applied"),
        "{error}"
    );
    // A retried keyed push applies nothing again (the same results, no new
    // gold version); a retry with one more batch applies only that one.
    let keyed = &flight["keyed"];
    assert_eq!(keyed["first"].as_array().map(Vec::len), Some(2), "{keyed}");
    assert_eq!(keyed["again"], keyed["first"], "{keyed}");
    let extended = keyed["extended"].as_array().unwrap();
    assert_eq!(
        extended[..2],
        keyed["first"].as_array().unwrap()[..],
        "{keyed}"
    );
    let newest = |results: &Value| {
        results
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["offline_version"].as_u64())
            .max()
            .unwrap()
    };
    assert!(
        extended[2]["offline_version"].as_u64().unwrap() > newest(&keyed["first"]),
        "{keyed}"
    );
    let mismatch = keyed["mismatch"].as_str().unwrap_or_default();
    assert!(mismatch.contains("same batches"), "{keyed}");
    let lookup = json!({"entities": {"customer_id": [888888, 888889, 888890]}, "features": [format!("customer_features:{}", names[1])]});
    let (_, online) = post(&format!("{}/get-online-features", server.url), &lookup);
    assert_eq!(online["results"][1]["values"], json!([3.5, 3.5, null]));
    assert_eq!(
        online["results"][1]["statuses"],
        json!(["PRESENT", "PRESENT", "NOT_FOUND"])
    );
    let gold = read_tables(dir, "888888");
    // The keyed pushes above committed after the first Flight push.
    assert_eq!(gold["gold_version"], newest(&keyed["extended"]));
    assert_eq!(gold["features"]["888888"][&names[1]], 3.5);

    let (_, fresh) = post(&format!("{}/get-online-features", server.url), &request);

    // A restarted server answers exactly what the running one does.
    drop(server);
    let again = start(dir);
    let (status, second) = post(&format!("{}/get-online-features", again.url), &request);
    assert_eq!(status, 200);
    assert_eq!(second, fresh);

    // The README's notebook example, exactly as shipped, pulls a training
    // set over Flight into pandas and polars: point-in-time values equal to
    // what the online store serves now, spine order and labels kept, the
    // gold version reported.
    let stdout = python::run(
        "the notebook example",
        "examples/notebook_training_set.py",
        &[again.flight.as_ref()],
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}"));
    assert_eq!(summary["rows"], 4, "{summary}");
    assert_eq!(summary["polars_height"], 4);
    assert_eq!(summary["labels"], json!([0, 1, 0, 0]));
    assert_eq!(
        summary["versions"]["customer_features"], gold["gold_version"],
        "{summary}"
    );
    assert!(
        stdout.contains("feature_service"),
        "ListFlights lists services: {stdout}"
    );
    let (_, online) = post(
        &format!("{}/get-online-features", again.url),
        &json!({"entities": {"customer_id": [1, 2]}, "feature_service": "fraud_detection"}),
    );
    let names = online["metadata"]["feature_names"].as_array().unwrap();
    for (row, customer) in ["1", "2"].iter().enumerate() {
        for (i, name) in names.iter().enumerate().skip(1) {
            let name = name.as_str().unwrap();
            let served = &online["results"][i]["values"][row];
            let trained = &summary["features"][customer][name];
            assert_eq!(trained, served, "{name} of customer {customer}");
        }
    }
    assert!(
        summary["features"]["999999"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_null),
        "{summary}"
    );

    // DoGet of a view (latest, pinned, a time range) matches what Python's
    // deltalake reads; online features come back as Arrow; bad requests get
    // the status that names the problem, and the server keeps serving.
    let gold_path = dir.join("data/delta/customer_features");
    let answers = python::reader(
        "flight_queries.py",
        &[again.flight.as_ref(), gold_path.as_os_str()],
    );
    assert_eq!(answers["view_rows"], answers["delta_rows"], "{answers}");
    assert_eq!(answers["info_schema_matches"], true, "{answers}");
    assert_eq!(answers["version0_rows"], answers["delta_version0_rows"]);
    assert!(answers["version0_rows"].as_u64() < answers["view_rows"].as_u64());
    assert!(answers["recent_rows"].as_u64() < answers["view_rows"].as_u64());
    assert_eq!(
        answers["online"][2]["amount_sum_1d"],
        Value::Null,
        "{answers}"
    );
    assert_eq!(answers["online"][0]["customer_id"], 1);
    let error = |name: &str| answers["errors"][name].as_str().unwrap_or("").to_string();
    assert!(
        error("missing_timestamp").contains("ArrowInvalid")
            && error("missing_timestamp").contains("\"event_timestamp\""),
        "{answers}"
    );
    assert!(
        error("missing_key").contains("\"customer_id\""),
        "{answers}"
    );
    assert!(error("unknown_view").contains("nope"), "{answers}");
    assert!(
        error("unknown_feature").contains("customer_features:nope"),
        "{answers}"
    );
    assert!(error("malformed").contains("nmae"), "{answers}");
    assert_eq!(answers["still_serving_rows"], 2);
}
