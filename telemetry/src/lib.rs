//! aurum's traces: OpenTelemetry spans for HTTP requests, Flight calls and
//! the batch commands, W3C trace context in and out, and OTLP export that
//! never blocks or fails the work it describes.
//!
//! Tracing is off unless the standard variables configure it
//! ([`Settings::from_env`]): then [`init`] installs a tracer provider whose
//! spans go through a bounded queue ([`export`]) to an OTLP exporter (gRPC or
//! HTTP/protobuf) on a thread of their own. A full queue or a failed export
//! drops spans and counts them ([`stats`]); the first failure is logged once.
//!
//! Code marks its work with [`Trace`]: a sampled span, or nothing. When
//! tracing is off or the trace is not sampled, a `Trace` is `None` inside and
//! every call on it returns at once, so the request path pays one branch.
//! Servers pass `Trace`s explicitly (a request's work hops threads); the
//! batch commands attach theirs to the thread ([`Trace::attach`]) and
//! library code starts children of [`Trace::current`].

mod export;
pub mod grpc;
mod settings;
mod trace;

pub use export::{ExportStats, stats};
pub use settings::{Protocol, Sampling, Settings};
pub use trace::{Kind, Trace, TraceGuard};

use std::sync::OnceLock;

use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// What can go wrong setting tracing up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable holds a value tracing cannot use.
    #[error("{variable}: {message}")]
    Setting {
        /// The variable's name.
        variable: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// The OTLP exporter could not be built (an endpoint that is not a URL,
    /// say).
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(String),
    /// Tracing was already set up in this process.
    #[error("tracing is already set up in this process")]
    AlreadySet,
}

/// The tracer every [`Trace`] starts its spans with, and the sampling
/// decided before a span is built, once [`init`] ran.
static TRACER: OnceLock<(SdkTracer, Sampling)> = OnceLock::new();

/// Tracing for this process, while it is held: dropping it flushes the
/// spans still queued (for up to the export timeout) and stops the export
/// thread.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    /// How long the last export may take at shutdown.
    flush: std::time::Duration,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Errors here are the exporter's (already counted and logged once).
        let _ = self.provider.shutdown_with_timeout(self.flush);
    }
}

/// Sets tracing up from the standard OpenTelemetry variables, naming the
/// service `service` unless `OTEL_SERVICE_NAME` does: `None` when they do
/// not turn it on (the default), or why they cannot be used.
pub fn init(service: &str) -> Result<Option<Tracing>, Error> {
    match Settings::from_env()? {
        Some(settings) => init_with(service, settings).map(Some),
        None => Ok(None),
    }
}

/// Sets tracing up with `settings`.
pub fn init_with(service: &str, settings: Settings) -> Result<Tracing, Error> {
    if TRACER.get().is_some() {
        return Err(Error::AlreadySet);
    }
    let processor = export::QueueProcessor::start(&settings)?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    // aurum decides which traces to record before building a span
    // (`Trace::incoming`, `Trace::root`); what reaches the SDK is recorded,
    // or follows its sampled parent.
    use opentelemetry_sdk::trace::Sampler;
    let sampler = if settings.sampler.parent_based {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    } else {
        Sampler::AlwaysOn
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .with_sampler(sampler)
        .build();
    use opentelemetry::trace::TracerProvider as _;
    let tracer = provider.tracer("aurum");
    TRACER
        .set((tracer, settings.sampler))
        .map_err(|_| Error::AlreadySet)?;
    // The queued spans get one export's time to leave, capped so an
    // unanswering collector cannot hold a command's exit for long.
    let flush = settings
        .export_timeout
        .min(std::time::Duration::from_secs(10))
        + std::time::Duration::from_millis(500);
    Ok(Tracing { provider, flush })
}

/// Whether spans are being made in this process.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get().map(|(tracer, _)| tracer)
}

fn sampling() -> Option<Sampling> {
    TRACER.get().map(|(_, sampling)| *sampling)
}

#[cfg(test)]
mod tests;
