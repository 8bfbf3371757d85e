//! `[source.kafka]`: a source whose events arrive on a Kafka topic (or an
//! Azure Event Hub through its Kafka endpoint) instead of in files.
//!
//! The file holds everything but secrets: a SASL password (for Event Hubs,
//! the connection string) is read from the environment variable
//! `sasl_password_env` names, when the consumer starts.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::checker::Checker;
use super::duration::parse_duration;
use crate::error::Result;

/// A checked `[source.kafka]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSpec {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// The topic.
    pub topic: String,
    /// The consumer group (`None`: `aurum.{project}.{source}`).
    pub group: Option<String>,
    /// How event values are encoded.
    pub value_format: ValueFormat,
    /// The Avro schema events are written with (its JSON text, read from
    /// the file `avro_schema` names), for the Avro formats.
    pub avro_schema: Option<String>,
    /// With `avro_confluent`: the Schema Registry id of `avro_schema`;
    /// events carrying another id are not decoded.
    pub avro_schema_id: Option<u32>,
    /// Where a partition with no landed events starts.
    pub start: StartAt,
    /// Who decides which partitions a consumer reads.
    pub assignment: Assignment,
    /// How long after its event time an event may still arrive (the
    /// declared lateness window aggregations honour).
    pub lateness: Duration,
    /// The transport and authentication.
    pub security_protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols only).
    pub sasl_mechanism: Option<String>,
    /// The SASL user (`$ConnectionString` for Event Hubs).
    pub sasl_username: Option<String>,
    /// The environment variable holding the SASL password.
    pub sasl_password_env: Option<String>,
    /// A PEM file of CA certificates to trust (TLS protocols; the system's
    /// when absent).
    pub ssl_ca_location: Option<String>,
    /// The longest an event waits in memory before its bronze commit.
    pub commit_interval: Duration,
    /// The most events one bronze commit holds.
    pub max_batch_events: usize,
}

/// How event values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// One JSON object per event; declared columns are its keys.
    Json,
    /// One Avro binary datum per event (no framing), a record of the
    /// declared schema; declared columns are its fields.
    Avro,
    /// Confluent Schema Registry's framing: a zero byte, the schema id
    /// (4 bytes, big-endian), then the Avro datum, decoded with the
    /// declared schema (the registry is not asked).
    AvroConfluent,
}

/// Where a partition with no landed events starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest event the broker keeps.
    Earliest,
    /// Events produced after the consumer joined.
    Latest,
}

/// Who decides which partitions a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The consumer group: several consumers share the partitions, and
    /// the brokers move them when one joins or leaves.
    Group,
    /// This consumer reads every partition itself, with no group
    /// membership (offsets are still committed under the group for lag
    /// tools). For one consumer per source, and for brokers whose group
    /// coordination cannot be relied on.
    All,
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS (what Event Hubs requires).
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka and the Kafka clients use.
    pub fn label(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the protocol authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The default longest wait of an event before its bronze commit.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// The default most events per bronze commit.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 200_000;

/// `[source.kafka]` as serde reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    bootstrap_servers: Spanned<String>,
    topic: Spanned<String>,
    #[serde(default)]
    group: Option<Spanned<String>>,
    #[serde(default)]
    value_format: Option<Spanned<String>>,
    #[serde(default)]
    avro_schema: Option<Spanned<String>>,
    #[serde(default)]
    avro_schema_id: Option<Spanned<i64>>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    assignment: Option<Spanned<String>>,
    #[serde(default)]
    lateness: Option<Spanned<String>>,
    #[serde(default)]
    security_protocol: Option<Spanned<String>>,
    #[serde(default)]
    sasl_mechanism: Option<Spanned<String>>,
    #[serde(default)]
    sasl_username: Option<String>,
    #[serde(default)]
    sasl_password_env: Option<Spanned<String>>,
    /// Refused with a message saying where the password goes.
    #[serde(default)]
    sasl_password: Option<Spanned<toml::Value>>,
    #[serde(default)]
    ssl_ca_location: Option<String>,
    #[serde(default)]
    commit_interval: Option<Spanned<String>>,
    #[serde(default)]
    max_batch_events: Option<Spanned<i64>>,
}

