use super::*;

fn error(text: &str) -> String {
    Project::parse(text, Path::new("aurum.toml"), Path::new("."))
        .unwrap_err()
        .to_string()
}

const BASE: &str = r#"[project]
name = "t"

[[entity]]
name = "customer"
join_keys = ["customer_id"]

[[source]]
name = "tx"
format = "csv"
path = "x/*.csv"
timestamp = "ts"
columns = [
  { name = "customer_id", type = "int64" },
  { name = "amount", type = "float64" },
  { name = "ts", type = "timestamp" },
]

[[feature_view]]
name = "v"
entity = "customer"
source = "tx"
ttl = "1d"
windows = ["1h"]

[[feature_view.aggregation]]
column = "amount"
functions = ["sum"]
"#;

#[test]
fn a_valid_file_loads() {
    let p = Project::parse(BASE, Path::new("aurum.toml"), Path::new("/p")).unwrap();
    assert_eq!(p.view("v").unwrap().feature_names(), vec!["amount_sum_1h"]);
    let with_service = format!("{BASE}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"v\"]\n");
    let p = Project::parse(&with_service, Path::new("aurum.toml"), Path::new("/p")).unwrap();
    assert_eq!(p.feature_services[0].features, vec!["v:amount_sum_1h"]);
    assert_eq!(p.data_dir, Path::new("/p/data"));
}

#[test]
fn errors_name_line_and_field() {
    for (from, to, expected) in [
        (
            "ttl = \"1d\"",
            "ttl = \"1 day\"",
            "aurum.toml:23: feature_view[0].ttl: \"1 day\" is not a duration",
        ),
        (
            "type = \"float64\"",
            "type = \"float\" , oops = 1",
            "aurum.toml:15: unknown field `oops`",
        ),
        (
            "functions = [\"sum\"]",
            "functions = [\"median\"]",
            "aurum.toml:28: feature_view[0].aggregation[0].functions: unknown aggregation \"median\"",
        ),
        (
            "source = \"tx\"",
            "source = \"txs\"",
            "aurum.toml:22: feature_view[0].source: no source named \"txs\"",
        ),
        (
            "timestamp = \"ts\"",
            "timestamp = \"amount\"",
            "aurum.toml:12: source[0].timestamp: \"amount\" must have type timestamp",
        ),
        ("name = \"t\"\n", "", "missing field `name`"),
        (
            "functions = [\"sum\"]\n",
            "functions = [\"sum\"]\n[[feature_service]]\nname = \"s\"\nfeatures = [\"v:amount_sum_1d\"]\n",
            "aurum.toml:31: feature_service[0].features: \"v:amount_sum_1d\": feature view \"v\" has no feature \"amount_sum_1d\"",
        ),
        (
            "{ name = \"ts\", type = \"timestamp\" }",
            "{ name = \"ts\", type = \"decimal(3,4)\" }",
            "source[0].columns[2].type: unknown type",
        ),
    ] {
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "{from}");
        let e = error(&text);
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
}

#[test]
fn durations_round_trip() {
    for text in ["90s", "30m", "1h", "7d"] {
        assert_eq!(format_duration(parse_duration(text).unwrap()), text);
    }
    assert_eq!(format_duration(parse_duration("2w").unwrap()), "14d");
    assert!(parse_duration("0d").is_none());
    assert!(parse_duration("1y").is_none());
    assert!(parse_duration("3651d").is_none());
    assert!(parse_duration("99999999999999999w").is_none());
}

