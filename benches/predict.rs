//! The `/predict` hot path on the demo project, stage by stage: the ONNX
//! Runtime call alone (the baseline), the online-store lookup, and a whole
//! `/predict` request through the axum router in-process (JSON in and out,
//! lookups, tensor assembly, inference).
//!
//! Run with `cargo bench --bench predict` (release profile), or with
//! `cargo bench --profile dev --bench predict` to reuse the test build.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aurum::demo_project::{self, DemoOptions};
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn predict_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let options = DemoOptions {
        rows: 20_000,
        seed: 42,
        end_micros: now_micros(),
    };
    let project = runtime
        .block_on(demo_project::build(dir.path(), &options, &|_| {}))
        .expect("building the demo project");
    let state = project.state;
    let model = state.models.get(demo_project::MODEL).expect("model loaded");
    let features = model.version.features.clone();
    let one_key = vec!["17".to_string()];
    let hundred_keys: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let row: Vec<f32> = state
        .online
        .get(&features, &one_key, now_micros())
        .expect("lookup")
        .rows[0]
        .iter()
        .map(|(v, _)| v.as_f64().map_or(f32::NAN, |v| v as f32))
        .collect();

    let mut group = c.benchmark_group("predict");
    group.bench_function("onnx_runtime_1_row", |b| {
        b.iter(|| model.predict(black_box(row.clone()), 1).expect("inference"))
    });
    group.bench_function("online_get_1_entity", |b| {
        b.iter(|| {
            state
                .online
                .get(black_box(&features), black_box(&one_key), now_micros())
                .expect("lookup")
        })
    });
    // One router, cloned per request as axum does per connection.
    let router = serving::app(state.clone());
    for (name, keys) in [
        ("http_1_entity", &one_key),
        ("http_100_entities", &hundred_keys),
    ] {
        let ids: Vec<i64> = keys.iter().map(|k| k.parse().unwrap_or(0)).collect();
        let body = serde_json::json!({
            "model": demo_project::MODEL,
            "entities": {"customer_id": ids},
        })
        .to_string();
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let request = Request::post("/predict")
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .expect("request");
                    let response = router.clone().oneshot(request).await.expect("response");
                    assert!(response.status().is_success());
                    axum::body::to_bytes(response.into_body(), 1 << 20)
                        .await
                        .expect("body")
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, predict_path);
criterion_main!(benches);
