//! Random bodies at every route, with and without tokens of each role and
//! idempotency keys: whatever a client sends, the answer is never a 5xx (a
//! client mistake is a 4xx naming it) and never a panic.

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

use super::*;

/// Every route with the methods it answers to.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/predict"),
    ("POST", "/get-online-features"),
    ("POST", "/push"),
    ("POST", "/write-to-online-store"),
    ("POST", "/feedback"),
    ("GET", "/drift/m"),
    ("POST", "/materialize"),
    ("POST", "/materialize-incremental"),
    ("POST", "/admin/reload"),
    ("GET", "/feature-views"),
    ("GET", "/metrics"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/v2"),
    ("GET", "/v2/models/m"),
    ("GET", "/v2/models/m/ready"),
    ("POST", "/v2/models/m/infer"),
    ("POST", "/v2/models/m/versions/1/infer"),
    ("GET", "/v2/models/m/versions/1"),
    ("POST", "/api/2.0/mlflow/registered-models/create"),
    ("GET", "/api/2.0/mlflow/registered-models/get?name=m"),
    ("POST", "/api/2.0/mlflow/registered-models/search"),
    ("PATCH", "/api/2.0/mlflow/registered-models/update"),
    ("POST", "/api/2.0/mlflow/registered-models/rename"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete"),
    ("POST", "/api/2.0/mlflow/registered-models/set-tag"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete-tag"),
    ("POST", "/api/2.0/mlflow/registered-models/alias"),
    ("DELETE", "/api/2.0/mlflow/registered-models/alias"),
    (
        "GET",
        "/api/2.0/mlflow/registered-models/alias?name=m&alias=champion",
    ),
    (
        "POST",
        "/api/2.0/mlflow/registered-models/get-latest-versions",
    ),
    ("POST", "/api/2.0/mlflow/model-versions/create"),
    ("GET", "/api/2.0/mlflow/model-versions/get?name=m&version=1"),
    ("POST", "/api/2.0/mlflow/model-versions/search"),
    ("PATCH", "/api/2.0/mlflow/model-versions/update"),
    ("DELETE", "/api/2.0/mlflow/model-versions/delete"),
    ("POST", "/api/2.0/mlflow/model-versions/set-tag"),
    ("DELETE", "/api/2.0/mlflow/model-versions/delete-tag"),
];

/// Field names the routes read, so random objects often get past the
/// first checks and reach the deeper ones.
const KEYS: &[&str] = &[
    "model",
    "entities",
    "features",
    "customer_id",
    "full_feature_names",
    "feature_service",
    "push_source_name",
    "df",
    "to",
    "allow_partial",
    "inputs",
    "outputs",
    "name",
    "shape",
    "datatype",
    "data",
    "parameters",
    "id",
    "version",
    "alias",
    "filter",
    "max_results",
    "page_token",
    "source",
    "tags",
    "key",
    "value",
    "description",
    "new_name",
    "run_id",
    "x1",
    "x2",
    "ts",
    "v:x1",
    "views",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..30).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "m",
            "v:x1",
            "v:x2",
            "x1",
            "FP32",
            "INT64",
            "BOOL",
            "champion",
            "1",
            "",
            "online",
            "offline",
            "v",
            "2026-01-01T00:00:00Z",
            "../../etc/passwd",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// Bodies of the right shape with wrong parts: they reach the checks
/// behind the JSON schema (shapes, types, counts, values).
fn near_valid() -> impl Strategy<Value = Value> {
    let column = || prop::collection::vec(leaf(), 0..4);
    prop_oneof![
        (column(), column(), column()).prop_map(|(keys, x1, x2)| {
            serde_json::json!({"model": "m", "entities": {"customer_id": keys},
                               "features": {"x1": x1, "v:x2": x2}})
        }),
        (
            column(),
            prop::collection::vec(-2i64..4, 0..3),
            leaf(),
            json()
        )
            .prop_map(|(data, shape, datatype, outputs)| {
                serde_json::json!({"id": "f", "inputs": [{"name": "input", "shape": shape,
                    "datatype": datatype, "data": data}], "outputs": outputs})
            }),
        (column(), column()).prop_map(|(keys, x1)| {
            serde_json::json!({"push_source_name": "v", "to": "online",
                "df": {"customer_id": keys, "ts": ["2026-01-01T00:00:00Z"], "x1": x1, "x2": [1.0]}})
        }),
        (leaf(), leaf(), leaf()).prop_map(|(name, version, alias)| {
            serde_json::json!({"name": name, "version": version, "alias": alias,
                               "source": version, "key": alias, "value": name})
        }),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json().prop_map(|v| v.to_string().into_bytes()),
        3 => near_valid().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..48),
    ]
}

/// The tokens the fuzzed server knows, one per role.
const TOKENS: &[(&str, auth::Role)] = &[
    ("fuzz-read", auth::Role::Read),
    ("fuzz-write", auth::Role::Write),
    ("fuzz-admin", auth::Role::Admin),
];

#[test]
fn random_bodies_at_every_route_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // With tokens, so the role checks and the idempotency layer are in the
    // path too; most cases carry the admin token, which every route takes.
    let state = {
        let _inside = runtime.enter();
        state_with(dir.path(), |s| {
            let mut tokens = auth::Tokens::none();
            for (token, role) in TOKENS {
                tokens = tokens.with_token(
                    token,
                    auth::Identity {
                        name: token.to_string(),
                        role: *role,
                    },
                );
            }
            s.with_limits(Limits {
                tokens,
                ..Limits::default()
            })
        })
    };
    state.set_ready(true);
    let config = proptest::test_runner::Config {
        cases: 4_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    let token = prop_oneof![
        1 => Just(None),
        1 => Just(Some("fuzz-read")),
        1 => Just(Some("fuzz-write")),
        1 => Just(Some("fuzz-guess")),
        6 => Just(Some("fuzz-admin")),
    ];
    proptest!(config, |(
        route in 0..ROUTES.len(),
        body in body(),
        arm in prop::option::of("[a-z]{0,3}"),
        token in token,
        key in prop::option::of("[ -~]{0,4}"),
    )| {
        let (method, uri) = ROUTES[route];
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(arm) = &arm {
            request = request.header(crate::inference::ARM_HEADER, arm.as_str());
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(key) = &key {
            request = request.header(crate::idempotency::IDEMPOTENCY_KEY, key.as_str());
        }
        let request = request.body(Body::from(body.clone())).unwrap();
        let response = runtime.block_on(app(state.clone()).oneshot(request)).unwrap();
        let status = response.status();
        let text = runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 22))
            .unwrap();
        prop_assert!(
            !status.is_server_error(),
            "{method} {uri} with {} answered {status}: {}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&text)
        );
    });
}