#[test]
fn delta_sources_take_store_options_of_their_own_or_the_projects() {
    let delta_source = |path: &str, options: &str| {
        BASE.replace("format = \"csv\"", "format = \"delta\"")
            .replace("path = \"x/*.csv\"", &format!("path = \"{path}\"{options}"))
    };
    let storage = "\n[storage]\nuri = \"s3://lake/shop\"\noptions = { endpoint = \"http://127.0.0.1:9000\", allow_http = \"true\" }\n";
    let parse = |text: &str| Project::parse(text, Path::new("aurum.toml"), Path::new("/p"));

    // Same scheme as [storage], no options of its own: the project's.
    let p = parse(&format!("{}{storage}", delta_source("s3://raw/tx", ""))).unwrap();
    assert_eq!(p.sources[0].options, p.storage.as_ref().unwrap().options);
    // Its own options win.
    let own = delta_source("s3://raw/tx", "\noptions = { region = \"eu-west-1\" }");
    let p = parse(&format!("{own}{storage}")).unwrap();
    assert_eq!(
        p.sources[0].options,
        std::collections::BTreeMap::from([("region".to_string(), "eu-west-1".to_string())])
    );
    // Another scheme, or a local table: none.
    let p = parse(&format!("{}{storage}", delta_source("az://raw/tx", ""))).unwrap();
    assert!(p.sources[0].options.is_empty());
    let p = parse(&format!("{}{storage}", delta_source("tables/tx", ""))).unwrap();
    assert!(p.sources[0].options.is_empty());

    // A secret is refused by name, and options are for Delta sources only.
    let secret = delta_source(
        "s3://raw/tx",
        "\noptions = { aws_secret_access_key = \"s3cr3t\" }",
    );
    let message = error(&secret);
    assert!(message.contains("source[0].options"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
    let csv = BASE.replace(
        "path = \"x/*.csv\"",
        "path = \"x/*.csv\"\noptions = { region = \"eu-west-1\" }",
    );
    let message = error(&csv);
    assert!(message.contains("only for a Delta source"), "{message}");
}

#[test]
fn the_online_store_section_is_read_and_checked() {
    let parse = |text: &str| Project::parse(text, Path::new("aurum.toml"), Path::new("/p"));
    let p = parse(BASE).unwrap();
    assert_eq!(p.online_store, OnlineStoreSpec::default());
    assert_eq!(p.online_store.backend, OnlineBackendKind::Memory);
    let p = parse(&format!(
        "{BASE}\n[online_store]\nbackend = \"redis\"\ncluster = true\n"
    ))
    .unwrap();
    assert_eq!(
        p.online_store,
        OnlineStoreSpec {
            backend: OnlineBackendKind::Redis,
            cluster: true
        }
    );
    // A misspelt backend and a URL (it holds a password) are refused.
    let err = error(&format!("{BASE}\n[online_store]\nbackend = \"redsi\"\n"));
    assert!(err.contains("redsi"), "{err}");
    let err = error(&format!(
        "{BASE}\n[online_store]\nbackend = \"redis\"\nurl = \"redis://:pw@h\"\n"
    ));
    assert!(err.contains("url"), "{err}");
}

fn kafka_project(kafka: &str) -> String {
    BASE.replace("format = \"csv\"\npath = \"x/*.csv\"", "format = \"kafka\"")
        .replace(
            "\n[[feature_view]]",
            &format!("\n[source.kafka]\n{kafka}\n\n[[feature_view]]"),
        )
}

#[test]
fn a_kafka_source_loads_with_its_settings() {
    let text = kafka_project(
        "bootstrap_servers = \"127.0.0.1:9092, 127.0.0.1:9093\"\ntopic = \"payments.v1\"\ncommit_interval = \"250ms\"\nlateness = \"10m\"\nsecurity_protocol = \"SASL_SSL\"\nsasl_username = \"$ConnectionString\"\nsasl_password_env = \"EVENTHUBS_CONNECTION_STRING\"",
    );
    let p = Project::parse(&text, Path::new("aurum.toml"), Path::new("/p")).unwrap();
    let source = p.source("tx").unwrap();
    assert_eq!(source.format, Format::Kafka);
    assert_eq!(source.path, "kafka:payments.v1");
    let kafka = source.kafka.as_ref().unwrap();
    assert_eq!(kafka.bootstrap_servers, "127.0.0.1:9092, 127.0.0.1:9093");
    assert_eq!(kafka.commit_interval, std::time::Duration::from_millis(250));
    assert_eq!(kafka.lateness, std::time::Duration::from_secs(600));
    assert_eq!(kafka.security_protocol, SecurityProtocol::SaslSsl);
    assert_eq!(kafka.sasl_mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(kafka.start, StartAt::Earliest);
    assert_eq!(kafka.max_batch_events, DEFAULT_MAX_BATCH_EVENTS);
    // The brokers are not part of the silver definition.
    let moved = text.replace("127.0.0.1:9093", "127.0.0.1:9094");
    let q = Project::parse(&moved, Path::new("aurum.toml"), Path::new("/p")).unwrap();
    assert_eq!(
        crate::pipeline::silver_hash(q.source("tx").unwrap()),
        crate::pipeline::silver_hash(source)
    );
}

#[test]
fn avro_sources_name_their_schema_and_every_column_is_a_field_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aurum.toml");
    let schema = r#"{"type": "record", "name": "Tx", "fields": [
        {"name": "customer_id", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "extra", "type": "string"}]}"#;
    std::fs::write(dir.path().join("tx.avsc"), schema).unwrap();
    std::fs::write(
        dir.path().join("short.avsc"),
        r#"{"type": "record", "name": "Tx", "fields": [{"name": "amount", "type": "double"}]}"#,
    )
    .unwrap();
    let parse = |kafka: &str| Project::parse(&kafka_project(kafka), &path, dir.path());
    let base = "bootstrap_servers = \"h:1\"\ntopic = \"t\"";
    let p = parse(&format!(
        "{base}\nvalue_format = \"avro_confluent\"\navro_schema = \"tx.avsc\"\navro_schema_id = 12"
    ))
    .unwrap();
    let kafka = p.sources[0].kafka.as_ref().unwrap();
    assert_eq!(kafka.value_format, ValueFormat::AvroConfluent);
    assert_eq!(kafka.avro_schema.as_deref(), Some(schema));
    assert_eq!(kafka.avro_schema_id, Some(12));
    for (kafka, expected) in [
        (
            "value_format = \"avro\"",
            "the Avro formats need avro_schema",
        ),
        (
            "value_format = \"avro\"\navro_schema = \"missing.avsc\"",
            "cannot read",
        ),
        (
            "value_format = \"avro\"\navro_schema = \"short.avsc\"",
            "declared column \"customer_id\" is not a field of the record",
        ),
        (
            "value_format = \"avro_confluent\"\navro_schema = \"tx.avsc\"",
            "needs avro_schema_id",
        ),
        (
            "avro_schema = \"tx.avsc\"",
            "a schema is only for value_format",
        ),
        (
            "value_format = \"avro\"\navro_schema = \"tx.avsc\"\navro_schema_id = 3",
            "only carried by value_format = \"avro_confluent\"",
        ),
    ] {
        let err = parse(&format!("{base}\n{kafka}")).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}\nexpected: {expected}");
    }
}

