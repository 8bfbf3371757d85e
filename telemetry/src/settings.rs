//! How tracing is configured: the standard OpenTelemetry variables, read
//! once at start.

use std::time::Duration;

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
    /// Which traces are recorded (`OTEL_TRACES_SAMPLER` /
    /// `OTEL_TRACES_SAMPLER_ARG`; the default is `parentbased_always_on`).
    pub sampler: Sampling,
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
            sampler: Sampling::default(),
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
        settings.sampler = Sampling::from_vars(
            set("OTEL_TRACES_SAMPLER").as_deref(),
            set("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
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

/// Which traces are recorded: the specification's samplers, decided by
/// aurum before a span is built (an unsampled request costs no span at all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The share of new traces recorded (1: all, 0: none).
    pub ratio: f64,
    /// Whether a caller's sampled flag decides instead, when a request
    /// carries a valid `traceparent`.
    pub parent_based: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            ratio: 1.0,
            parent_based: true,
        }
    }
}

impl Sampling {
    /// Every new trace, or the caller's choice (`parentbased_always_on`).
    pub fn always() -> Sampling {
        Sampling::default()
    }

    /// `ratio` of new traces, or the caller's choice
    /// (`parentbased_traceidratio`).
    pub fn ratio(ratio: f64) -> Sampling {
        Sampling {
            ratio: ratio.clamp(0.0, 1.0),
            parent_based: true,
        }
    }

    /// The sampler `OTEL_TRACES_SAMPLER` (and its argument) names.
    fn from_vars(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampling, Error> {
        let ratio = || -> Result<f64, Error> {
            match arg {
                None => Ok(1.0),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| Error::Setting {
                        variable: "OTEL_TRACES_SAMPLER_ARG",
                        message: format!("{v:?} is not a ratio between 0 and 1"),
                    }),
            }
        };
        let (ratio, parent_based) = match sampler.map(|s| s.trim().to_ascii_lowercase()).as_deref()
        {
            None | Some("parentbased_always_on") => (1.0, true),
            Some("always_on") => (1.0, false),
            Some("always_off") => (0.0, false),
            Some("parentbased_always_off") => (0.0, true),
            Some("traceidratio") => (ratio()?, false),
            Some("parentbased_traceidratio") => (ratio()?, true),
            Some(other) => {
                return Err(Error::Setting {
                    variable: "OTEL_TRACES_SAMPLER",
                    message: format!(
                        "{other:?} is not a sampler aurum has (always_on, always_off, traceidratio, \
                         and their parentbased_ forms)"
                    ),
                });
            }
        };
        Ok(Sampling {
            ratio,
            parent_based,
        })
    }
}
