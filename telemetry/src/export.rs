//! Spans from the threads that end them to the OTLP exporter: a bounded
//! queue (a full one drops the span and counts it, never waits) and one
//! export thread that sends batches when they fill or when their oldest span
//! has waited the schedule delay. An export that fails or times out drops its
//! batch, counts it and is logged once (and once more when exports recover),
//! so a collector that is down costs the work nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _, SpanProcessor};
use tokio::sync::mpsc;

use crate::Error;
use crate::settings::{Protocol, Settings};

/// What happened to the spans this process made.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: AtomicU64,
    /// Exports that failed or timed out.
    pub export_failures: AtomicU64,
}

static STATS: ExportStats = ExportStats {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_export_failed: AtomicU64::new(0),
    export_failures: AtomicU64::new(0),
};

/// The process's span export counters (all zero while tracing is off).
pub fn stats() -> &'static ExportStats {
    &STATS
}

/// What the export thread is asked to do besides exporting.
enum Control {
    /// Hand the service's resource to the exporter.
    Resource(Resource),
    /// Export everything queued, then answer.
    Flush(std_mpsc::Sender<()>),
    /// Export everything queued, shut the exporter down, answer and stop.
    Shutdown(std_mpsc::Sender<()>),
}

/// The span processor: the queue's sending side and the export thread.
#[derive(Debug)]
pub(crate) struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    export_timeout: Duration,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Resource(_) => "Resource",
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

impl QueueProcessor {
    /// Starts the export thread with the exporter `settings` ask for, or
    /// says why the exporter cannot be built.
    pub(crate) fn start(settings: &Settings) -> Result<QueueProcessor, Error> {
        let (spans, queued) = mpsc::channel(settings.max_queue);
        let (control, controls) = mpsc::unbounded_channel();
        let (built, build_result) = std_mpsc::channel();
        let worker = Worker {
            settings: settings.clone(),
            queued,
            controls,
        };
        let thread = std::thread::Builder::new()
            .name("aurum-otlp-export".into())
            .spawn(move || worker.run(built))
            .map_err(|e| Error::Exporter(format!("the export thread did not start: {e}")))?;
        match build_result.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Exporter("the export thread stopped".into()));
            }
        }
        Ok(QueueProcessor {
            spans,
            control,
            thread: Mutex::new(Some(thread)),
            export_timeout: settings.export_timeout,
        })
    }

    /// Asks the thread for `what` and waits up to `timeout` for its answer.
    fn ask(&self, what: fn(std_mpsc::Sender<()>) -> Control, timeout: Duration) -> OTelSdkResult {
        let (reply, answer) = std_mpsc::channel();
        self.control
            .send(what(reply))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            STATS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, self.export_timeout + Duration::from_secs(1))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let answered = self.ask(Control::Shutdown, timeout);
        if answered.is_ok()
            && let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = thread.join();
        }
        answered
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Control::Resource(resource.clone()));
    }
}

/// The export thread's side.
struct Worker {
    settings: Settings,
    queued: mpsc::Receiver<SpanData>,
    controls: mpsc::UnboundedReceiver<Control>,
}

impl Worker {
    /// Builds the exporter (inside the thread's runtime: the gRPC channel
    /// needs one), says whether that worked, then exports until shut down.
    fn run(mut self, built: std_mpsc::Sender<Result<(), Error>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = built.send(Err(Error::Exporter(format!(
                    "the export thread's runtime did not start: {e}"
                ))));
                return;
            }
        };
        runtime.block_on(async move {
            let mut exporter = match build_exporter(&self.settings) {
                Ok(exporter) => exporter,
                Err(e) => {
                    let _ = built.send(Err(e));
                    return;
                }
            };
            let _ = built.send(Ok(()));
            let mut batch: Vec<SpanData> = Vec::with_capacity(self.settings.max_batch);
            let mut due = tokio::time::Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    biased;
                    control = self.controls.recv() => match control {
                        Some(Control::Resource(resource)) => exporter.set_resource(&resource),
                        Some(Control::Flush(reply)) => {
                            self.drain(&mut batch);
                            self.export_all(&exporter, &mut batch, &mut failing).await;
                            let _ = reply.send(());
                        }
                        Some(Control::Shutdown(reply)) => {
                            self.drain(&mut batch);
                            self.export_all(&exporter, &mut batch, &mut failing).await;
                            let _ = exporter.shutdown();
                            let _ = reply.send(());
                            return;
                        }
                        None => return,
                    },
                    span = self.queued.recv() => match span {
                        Some(span) => {
                            if batch.is_empty() {
                                due = tokio::time::Instant::now() + self.settings.delay;
                            }
                            batch.push(span);
                            if batch.len() >= self.settings.max_batch {
                                self.export(&exporter, &mut batch, &mut failing).await;
                            }
                        }
                        None => return,
                    },
                    () = tokio::time::sleep_until(due), if !batch.is_empty() => {
                        self.export(&exporter, &mut batch, &mut failing).await;
                    }
                }
            }
        });
    }

    /// Moves what is queued into `batch`.
    fn drain(&mut self, batch: &mut Vec<SpanData>) {
        while let Ok(span) = self.queued.try_recv() {
            batch.push(span);
        }
    }

    /// Exports `batch` in pieces of at most the batch size.
    async fn export_all(
        &self,
        exporter: &opentelemetry_otlp::SpanExporter,
        batch: &mut Vec<SpanData>,
        failing: &mut bool,
    ) {
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(self.settings.max_batch));
            self.export(exporter, batch, failing).await;
            *batch = rest;
        }
    }

    /// Exports `batch` (emptying it), counting what the collector took or
    /// what was dropped.
    async fn export(
        &self,
        exporter: &opentelemetry_otlp::SpanExporter,
        batch: &mut Vec<SpanData>,
        failing: &mut bool,
    ) {
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let outcome =
            tokio::time::timeout(self.settings.export_timeout, exporter.export(spans)).await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(redact(&e.to_string())),
            Err(_) => Some(format!(
                "no answer within {} ms",
                self.settings.export_timeout.as_millis()
            )),
        };
        match error {
            None => {
                STATS.exported.fetch_add(count, Ordering::Relaxed);
                if *failing {
                    *failing = false;
                    tracing::warn!("trace export works again");
                }
            }
            Some(error) => {
                STATS.export_failures.fetch_add(1, Ordering::Relaxed);
                STATS
                    .dropped_export_failed
                    .fetch_add(count, Ordering::Relaxed);
                if !*failing {
                    *failing = true;
                    tracing::warn!(
                        spans = count,
                        "trace export failed; spans are dropped and counted \
                         (aurum_trace_spans_dropped_total) until it works again: {error}"
                    );
                }
            }
        }
        *batch = Vec::with_capacity(self.settings.max_batch);
    }
}

/// The OTLP exporter `settings` ask for.
fn build_exporter(settings: &Settings) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let built = match settings.protocol {
        Protocol::Grpc => {
            let mut builder = SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.build()
        }
        Protocol::HttpProtobuf => {
            let mut builder = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.build()
        }
    };
    built.map_err(|e| Error::Exporter(redact(&e.to_string())))
}

/// `message` with what a URL in it may carry besides where it points (user
/// information, a query) cut out: collectors' endpoints can hold keys.
pub(crate) fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')')
            .unwrap_or(after.len());
        let url = &after[..end];
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let path = path.split(['?', '#']).next().unwrap_or("");
        out.push_str(host);
        out.push_str(path);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}