impl Checker<'_> {
    /// Checks `[source.kafka]` of source `field`.
    pub(super) fn check_kafka(
        &self,
        field: &str,
        raw: &RawKafka,
        columns: &[String],
    ) -> Result<KafkaSpec> {
        let field = format!("{field}.kafka");
        let servers = raw.bootstrap_servers.get_ref().trim();
        let bad_server = servers.split(',').map(str::trim).find(|s| {
            s.rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        });
        if let Some(server) = bad_server {
            return self.fail(
                raw.bootstrap_servers.span(),
                format!("{field}.bootstrap_servers"),
                format!("{server:?} is not host:port (a comma-separated list of brokers)"),
            );
        }
        let topic = raw.topic.get_ref().clone();
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
            return self.fail(
                raw.topic.span(),
                format!("{field}.topic"),
                format!("{topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
            );
        }
        let value_format = match raw.value_format.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("json") => ValueFormat::Json,
            Some("avro") => ValueFormat::Avro,
            Some("avro_confluent") => ValueFormat::AvroConfluent,
            Some(other) => {
                let span = raw
                    .value_format
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_default();
                return self.fail(
                    span,
                    format!("{field}.value_format"),
                    format!(
                        "{other:?} is not a value format aurum reads (json, avro, avro_confluent)"
                    ),
                );
            }
        };
        let avro_schema = self.check_avro_schema(&field, raw, value_format, columns)?;
        let avro_schema_id = match &raw.avro_schema_id {
            // Events written with another schema could decode into wrong
            // values: the id says which ones this schema reads.
            None if value_format == ValueFormat::AvroConfluent => {
                return self.fail(
                    raw.topic.span(),
                    format!("{field}.avro_schema_id"),
                    "value_format = \"avro_confluent\" needs avro_schema_id: the Schema Registry id of the avro_schema file (events carrying another id are quarantined, never read with the wrong schema)".into(),
                );
            }
            None => None,
            Some(id) if value_format != ValueFormat::AvroConfluent => {
                return self.fail(
                    id.span(),
                    format!("{field}.avro_schema_id"),
                    "a schema id is only carried by value_format = \"avro_confluent\"".into(),
                );
            }
            Some(id) => match u32::try_from(*id.get_ref()) {
                Ok(id) => Some(id),
                Err(_) => {
                    return self.fail(
                        id.span(),
                        format!("{field}.avro_schema_id"),
                        "must be a Schema Registry id (0 to 4294967295)".into(),
                    );
                }
            },
        };
        let start = match raw.start.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("earliest") => StartAt::Earliest,
            Some("latest") => StartAt::Latest,
            Some(other) => {
                let span = raw.start.as_ref().map(Spanned::span).unwrap_or_default();
                return self.fail(
                    span,
                    format!("{field}.start"),
                    format!("{other:?} is not a start position (earliest or latest)"),
                );
            }
        };
        let assignment = match raw.assignment.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("group") => Assignment::Group,
            Some("all") => Assignment::All,
            Some(other) => {
                let span = raw
                    .assignment
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_default();
                return self.fail(
                    span,
                    format!("{field}.assignment"),
                    format!("{other:?} is not an assignment (group or all)"),
                );
            }
        };
        let lateness = self.kafka_duration(&field, "lateness", raw.lateness.as_ref())?;
        let commit_interval = self
            .kafka_duration(&field, "commit_interval", raw.commit_interval.as_ref())?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_COMMIT_INTERVAL);
        let security_protocol = match raw
            .security_protocol
            .as_ref()
            .map(|v| v.get_ref().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("plaintext") => SecurityProtocol::Plaintext,
            Some("ssl") => SecurityProtocol::Ssl,
            Some("sasl_plaintext") => SecurityProtocol::SaslPlaintext,
            Some("sasl_ssl") => SecurityProtocol::SaslSsl,
            Some(other) => {
                let span = raw
                    .security_protocol
                    .as_ref()
                    .map(Spanned::span)
                    .unwrap_or_default();
                return self.fail(
                    span,
                    format!("{field}.security_protocol"),
                    format!(
                        "{other:?} is not a security protocol (plaintext, ssl, sasl_plaintext, sasl_ssl)"
                    ),
                );
            }
        };
        if let Some(password) = &raw.sasl_password {
            return self.fail(
                password.span(),
                format!("{field}.sasl_password"),
                "a password is never written in aurum.toml: put it in an environment variable and name that variable in sasl_password_env".into(),
            );
        }
        let sasl_mechanism = raw
            .sasl_mechanism
            .as_ref()
            .map(|m| m.get_ref().to_ascii_uppercase());
        if let Some(mechanism) = &sasl_mechanism {
            let span = raw
                .sasl_mechanism
                .as_ref()
                .map(Spanned::span)
                .unwrap_or_default();
            if !security_protocol.is_sasl() {
                return self.fail(
                    span,
                    format!("{field}.sasl_mechanism"),
                    "a SASL mechanism needs security_protocol sasl_plaintext or sasl_ssl".into(),
                );
            }
            if !matches!(
                mechanism.as_str(),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
            ) {
                return self.fail(
                    span,
                    format!("{field}.sasl_mechanism"),
                    format!("{mechanism:?} is not a SASL mechanism aurum uses (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"),
                );
            }
        }
        if security_protocol.is_sasl()
            && (raw.sasl_username.is_none() || raw.sasl_password_env.is_none())
        {
            return self.fail(
                raw.topic.span(),
                format!("{field}.sasl_username"),
                format!(
                    "security_protocol {} needs sasl_username and sasl_password_env (for Event Hubs: \"$ConnectionString\" and the variable holding the connection string)",
                    security_protocol.label()
                ),
            );
        }
        let max_batch_events = match &raw.max_batch_events {
            None => DEFAULT_MAX_BATCH_EVENTS,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return self.fail(
                        n.span(),
                        format!("{field}.max_batch_events"),
                        "must be a positive number of events".into(),
                    );
                }
            },
        };
        Ok(KafkaSpec {
            bootstrap_servers: servers.to_string(),
            topic,
            group: raw.group.as_ref().map(|g| g.get_ref().clone()),
            value_format,
            avro_schema,
            avro_schema_id,
            start,
            assignment,
            lateness: lateness.unwrap_or_default(),
            security_protocol,
            sasl_mechanism: sasl_mechanism
                .or_else(|| security_protocol.is_sasl().then(|| "PLAIN".to_string())),
            sasl_username: raw.sasl_username.clone(),
            sasl_password_env: raw.sasl_password_env.as_ref().map(|v| v.get_ref().clone()),
            ssl_ca_location: raw.ssl_ca_location.clone(),
            commit_interval,
            max_batch_events,
        })
    }

    /// The Avro schema's text, for the Avro formats: read from the file
    /// `avro_schema` names (relative to aurum.toml), a JSON record whose
    /// fields include every declared column. The full schema is compiled
    /// when the consumer starts.
    fn check_avro_schema(
        &self,
        field: &str,
        raw: &RawKafka,
        format: ValueFormat,
        columns: &[String],
    ) -> Result<Option<String>> {
        let key = format!("{field}.avro_schema");
        let Some(file) = &raw.avro_schema else {
            if format == ValueFormat::Json {
                return Ok(None);
            }
            return self.fail(
                raw.topic.span(),
                key,
                "the Avro formats need avro_schema: the .avsc file the events are written with"
                    .into(),
            );
        };
        if format == ValueFormat::Json {
            return self.fail(
                file.span(),
                key,
                "a schema is only for value_format = \"avro\" or \"avro_confluent\"".into(),
            );
        }
        let base = self.path.parent().unwrap_or(std::path::Path::new("."));
        let path = base.join(file.get_ref());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                return self.fail(
                    file.span(),
                    key,
                    format!("cannot read {}: {e}", path.display()),
                );
            }
        };
        let schema: serde_json::Value = match serde_json::from_str(&text) {
            Ok(schema) => schema,
            Err(e) => {
                return self.fail(
                    file.span(),
                    key,
                    format!("{} is not JSON: {e}", path.display()),
                );
            }
        };
        let fields: Vec<&str> = match (schema.get("type"), schema.get("fields")) {
            (Some(t), Some(serde_json::Value::Array(fields))) if t == "record" || t == "error" => {
                fields
                    .iter()
                    .filter_map(|f| f.get("name").and_then(|n| n.as_str()))
                    .collect()
            }
            _ => {
                return self.fail(
                    file.span(),
                    key,
                    format!(
                        "{} is not an Avro record schema ({{\"type\": \"record\", \"fields\": [...]}})",
                        path.display()
                    ),
                );
            }
        };
        if let Some(missing) = columns.iter().find(|c| !fields.contains(&c.as_str())) {
            return self.fail(
                file.span(),
                key,
                format!(
                    "declared column {missing:?} is not a field of the record in {} (fields: {})",
                    path.display(),
                    fields.join(", ")
                ),
            );
        }
        Ok(Some(text))
    }

    fn kafka_duration(
        &self,
        field: &str,
        key: &str,
        value: Option<&Spanned<String>>,
    ) -> Result<Option<Duration>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = value.get_ref().trim();
        let millis = text
            .strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map(Duration::from_millis);
        match millis.or_else(|| parse_duration(text)) {
            Some(d) => Ok(Some(d)),
            None => self.fail(
                value.span(),
                format!("{field}.{key}"),
                format!(
                    "{:?} is not a duration (e.g. 500ms, 10s, 5m)",
                    value.get_ref()
                ),
            ),
        }
    }
}