#[test]
fn kafka_settings_that_cannot_work_are_named() {
    for (kafka, expected) in [
        (
            "bootstrap_servers = \"localhost\"\ntopic = \"t\"",
            "source[0].kafka.bootstrap_servers: \"localhost\" is not host:port",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"a/b\"",
            "source[0].kafka.topic: \"a/b\" is not a Kafka topic name",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"t\"\nsasl_password = \"hunter2\"",
            "source[0].kafka.sasl_password: a password is never written in aurum.toml",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"t\"\nsecurity_protocol = \"sasl_ssl\"",
            "needs sasl_username and sasl_password_env",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"t\"\nvalue_format = \"protobuf\"",
            "source[0].kafka.value_format: \"protobuf\" is not a value format",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"t\"\nstart = \"middle\"",
            "source[0].kafka.start: \"middle\" is not a start position",
        ),
        (
            "bootstrap_servers = \"h:1\"\ntopic = \"t\"\nsasl_mechanism = \"PLAIN\"",
            "a SASL mechanism needs security_protocol",
        ),
    ] {
        let err = error(&kafka_project(kafka));
        assert!(err.contains(expected), "{err}\nexpected: {expected}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let no_table = BASE.replace("format = \"csv\"\npath = \"x/*.csv\"", "format = \"kafka\"");
    assert!(error(&no_table).contains("needs a [source.kafka] table"));
    let no_path = BASE.replace("path = \"x/*.csv\"\n", "");
    assert!(error(&no_path).contains("source[0].path: a file or Delta source needs a path"));
    let stray = BASE.replace(
        "\n[[feature_view]]",
        "\n[source.kafka]\nbootstrap_servers = \"h:1\"\ntopic = \"t\"\n\n[[feature_view]]",
    );
    assert!(error(&stray).contains("only for a Kafka source"));
}
