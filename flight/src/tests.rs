//! Random commands at every Flight call that takes one (`DoGet`'s ticket,
//! `GetFlightInfo`'s and `GetSchema`'s descriptor): whatever a client
//! sends, the answer is never a server error (`INTERNAL`, `UNKNOWN`) and
//! never a panic; a client's mistake is a status naming it.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{FlightDescriptor, Ticket};
use feature_store::OnlineStore;
use feature_store::online::push::Pusher;
use feature_store::testing::ViewFixture;
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tonic::{Code, Request, Status};

use crate::FlightServer;

fn server() -> FlightServer {
    let online = Arc::new(OnlineStore::new(1 << 20));
    online.register_view(
        ViewFixture::customer("v")
            .features(["x1", "x2"])
            .float64()
            .build(),
    );
    let pusher = Arc::new(Pusher::online_only(online.clone()));
    FlightServer::new(online, pusher)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![
            Just("v".to_string()),
            Just("v:x1".to_string()),
            Just("customer_id".to_string()),
            Just("2026-01-01T00:00:00Z".to_string()),
            "[ -~]{0,12}",
        ]
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Commands close to aurum's and Feast's, so random ones get past the
/// first checks.
fn command() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("feature_view"),
        Just("online_features"),
        Just("training_set"),
        Just("push"),
        Just("nope")
    ];
    let near = (
        name,
        leaf(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(command, name, features, entities, version, window)| {
            json!({"command": command, "name": name, "feature_view": name,
                   "features": features, "feature_service": name, "entities": entities,
                   "version": version, "start": window, "end": window,
                   "timestamp_column": name})
        });
    let feast = (leaf(), json_value()).prop_map(|(api, refs)| {
        json!({"command_id": "c", "api": api, "feature_view_names": refs,
               "feature_refs": refs, "project": "p", "full_feature_names": false})
    });
    prop_oneof![
        3 => near.prop_map(|v| v.to_string().into_bytes()),
        1 => feast.prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ]
}

fn is_server_error(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Internal | Code::Unknown | Code::DataLoss
    )
}

#[test]
fn random_commands_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = server();
    let config = proptest::test_runner::Config {
        cases: 2_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    proptest!(config, |(bytes in command(), call in 0..3usize)| {
        let outcome: Result<(), Status> = runtime.block_on(async {
            match call {
                0 => {
                    let ticket = Ticket::new(bytes.clone());
                    let mut stream = server.do_get(Request::new(ticket)).await?.into_inner();
                    while let Some(item) = stream.next().await {
                        item?;
                    }
                }
                1 => {
                    let descriptor = FlightDescriptor::new_cmd(bytes.clone());
                    server.get_flight_info(Request::new(descriptor)).await?;
                }
                _ => {
                    let descriptor = FlightDescriptor::new_cmd(bytes.clone());
                    server.get_schema(Request::new(descriptor)).await?;
                }
            }
            Ok(())
        });
        if let Err(status) = outcome {
            prop_assert!(
                !is_server_error(&status),
                "call {call} with {} answered {:?}: {}",
                String::from_utf8_lossy(&bytes),
                status.code(),
                status.message()
            );
        }
    });
}

#[tokio::test]
async fn a_streamed_answer_ends_at_the_call_deadline() {
    use std::time::Duration;
    let server = server();
    let soon = tokio::time::Instant::now() + Duration::from_millis(50);
    let never = futures::stream::pending::<Result<u32, Status>>().boxed();
    let items: Vec<_> = server.within(never, soon).collect().await;
    assert_eq!(items.len(), 1);
    let status = items[0].as_ref().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("--flight-call-timeout-secs"));

    let later = tokio::time::Instant::now() + Duration::from_secs(30);
    let quick = futures::stream::iter([Ok(1u32), Ok(2)]).boxed();
    let items: Vec<u32> = server
        .within(quick, later)
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items, [1, 2]);
}
