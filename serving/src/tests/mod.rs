//! The application driven through its router in process: every route, its
//! errors and its protections.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use feature_store::testing::{DAY_MICROS as DAY, ViewFixture, utc_micros};
use feature_store::{FeatureView, OnlineStore};
use polars::prelude::*;
use registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::metrics;
use crate::{AppState, Limits, MAX_BODY_BYTES, ServingConfig, app};

mod route_fuzz;

fn view() -> FeatureView {
    ViewFixture::customer("v")
        .features(["x1", "x2"])
        .float64()
        .build()
}

/// A served model `m` over view `v`: customer 1 fresh, customer 2 stale,
/// customer 3 unknown.
fn state(dir: &std::path::Path) -> Arc<AppState> {
    state_with(dir, |state| state)
}

/// Like [`state`], with the state configured by `configure` and the
/// model loaded the way the server's watcher loads it.
fn state_with(
    dir: &std::path::Path,
    configure: impl FnOnce(AppState) -> AppState,
) -> Arc<AppState> {
    let n = 400;
    let x1: Vec<f64> = (0..n).map(|i| f64::from(i % 20)).collect();
    let x2: Vec<f64> = (0..n).map(|i| f64::from((i * 7) % 13)).collect();
    let y: Vec<i64> = (0..n).map(|i| i64::from(i % 20 > 9)).collect();
    let ts: Vec<i64> = (0..i64::from(n)).collect();
    let train = df!("x1" => x1, "x2" => x2, "y" => y, "ts" => ts).unwrap();
    let features = vec!["x1".to_string(), "x2".to_string()];
    let model = training::train_logistic(
        &train,
        &features,
        "y",
        "ts",
        &training::TrainOptions::default(),
    )
    .unwrap();
    let registry = Registry::open(dir).unwrap();
    training::register(
        &registry,
        "m",
        &model,
        view().feature_refs(),
        registry::Lineage::default(),
    )
    .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let gold = DataFrame::new_infer_height(vec![
        Series::new("customer_id".into(), [1i64, 2]).into(),
        utc_micros("ts", vec![now - 1_000_000, now - 3 * DAY]),
        utc_micros("created", vec![now - 1_000_000, now - 3 * DAY]),
        Series::new("x1".into(), [15.0f64, 2.0]).into(),
        Series::new("x2".into(), [Some(3.0f64), None]).into(),
    ])
    .unwrap();
    let online = Arc::new(OnlineStore::new(1 << 20));
    online.register_view(view());
    online.materialize(&view(), &gold, 7).unwrap();
    let state = Arc::new(configure(AppState::new(online, registry.clone())));
    assert_eq!(state.sync_models().len(), 1);
    state
}

async fn call(state: &Arc<AppState>, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_inference_protocol_serves_metadata_and_infers() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let input = oip_metadata(&state).await;
    let flat = oip_infers_flat_and_nested(&state, &input).await;
    oip_takes_and_gives_binary_tensors(&state, &input, &flat).await;
    oip_serves_any_ready_version(&state, &input, &flat).await;
    oip_refuses_client_mistakes(&state, &input).await;
}

/// A request with the binary tensor data extension: `json` then `binary`,
/// with the header giving the JSON's length. Returns the status, the
/// extension's header in the answer, and the answer's bytes.
async fn binary_call(
    state: &Arc<AppState>,
    json: &Value,
    binary: &[u8],
) -> (StatusCode, Option<usize>, Vec<u8>) {
    let json = json.to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(binary);
    let request = Request::builder()
        .method("POST")
        .uri("/v2/models/m/infer")
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", json.len())
        .body(Body::from(body))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let length = response
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    (status, length, bytes)
}

/// Binary inputs and outputs (tritonclient's default) answer what JSON
/// does; sizes that do not fit the shape are refused, naming the input.
async fn oip_takes_and_gives_binary_tensors(state: &Arc<AppState>, input: &str, flat: &Value) {
    let values: [f32; 4] = [1.0, 2.0, 15.0, 3.0];
    let binary: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let request = |size: usize| {
        json!({"id": "r1", "inputs": [{"name": input, "shape": [2, 2], "datatype": "FP32",
                                        "parameters": {"binary_data_size": size}}],
               "parameters": {"binary_data_output": true}})
    };
    let (status, length, bytes) = binary_call(state, &request(16), &binary).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let length = length.expect("a binary answer gives its JSON length");
    let answer: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    let output = &answer["outputs"][0];
    assert_eq!(output["parameters"]["binary_data_size"], 8, "{answer}");
    assert!(output.get("data").is_none(), "{answer}");
    let got: Vec<f64> = bytes[length..]
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    let expected: Vec<f64> = flat["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got, expected);

    // Binary in, JSON out (no binary output asked for).
    let mut json_out = request(16);
    json_out.as_object_mut().unwrap().remove("parameters");
    let (status, length, bytes) = binary_call(state, &json_out, &binary).await;
    assert_eq!((status, length), (StatusCode::OK, None));
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["outputs"], flat["outputs"]);

    let longer: Vec<u8> = binary.iter().chain(&[0u8; 4]).copied().collect();
    for (json, binary, named) in [
        (request(12), &binary[..12], "needs 16"),
        (request(16), &binary[..12], "declares 16 bytes"),
        (request(16), &longer[..], "4 bytes of binary data follow"),
    ] {
        let (status, _, bytes) = binary_call(state, &json, binary).await;
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
    }
}

