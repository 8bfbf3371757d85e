//! How tracing is configured: the standard OpenTelemetry variables, read
//! once at start.

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

use crate::Error;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`, port 4317 by default).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, port 4318 by
    /// default; the specification's default).
    HttpProtobuf,
}

/// Tracing's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The transport.
    pub protocol: Protocol,
    /// The endpoint, when given in code (else the exporter reads
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// and their defaults on localhost).
    pub endpoint: Option<String>,
    /// The sampler, when given in code (else the SDK reads
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; the default is
    /// `parentbased_always_on`).
    pub sampler: Option<Sampler>,
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048);
    /// beyond it new spans are dropped and counted.
    pub max_queue: usize,
    /// Spans per export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_batch: usize,
    /// How long a span waits for its batch to fill
    /// (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub delay: Duration,
    /// How long an export may take (`OTEL_BSP_EXPORT_TIMEOUT`, 30 s; the
    /// exporter's own `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s, applies within).
    pub export_timeout: Duration,
}

impl Settings {
    /// Settings with the specification's defaults for `protocol`.
    pub fn new(protocol: Protocol) -> Settings {
        Settings {
            protocol,
            endpoint: None,
            sampler: None,
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(30),
        }
    }

    /// The settings the environment asks for: `None` unless it turns
    /// tracing on — an OTLP endpoint is set
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
    /// or `OTEL_TRACES_EXPORTER=otlp` — and `OTEL_SDK_DISABLED` is not
    /// `true`. A variable with a value tracing cannot use is an error that
    /// names it.
    pub fn from_env() -> Result<Option<Settings>, Error> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] over any source of variables.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, Error> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint_set = set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        match set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "none" => return Ok(None),
            Some(v) if v == "otlp" => {}
            Some(other) => {
                return Err(Error::Setting {
                    variable: "OTEL_TRACES_EXPORTER",
                    message: format!("{other:?} is not an exporter aurum has; use otlp or none"),
                });
            }
            None if !endpoint_set => return Ok(None),
            None => {}
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
            .or_else(|| {
                set("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
            }) {
            None => Protocol::HttpProtobuf,
            Some((variable, v)) => match v.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                other => {
                    return Err(Error::Setting {
                        variable,
                        message: format!(
                            "{other:?} is not a protocol aurum exports with; use grpc or http/protobuf"
                        ),
                    });
                }
            },
        };
        let mut settings = Settings::new(protocol);
        let number = |variable: &'static str| -> Result<Option<u64>, Error> {
            set(variable)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| Error::Setting {
                        variable,
                        message: format!("{v:?} is not a whole number"),
                    })
                })
                .transpose()
        };
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
            settings.max_queue = (n as usize).max(1);
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            settings.max_batch = (n as usize).max(1);
        }
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
            settings.delay = Duration::from_millis(ms);
        }
        if let Some(ms) = number("OTEL_BSP_EXPORT_TIMEOUT")? {
            settings.export_timeout = Duration::from_millis(ms.max(1));
        }
        settings.max_batch = settings.max_batch.min(settings.max_queue);
        Ok(Some(settings))
    }
}
