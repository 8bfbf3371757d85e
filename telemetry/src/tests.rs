use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;

fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, Error> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn tracing_is_off_unless_an_endpoint_or_the_exporter_asks_for_it() {
    assert!(settings(&[]).unwrap().is_none());
    assert!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap().is_none());
    let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
        .unwrap()
        .unwrap();
    assert_eq!(on.protocol, Protocol::HttpProtobuf);
    let on = settings(&[("OTEL_TRACES_EXPORTER", "otlp")])
        .unwrap()
        .unwrap();
    assert_eq!(on.max_queue, 2048);
    assert!(
        settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])
        .unwrap()
        .is_none()
    );
    assert!(
        settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_EXPORTER", "none")
        ])
        .unwrap()
        .is_none()
    );
}

#[test]
fn the_protocol_and_batching_come_from_their_variables() {
    let s = settings(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(s.protocol, Protocol::Grpc);
    assert_eq!(s.delay, Duration::from_millis(200));
    assert_eq!(s.max_queue, 64);
    // A batch is never larger than the queue.
    assert_eq!(s.max_batch, 64);
}

#[test]
fn values_tracing_cannot_use_are_errors_that_name_the_variable() {
    let e = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ])
    .unwrap_err();
    assert!(
        e.to_string().starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"),
        "{e}"
    );
    let e = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
    assert!(e.to_string().contains("zipkin"), "{e}");
    let e = settings(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("OTEL_BSP_SCHEDULE_DELAY"), "{e}");
}

#[test]
fn urls_in_messages_lose_their_credentials_and_queries() {
    assert_eq!(
        export::redact(
            "error sending request for url (https://user:secret@otel.example:4318/v1/traces?key=abc)"
        ),
        "error sending request for url (https://otel.example:4318/v1/traces)"
    );
    assert_eq!(
        export::redact("http://h:1?token=x and http://a@b/c"),
        "http://h:1 and http://b/c"
    );
    assert_eq!(export::redact("no url here"), "no url here");
}

/// The one test that sets tracing up (it is once per process): a collector
/// that is not there costs the work nothing — spans are made, the exports
/// fail, and the spans are counted as dropped.
#[test]
fn a_collector_that_is_down_drops_and_counts_spans_without_blocking() {
    // A collector that takes connections and never answers: exports wait
    // for their timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut settings = Settings::new(Protocol::HttpProtobuf);
    settings.endpoint = Some(format!("http://127.0.0.1:{port}/v1/traces"));
    settings.delay = Duration::from_millis(10);
    settings.export_timeout = Duration::from_secs(1);
    let tracing = init_with("aurum-test", settings).unwrap();
    assert!(enabled());
    assert!(matches!(
        init_with("again", Settings::new(Protocol::Grpc)),
        Err(Error::AlreadySet)
    ));

    let started = Instant::now();
    let root = Trace::incoming(
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        None,
        || "POST /predict".to_string(),
    );
    assert_eq!(
        root.trace_id().as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c"),
        "a valid traceparent is continued"
    );
    let headers = root.headers();
    assert_eq!(headers[0].0, "traceparent");
    assert!(
        headers[0]
            .1
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
    );
    let child = root.child("inference");
    child.set("aurum.rows", 1_i64);
    child.end();
    root.end();
    let fresh = Trace::incoming(Some("00-not-a-trace-context"), None, || "GET /x".into());
    // A caller that did not sample its trace is followed: nothing recorded.
    let unsampled = Trace::incoming(
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        None,
        || unreachable!("an unrecorded call's name is never made"),
    );
    assert!(!unsampled.is_on());
    let fresh_id = fresh.trace_id().expect("sampled by the default sampler");
    assert_ne!(fresh_id, "0af7651916cd43dd8448eb211c80319c");
    fresh.end();
    {
        let run = Trace::root("aurum pipeline");
        let _attached = run.attach();
        let stage = Trace::step("silver");
        assert_eq!(stage.trace_id(), run.trace_id());
    }
    assert!(Trace::current().trace_id().is_none());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "making spans waited on the exporter"
    );

    drop(tracing);
    let stats = stats();
    assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    // At least the first batch failed and was counted; the rest either
    // failed too or was still queued when the bounded shutdown gave up.
    let dropped = stats.dropped_export_failed.load(Ordering::Relaxed);
    assert!(
        (1..=5).contains(&dropped),
        "{dropped} spans counted as dropped"
    );
    assert!(stats.export_failures.load(Ordering::Relaxed) >= 1);
}

#[test]
fn samplers_are_read_from_their_variables() {
    let on = |vars: &[(&str, &str)]| {
        let mut all = vec![("OTEL_TRACES_EXPORTER", "otlp")];
        all.extend_from_slice(vars);
        settings(&all).map(|s| s.unwrap().sampler)
    };
    assert_eq!(on(&[]).unwrap(), Sampling::always());
    assert_eq!(
        on(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01")
        ])
        .unwrap(),
        Sampling::ratio(0.01)
    );
    let plain = on(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ])
    .unwrap();
    assert_eq!((plain.ratio, plain.parent_based), (0.5, false));
    let off = on(&[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
    assert_eq!(off.ratio, 0.0);
    let e = on(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
    ])
    .unwrap_err();
    assert!(e.to_string().starts_with("OTEL_TRACES_SAMPLER_ARG"), "{e}");
    let e = on(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]).unwrap_err();
    assert!(e.to_string().contains("jaeger_remote"), "{e}");
}