/// An Open Inference Protocol infer body: one input tensor, id `r1`.
fn oip_body(input: &str, data: Value, shape: Value, datatype: &str) -> String {
    json!({"id": "r1", "inputs": [
        {"name": input, "shape": shape, "datatype": datatype, "data": data}
    ]})
    .to_string()
}

/// The server's and the model's metadata and readiness; returns the
/// model's input name.
async fn oip_metadata(state: &Arc<AppState>) -> String {
    let (status, server) = call(state, "GET", "/v2", "").await;
    assert_eq!(
        (status, server["name"].as_str()),
        (StatusCode::OK, Some("aurum"))
    );
    let (status, _) = call(state, "GET", "/v2/health/live", "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, meta) = call(state, "GET", "/v2/models/m", "").await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 2]));
    let input = meta["inputs"][0]["name"].as_str().unwrap().to_string();
    let (status, _) = call(state, "GET", "/v2/models/m/ready", "").await;
    assert_eq!(status, StatusCode::OK);
    input
}

/// Flat and nested data are the same tensor; the id comes back. Returns
/// the answer.
async fn oip_infers_flat_and_nested(state: &Arc<AppState>, input: &str) -> Value {
    let (status, flat) = call(
        state,
        "POST",
        "/v2/models/m/infer",
        &oip_body(input, json!([1.0, 2.0, 15.0, 3.0]), json!([2, 2]), "FP32"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{flat}");
    let (_, nested) = call(
        state,
        "POST",
        "/v2/models/m/infer",
        &oip_body(
            input,
            json!([[1.0, 2.0], [15.0, 3.0]]),
            json!([2, 2]),
            "FP32",
        ),
    )
    .await;
    assert_eq!(flat, nested);
    assert_eq!(flat["id"], "r1");
    assert_eq!(flat["model_version"], "1");
    let output = &flat["outputs"][0];
    assert_eq!(output["datatype"], "FP32");
    assert_eq!(output["data"].as_array().unwrap().len(), 2);
    flat
}

/// Any READY version is served on demand, answering as version 1 did
/// (`flat`).
async fn oip_serves_any_ready_version(state: &Arc<AppState>, input: &str, flat: &Value) {
    let v1 = state.registry.version("m", 1).unwrap();
    let bytes = state.registry.model_bytes(&v1).unwrap();
    let new = registry::NewVersion {
        features: v1.features.clone(),
        ..registry::NewVersion::default()
    };
    state.registry.register("m", &bytes, new).unwrap();
    let (status, v2) = call(
        state,
        "POST",
        "/v2/models/m/versions/2/infer",
        &oip_body(input, json!([1.0, 2.0, 15.0, 3.0]), json!([2, 2]), "FP32"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(
        (v2["model_version"].clone(), v2["outputs"].clone()),
        (json!("2"), flat["outputs"].clone())
    );
}

/// Client mistakes are 4xx errors naming the problem.
async fn oip_refuses_client_mistakes(state: &Arc<AppState>, input: &str) {
    let request =
        |data: Value, shape: Value, datatype: &str| oip_body(input, data, shape, datatype);
    for (uri, body, want, needle) in [
        (
            "/v2/models/m/infer",
            request(json!([1, 2]), json!([1, 2]), "INT64"),
            400,
            "FP32",
        ),
        (
            "/v2/models/m/infer",
            request(json!([1.0, 2.0, 3.0]), json!([1, 3]), "FP32"),
            400,
            "shape",
        ),
        (
            "/v2/models/m/infer",
            request(json!([1.0, 2.0, 3.0]), json!([2, 2]), "FP32"),
            400,
            "needs 4",
        ),
        (
            "/v2/models/m/infer",
            request(json!(["a", 2.0]), json!([1, 2]), "FP32"),
            400,
            "not a number",
        ),
        (
            "/v2/models/m/infer",
            "{\"inputs\": [{\"name\": \"nope\"}]}".to_string(),
            400,
            "no input",
        ),
        (
            "/v2/models/m/infer",
            "{\"inputs\": []}".to_string(),
            400,
            "lacks input",
        ),
        (
            "/v2/models/m/infer",
            "{not json".to_string(),
            400,
            "not valid JSON",
        ),
        (
            "/v2/models/nobody/infer",
            request(json!([1.0, 2.0]), json!([1, 2]), "FP32"),
            404,
            "not served",
        ),
        (
            "/v2/models/m/versions/9/infer",
            request(json!([1.0, 2.0]), json!([1, 2]), "FP32"),
            404,
            "no version 9",
        ),
        (
            "/v2/models/m/versions/x/ready",
            String::new(),
            404,
            "versions are numbers",
        ),
    ] {
        let method = if uri.ends_with("ready") {
            "GET"
        } else {
            "POST"
        };
        let (status, body) = call(state, method, uri, &body).await;
        assert_eq!(status.as_u16(), want, "{uri}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{uri}: {message:?} lacks {needle:?}"
        );
    }
    let mut unknown_output: Value =
        serde_json::from_str(&request(json!([1.0, 2.0]), json!([1, 2]), "FP32")).unwrap();
    unknown_output["outputs"] = json!([{"name": "nothing"}]);
    let (status, body) = call(
        state,
        "POST",
        "/v2/models/m/infer",
        &unknown_output.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_validates_every_row_and_applies_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let now = chrono::Utc::now().to_rfc3339();
    let push = |df: Value, partial: bool| {
        json!({"push_source_name": "v", "df": df, "to": "online", "allow_partial": partial})
            .to_string()
    };
    // Row 1 has a string where x1 needs a number: nothing is applied.
    let bad =
        json!({"customer_id": [7, 8], "ts": [now, now], "x1": [1.0, "high"], "x2": [2.0, 3.0]});
    let (status, answer) = call(&state, "POST", "/push", &push(bad.clone(), false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_row");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("row 1") && message.contains("x1"),
        "{message}"
    );
    let lookup = r#"{"entities": {"customer_id": [7, 8]}, "features": ["v:x1"]}"#;
    let (_, before) = call(&state, "POST", "/get-online-features", lookup).await;
    assert_eq!(
        before["results"][1]["statuses"],
        json!(["NOT_FOUND", "NOT_FOUND"])
    );

    // With allow_partial the good row lands and the bad one is reported.
    let (status, answer) = call(&state, "POST", "/push", &push(bad, true)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["online_written"], 1);
    assert_eq!(answer["rejected"][0]["row"], 1);
    let (_, after) = call(&state, "POST", "/get-online-features", lookup).await;
    assert_eq!(
        after["results"][1]["statuses"],
        json!(["PRESENT", "NOT_FOUND"])
    );
    assert_eq!(after["results"][1]["values"][0], 1.0);
    let metrics = app(state.clone())
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("aurum_push_rows_accepted_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("aurum_push_rows_rejected_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("aurum_push_freshness_seconds_count 1\n"),
        "{text}"
    );

    // An event time far ahead of the clock would pin the row: refused,
    // naming the row and column; a little ahead (clock skew) is accepted.
    let ahead =
        |seconds: i64| (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339();
    let (status, answer) = call(
        &state,
        "POST",
        "/push",
        &push(json!({"customer_id": [9, 10], "ts": [ahead(60), ahead(86_400)], "x1": [1.0, 1.0], "x2": [1.0, 1.0]}), false),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("row 1") && message.contains("ts") && message.contains("ahead"),
        "{message}"
    );
    let (status, answer) = call(
        &state,
        "POST",
        "/push",
        &push(
            json!({"customer_id": [9], "ts": [ahead(60)], "x1": [1.0], "x2": [1.0]}),
            false,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // Missing and unknown columns, unknown views, no offline store.
    for (body, status, code, named) in [
        (push(json!({"customer_id": [7], "ts": [now], "x1": [1.0]}), false), StatusCode::BAD_REQUEST, "invalid_push", "no column \"x2\""),
        (push(json!({"customer_id": [7], "ts": [now], "x1": [1.0], "x2": [1.0], "x3": [1]}), false), StatusCode::BAD_REQUEST, "invalid_push", "no column \"x3\""),
        (json!({"push_source_name": "nope", "df": {}}).to_string(), StatusCode::NOT_FOUND, "unknown_push_source", "\"nope\""),
        (json!({"push_source_name": "v", "df": {"customer_id": [7], "ts": [now], "x1": [1.0], "x2": [1.0]}, "to": "offline"}).to_string(), StatusCode::NOT_FOUND, "no_offline_store", "cannot push v offline"),
    ] {
        let (got, answer) = call(&state, "POST", "/push", &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
    }
}

/// Feast's SDK writes through `/write-to-online-store` with its own names
/// for the timestamps and naive UTC times; the rows land online as a push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feasts_online_write_lands_as_a_push() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let now = chrono::Utc::now();
    let naive = now.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let body = json!({
        "feature_view_name": "v",
        "df": {"customer_id": [41, 42], "x1": [1.5, 2.5], "x2": [3.0, 4.0],
               "event_timestamp": [naive, naive], "created": [null, null]},
        "allow_registry_cache": false,
    })
    .to_string();
    let (status, answer) = call(&state, "POST", "/write-to-online-store", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["online_written"], 2, "{answer}");
    let lookup = r#"{"entities": {"customer_id": [41, 42]}, "features": ["v:x1", "v:x2"]}"#;
    let (_, read) = call(&state, "POST", "/get-online-features", lookup).await;
    assert_eq!(read["results"][1]["values"], json!([1.5, 2.5]), "{read}");
    assert_eq!(
        read["results"][2]["statuses"],
        json!(["PRESENT", "PRESENT"])
    );
    let stamp = read["results"][1]["event_timestamps"][0].as_str().unwrap();
    let stamp = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
    assert!(
        (stamp.timestamp_micros() - now.timestamp_micros()).abs() <= 1,
        "{stamp}"
    );

    for (body, status, code) in [
        (
            json!({"feature_view_name": "nope", "df": {}}),
            StatusCode::NOT_FOUND,
            "unknown_feature_view",
        ),
        (
            json!({"feature_view_name": "v", "df": {"customer_id": [1], "x1": [1.0], "x2": [1.0],
                 "event_timestamp": ["yesterday"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_row",
        ),
        (
            json!({"df": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let (got, answer) = call(&state, "POST", "/write-to-online-store", &body.to_string()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_features_answer_in_feasts_shape_with_ttl_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    online_features_in_feasts_shape(&state).await;
    online_features_refuse_bad_requests(&state).await;
    feature_views_are_listed(&state).await;
    online_lookups_are_counted(&state).await;
    online_requests_are_limited(&state).await;
    online_features_take_every_field_feast_sends(&state).await;
}

/// Column-major results, entity keys first, with statuses enforced on
/// read.
async fn online_features_in_feasts_shape(state: &Arc<AppState>) {
    let body = r#"{"entities": {"customer_id": [1, 2, 3]},
                  "features": ["v:x1", "v:x2"], "full_feature_names": true}"#;
    let (status, answer) = call(state, "POST", "/get-online-features", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["metadata"]["feature_names"],
        json!(["customer_id", "v__x1", "v__x2"])
    );
    let results = &answer["results"];
    assert_eq!(results[0]["values"], json!([1, 2, 3]));
    assert_eq!(results[1]["values"], json!([15.0, null, null]));
    assert_eq!(
        results[1]["statuses"],
        json!(["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert_eq!(
        results[2]["statuses"],
        json!(["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"])
    );
    assert_eq!(results[1]["event_timestamps"][2], "1970-01-01T00:00:00Z");
    assert!(
        results[1]["event_timestamps"][0]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
}

/// Feast 0.67's SDK asks for view metadata; a field from a later Feast is
/// ignored rather than refused, and the answer is the same.
async fn online_features_take_every_field_feast_sends(state: &Arc<AppState>) {
    let plain = r#"{"entities": {"customer_id": [1, 2]}, "features": ["v:x1"]}"#;
    let (_, expected) = call(state, "POST", "/get-online-features", plain).await;
    let body = r#"{"entities": {"customer_id": [1, 2]}, "features": ["v:x1"],
                  "full_feature_names": false,
                  "include_feature_view_version_metadata": true,
                  "some_future_field": {"nested": [1, 2]}}"#;
    let (status, answer) = call(state, "POST", "/get-online-features", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["results"], expected["results"]);
    assert_eq!(
        answer["metadata"]["feature_view_metadata"],
        json!([{"name": "v", "version": state.online.delta_version("v").unwrap_or(0)}])
    );
    assert!(expected["metadata"].get("feature_view_metadata").is_none());
}

/// Unknown views and features, bad entity keys and references.
async fn online_features_refuse_bad_requests(state: &Arc<AppState>) {
    for (body, status, code) in [
        (
            r#"{"entities": {"customer_id": [1]}, "features": ["nope:x1"]}"#,
            StatusCode::NOT_FOUND,
            "unknown_feature_view",
        ),
        (
            r#"{"entities": {"customer_id": [1]}, "features": ["v:nope"]}"#,
            StatusCode::NOT_FOUND,
            "unknown_feature",
        ),
        (
            r#"{"entities": {"user": [1]}, "features": ["v:x1"]}"#,
            StatusCode::BAD_REQUEST,
            "unknown_entity_key",
        ),
        (
            r#"{"entities": {}, "features": ["v:x1"]}"#,
            StatusCode::BAD_REQUEST,
            "missing_entity_key",
        ),
        (
            r#"{"entities": {"customer_id": [1.5]}, "features": ["v:x1"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_entity_key",
        ),
        (
            r#"{"entities": {"customer_id": [1]}, "features": ["x1"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_feature_reference",
        ),
        (
            r#"{"entities": {"customer_id": [1]}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let (got, answer) = call(state, "POST", "/get-online-features", body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
}

/// `GET /feature-views` lists the views with their types and versions.
async fn feature_views_are_listed(state: &Arc<AppState>) {
    let (status, views) = call(state, "GET", "/feature-views", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        views,
        json!([{"name": "v", "entity": "customer", "join_keys": ["customer_id"],
                "ttl_seconds": 86_400, "delta_version": 7,
                "features": [{"name": "x1", "type": "float64"}, {"name": "x2", "type": "float64"}]}])
    );
}

/// `/metrics` counts the lookups (the error cases never reached one).
async fn online_lookups_are_counted(state: &Arc<AppState>) {
    let (status, _) = call(state, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // One successful lookup so far (the error cases never reached it).
    assert!(
        text.contains("aurum_online_lookup_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("aurum_online_hits_total 2\n"), "{text}");
    assert!(text.contains("aurum_online_misses_total 1\n"), "{text}");
    assert!(
        text.contains("aurum_feature_view_delta_version{view=\"v\"} 7\n"),
        "{text}"
    );
}

/// Too many entities, and bodies over the byte limit, are refused.
async fn online_requests_are_limited(state: &Arc<AppState>) {
    let many: Vec<i64> = (0..10_001).collect();
    let body = json!({"entities": {"customer_id": many}, "features": ["v:x1"]}).to_string();
    let (got, answer) = call(state, "POST", "/get-online-features", &body).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // A body over the byte limit is refused before parsing, in JSON.
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    for path in ["/get-online-features", "/push"] {
        let (got, answer) = call(state, "POST", path, &huge).await;
        assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "too_large", "{path}: {answer}");
    }
    // A body that declares more is refused on its Content-Length alone:
    // the two bytes sent are never read.
    let request = Request::builder()
        .method("POST")
        .uri("/get-online-features")
        .header("content-type", "application/json")
        .header("content-length", (MAX_BODY_BYTES + 1).to_string())
        .body(Body::from("{}"))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("declares more than"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_reports_statuses_and_imputes_missing_features() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let body = json!({"model": "m", "entities": {"customer_id": [1, 2, "3"]}}).to_string();
    let (status, answer) = call(&state, "POST", "/predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["feature_versions"]["v"], 7);
    let rows = answer["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["model"] == "m" && r["version"] == 1));
    assert!(rows[0].get("feature_statuses").is_none());
    assert_eq!(rows[1]["feature_statuses"]["v:x1"], "OUTSIDE_MAX_AGE");
    assert_eq!(rows[2]["feature_statuses"]["v:x2"], "NOT_FOUND");

    // Stale and unknown rows are both fully imputed: same prediction,
    // equal to the model run on NaN inputs.
    let model = state.models.get("m").unwrap();
    let imputed = model.predict(vec![f32::NAN, f32::NAN], 1).unwrap()[0][0];
    let fresh = model.predict(vec![15.0, 3.0], 1).unwrap()[0][0];
    let p = |i: usize| rows[i]["prediction"].as_f64().unwrap() as f32;
    assert!((p(0) - fresh).abs() < 1e-6);
    assert!((p(1) - imputed).abs() < 1e-6 && (p(2) - imputed).abs() < 1e-6);

    // Request-time values take precedence over stored ones.
    let body = json!({"model": "m", "entities": {"customer_id": [2]},
                      "features": {"x1": [15.0], "v:x2": [3.0]}})
    .to_string();
    let (_, answer) = call(&state, "POST", "/predict", &body).await;
    let got = answer["predictions"][0]["prediction"].as_f64().unwrap() as f32;
    assert!((got - fresh).abs() < 1e-6, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cases = [
        (
            json!({"model": "nope", "entities": {"customer_id": [1]}}).to_string(),
            StatusCode::NOT_FOUND,
            "model_not_found",
            "\"nope\"",
        ),
        (
            json!({"model": "m", "entities": {"customer_id": [1, 2]}, "features": {"x1": [1.0]}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "ragged_columns",
            "has 1 values",
        ),
        (
            json!({"model": "m", "entities": {"account": [1]}}).to_string(),
            StatusCode::BAD_REQUEST,
            "missing_entity_key",
            "\"customer_id\"",
        ),
        (
            json!({"model": "m", "entities": {"customer_id": [1.5]}}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_entity_key",
            "1.5",
        ),
        (
            json!({"model": "m", "entities": {"customer_id": [1]}, "features": {"x1": ["high"]}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_feature_value",
            "\"high\"",
        ),
        (
            json!({"model": "m", "entities": {}}).to_string(),
            StatusCode::BAD_REQUEST,
            "no_rows",
            "at least one row",
        ),
        (
            json!({"model": "m", "entities": {"customer_id": [1]}, "features": {"x9": [1.0]}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "unknown_feature",
            "\"x9\"",
        ),
        (
            "{\"model\": ".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "",
        ),
        (
            json!({"model": "m", "entites": {}}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
            "entites",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (got, answer) = call(&state, "POST", "/predict", &body).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body} → {message}");
    }
}

fn policy(text: &str) -> ServingConfig {
    let table: toml::Table = toml::from_str(text).unwrap();
    let section = feature_store::project::ModelSection {
        name: "m".into(),
        line: 1,
        table,
    };
    ServingConfig::from_sections("champion", &[section]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_policy_refuses_rows_with_missing_features() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |s| {
        s.with_config(policy("[serving]\nmissing_features = \"reject\""))
    });
    let body = json!({"model": "m", "entities": {"customer_id": [1]}}).to_string();
    let (status, answer) = call(&state, "POST", "/predict", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let body = json!({"model": "m", "entities": {"customer_id": [1, 3]}}).to_string();
    let (status, answer) = call(&state, "POST", "/predict", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["code"], "missing_features");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("row 1: v:x1 NotFound, v:x2 NotFound"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_batching_answers_as_single_inference_does() {
    let dir = tempfile::tempdir().unwrap();
    let plain = state(dir.path());
    let dir2 = tempfile::tempdir().unwrap();
    let batched = state_with(dir2.path(), |s| {
        s.with_config(policy(
            "[serving]\nbatch = { max_rows = 8, max_delay_us = 2000 }",
        ))
    });
    let body =
        |x1: f64| json!({"model": "m", "features": {"x1": [x1], "x2": [x1 / 2.0]}}).to_string();
    let mut calls = Vec::new();
    for i in 0..32 {
        let (batched, body) = (batched.clone(), body(f64::from(i)));
        calls.push(tokio::spawn(async move {
            call(&batched, "POST", "/predict", &body).await
        }));
    }
    for (i, handle) in calls.into_iter().enumerate() {
        let (status, answer) = handle.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (_, alone) = call(&plain, "POST", "/predict", &body(i as f64)).await;
        assert_eq!(
            answer["predictions"][0]["prediction"],
            alone["predictions"][0]["prediction"]
        );
    }
    // Concurrent requests shared inferences.
    let key = metrics::ArmKey {
        model: "m".into(),
        version: 1,
        arm: "latest".into(),
        shadow: false,
    };
    let requests = batched.metrics.arm(&key);
    assert_eq!(requests.batch_rows.count(), 32);
    let model = batched.models.get("m").unwrap();
    let inferences = model.batch_rows().unwrap();
    assert_eq!(inferences.sum(), 32.0);
    assert!(inferences.count() < 32, "{} inferences", inferences.count());
    let text = metrics_text(&batched).await;
    assert!(
        text.contains("aurum_batch_inference_rows_sum{model=\"m\",version=\"1\"} 32.0\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_and_slow_requests_time_out() {
    let dir = tempfile::tempdir().unwrap();
    // A lone request waits 100 ms in the batcher for company.
    let state = state_with(dir.path(), |s| {
        s.with_config(policy(
            "[serving]\nbatch = { max_rows = 64, max_delay_us = 100000 }",
        ))
        .with_limits(Limits {
            max_in_flight: 1,
            request_timeout: Duration::from_secs(10),
            ..Limits::default()
        })
    });
    let body = json!({"model": "m", "features": {"x1": [1.0], "x2": [2.0]}}).to_string();
    let first = {
        let (state, body) = (state.clone(), body.clone());
        tokio::spawn(async move { call(&state, "POST", "/predict", &body).await })
    };
    while state.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    let request = Request::builder()
        .method("POST")
        .uri("/predict")
        .body(Body::from(body.clone()))
        .unwrap();
    let shed = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(state.metrics.shed.load(Ordering::Relaxed), 1);

    let dir = tempfile::tempdir().unwrap();
    let slow = state_with(dir.path(), |s| {
        s.with_config(policy(
            "[serving]\nbatch = { max_rows = 64, max_delay_us = 100000 }",
        ))
        .with_limits(Limits {
            request_timeout: Duration::from_millis(10),
            ..Limits::default()
        })
    });
    let (status, answer) = call(&slow, "POST", "/predict", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 10 ms"),
        "{answer}"
    );
    assert_eq!(slow.metrics.timeouts.load(Ordering::Relaxed), 1);
}

/// Every route × {no token, unknown token, read, write, admin}: a missing
/// or unknown token is 401 (with `WWW-Authenticate`), a known one without
/// the route's role 403, the right role reaches the handler; probes and
/// the scrape stay open; the alias history records the token's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_role_when_tokens_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let (read, read_entry) = auth::new_token("dashboards", auth::Role::Read);
    let (write, write_entry) = auth::new_token("ingest", auth::Role::Write);
    let (admin, admin_entry) = auth::new_token("ops", auth::Role::Admin);
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, format!("{read_entry}{write_entry}{admin_entry}")).unwrap();
    let tokens = auth::Tokens::from_file(&file).unwrap();
    let state = state_with(&dir.path().join("registry"), |s| {
        s.with_limits(Limits {
            tokens,
            ..Limits::default()
        })
    });
    let send = |method: &str, uri: &str, token: Option<&str>| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from("{}")).unwrap();
        let app = app(state.clone());
        async move {
            let response = app.oneshot(request).await.unwrap();
            let challenged = response.headers().contains_key("www-authenticate");
            (response.status(), challenged)
        }
    };
    use auth::Role;
    let routes: &[(&str, &str, Option<Role>)] = &[
        ("GET", "/health/live", None),
        ("GET", "/health/ready", None),
        ("GET", "/metrics", None),
        ("POST", "/predict", Some(Role::Read)),
        ("POST", "/get-online-features", Some(Role::Read)),
        ("GET", "/feature-views", Some(Role::Read)),
        ("GET", "/drift/m", Some(Role::Read)),
        ("GET", "/v2", Some(Role::Read)),
        ("GET", "/v2/models/m", Some(Role::Read)),
        ("POST", "/v2/models/m/infer", Some(Role::Read)),
        (
            "GET",
            "/api/2.0/mlflow/registered-models/search",
            Some(Role::Read),
        ),
        ("POST", "/push", Some(Role::Write)),
        ("POST", "/write-to-online-store", Some(Role::Write)),
        ("POST", "/feedback", Some(Role::Write)),
        ("POST", "/materialize", Some(Role::Admin)),
        ("POST", "/materialize-incremental", Some(Role::Admin)),
        ("POST", "/admin/reload", Some(Role::Admin)),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/create",
            Some(Role::Admin),
        ),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            Some(Role::Admin),
        ),
    ];
    let denied = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN];
    for &(method, uri, needed) in routes {
        let (status, challenged) = send(method, uri, None).await;
        match needed {
            None => assert!(!denied.contains(&status), "{method} {uri}: {status}"),
            Some(_) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
                assert!(challenged, "{method} {uri}: no WWW-Authenticate");
                let (status, _) = send(method, uri, Some("guess")).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            }
        }
        for (token, role) in [
            (&read, Role::Read),
            (&write, Role::Write),
            (&admin, Role::Admin),
        ] {
            let (status, _) = send(method, uri, Some(token)).await;
            let allowed = needed.is_none_or(|needed| role >= needed);
            if allowed {
                assert!(
                    !denied.contains(&status),
                    "{method} {uri} with {role:?}: {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {uri} with {role:?}"
                );
            }
        }
    }

    // The alias history records who the token is, whatever a header says.
    let request = Request::builder()
        .method("POST")
        .uri("/api/2.0/mlflow/registered-models/alias")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {admin}"))
        .header("x-aurum-user", "someone-else")
        .body(Body::from(
            json!({"name": "m", "alias": "staging", "version": "1"}).to_string(),
        ))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let history = state.registry.alias_history("m").unwrap();
    assert_eq!(history.last().unwrap().who, "ops");

    let text = metrics_text(&state).await;
    assert!(
        text.contains(
            "aurum_http_errors_total{route=\"/admin/reload\",status=\"401\",code=\"unauthorized\"} 2\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains(&admin) && !text.contains(&read),
        "a token reached /metrics"
    );
}

/// State-changing routes take JSON only (a browser's cross-site form or
/// text post is refused with 415), and a server with a Host allow-list
/// refuses other names (DNS rebinding) while answering its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_cannot_post_or_rebind() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with(dir.path(), |s| {
        s.with_limits(Limits {
            allowed_hosts: Some(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]),
            ..Limits::default()
        })
    });
    let send = |uri: &str, host: &str, content_type: Option<&str>| {
        let mut request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("host", host);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request.body(Body::from("{}")).unwrap();
        let app = app(state.clone());
        async move { app.oneshot(request).await.unwrap().status() }
    };
    for uri in [
        "/push",
        "/feedback",
        "/admin/reload",
        "/api/2.0/mlflow/registered-models/create",
    ] {
        for content_type in [
            None,
            Some("text/plain;charset=UTF-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            assert_eq!(
                send(uri, "127.0.0.1:8080", content_type).await,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{uri} with {content_type:?}"
            );
        }
        let status = send(
            uri,
            "localhost:8080",
            Some("application/json; charset=utf-8"),
        )
        .await;
        assert_ne!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{uri}");
    }
    for host in ["127.0.0.1:8080", "localhost", "[::1]:8080", "LOCALHOST:1"] {
        assert_eq!(
            send("/admin/reload", host, Some("application/json")).await,
            StatusCode::OK,
            "{host}"
        );
    }
    for host in ["evil.example:8080", "attacker.test", ""] {
        assert_eq!(
            send("/admin/reload", host, Some("application/json")).await,
            StatusCode::FORBIDDEN,
            "{host}"
        );
    }
    // Reads still take clients that send no content type (tritonclient).
    let request = Request::builder()
        .method("POST")
        .uri("/v2/models/m/infer")
        .header("host", "127.0.0.1:8080")
        .body(Body::from("{\"inputs\": []}"))
        .unwrap();
    let status = app(state.clone()).oneshot(request).await.unwrap().status();
    assert_ne!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn metrics_text(state: &Arc<AppState>) -> String {
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[axum::http::header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    // An OpenMetrics exposition is complete only with its closing line.
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    assert_eq!(
        call(&state, "GET", "/health/live", "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&state, "GET", "/health/ready", "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.set_ready(true);
    assert_eq!(
        call(&state, "GET", "/health/ready", "").await.0,
        StatusCode::OK
    );
}

/// A push with headers, answering the status, the replay header and the
/// body.
async fn keyed_push(
    state: &Arc<AppState>,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, bool, Value) {
    let mut request = Request::builder()
        .method("POST")
        .uri("/push")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app(state.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let replayed = response
        .headers()
        .get(crate::idempotency::REPLAYED)
        .is_some();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        replayed,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_push_applies_once_and_answers_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let now = chrono::Utc::now().to_rfc3339();
    let body = |x1: f64| {
        json!({"push_source_name": "v", "df": {"customer_id": [7], "ts": [now], "x1": [x1], "x2": [1.0]}})
            .to_string()
    };
    let accepted = |state: Arc<AppState>| async move {
        let text = metrics_text(&state).await;
        text.lines()
            .find_map(|l| l.strip_prefix("aurum_push_rows_accepted_total "))
            .unwrap_or("0")
            .to_string()
    };

    let key = [("idempotency-key", "push-1")];
    let (status, replayed, first) = keyed_push(&state, &key, &body(1.0)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(!replayed);
    // The retry is answered the first answer, and applies nothing.
    let (status, replayed, again) = keyed_push(&state, &key, &body(1.0)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(replayed);
    assert_eq!(again, first);
    assert_eq!(accepted(state.clone()).await, "1");
    // The same key for another body is refused, and applies nothing.
    let (status, _, refused) = keyed_push(&state, &key, &body(2.0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("push-1")
    );
    assert_eq!(accepted(state.clone()).await, "1");

    // Retries racing the first: one applies, all get its answer.
    let racing = [("idempotency-key", "push-2")];
    let same = body(3.0);
    let answers =
        futures::future::join_all((0..8).map(|_| keyed_push(&state, &racing, &same))).await;
    assert!(
        answers
            .iter()
            .all(|(s, _, a)| *s == StatusCode::OK && *a == answers[0].2)
    );
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1
    );
    assert_eq!(accepted(state.clone()).await, "2");

    // A client's own request id is a key too; without either, each push
    // applies.
    let id = [("x-request-id", "client-chose-this")];
    keyed_push(&state, &id, &body(4.0)).await;
    let (_, replayed, _) = keyed_push(&state, &id, &body(4.0)).await;
    assert!(replayed);
    keyed_push(&state, &[], &body(5.0)).await;
    keyed_push(&state, &[], &body(5.0)).await;
    assert_eq!(accepted(state.clone()).await, "5");

    // A refusal for the body's content is kept too (a retry would not
    // change it); a key that is not visible ASCII is refused.
    let bad = json!({"push_source_name": "v", "df": {"customer_id": [7]}}).to_string();
    let refusal = [("idempotency-key", "bad-1")];
    let (status, _, _) = keyed_push(&state, &refusal, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, replayed, _) = keyed_push(&state, &refusal, &bad).await;
    assert_eq!((status, replayed), (StatusCode::BAD_REQUEST, true));
    let long = "k".repeat(300);
    let (status, _, answer) =
        keyed_push(&state, &[("idempotency-key", long.as_str())], &body(6.0)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "invalid_idempotency_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_loaded_on_demand_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let input = oip_metadata(&state).await;
    let v1 = state.registry.version("m", 1).unwrap();
    let bytes = state.registry.model_bytes(&v1).unwrap();
    let last = crate::inference::MAX_ON_DEMAND_VERSIONS + 4;
    for _ in 2..=last {
        let new = registry::NewVersion {
            features: v1.features.clone(),
            ..registry::NewVersion::default()
        };
        state.registry.register("m", &bytes, new).unwrap();
    }
    // Version 1 is served; every other one is loaded on demand.
    for version in 2..=last {
        let (status, answer) = call(
            &state,
            "POST",
            &format!("/v2/models/m/versions/{version}/infer"),
            &oip_body(&input, json!([1.0, 2.0]), json!([1, 2]), "FP32"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "version {version}: {answer}");
        assert_eq!(answer["model_version"], json!(version.to_string()));
    }
    let kept = state.models.on_demand();
    assert!(
        kept <= crate::inference::MAX_ON_DEMAND_VERSIONS,
        "{kept} versions kept"
    );
    // An evicted version loads again when asked.
    let (status, answer) = call(
        &state,
        "POST",
        "/v2/models/m/versions/2/infer",
        &oip_body(&input, json!([1.0, 2.0]), json!([1, 2]), "FP32"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
