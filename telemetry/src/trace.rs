//! [`Trace`]: a sampled span of aurum's work, or nothing.

use std::borrow::Cow;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::tracer;

/// What a span stands for, as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call this process answers (an HTTP request, a Flight call).
    Server,
    /// Work inside the process (a stage, a lookup, a batch command).
    Internal,
}

/// A span being recorded (with its context, so children and outgoing
/// calls can name it as their parent), or nothing: tracing is off or the
/// trace was not sampled, and then every method returns at once.
#[derive(Clone, Default)]
pub struct Trace(Option<Context>);

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.trace_id() {
            Some(id) => write!(f, "Trace({id})"),
            None => f.write_str("Trace(off)"),
        }
    }
}

/// Keeps a [`Trace`] the thread's current one until dropped.
#[must_use = "the trace is current only while the guard lives"]
pub struct TraceGuard {
    _attached: Option<opentelemetry::ContextGuard>,
}

impl std::fmt::Debug for TraceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceGuard")
    }
}

impl Trace {
    /// Nothing recorded.
    pub fn off() -> Trace {
        Trace(None)
    }

    /// The span of a call this process answers, named `name`: a child of
    /// the caller's span when `traceparent` (and `tracestate`) carry a valid
    /// W3C trace context, else the root of a new trace (a malformed header
    /// is ignored). Whether it is recorded is the sampler's call (by
    /// default the caller's sampled flag decides).
    pub fn incoming(
        name: impl Into<Cow<'static, str>>,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Trace {
        let Some(tracer) = tracer() else {
            return Trace(None);
        };
        let parent = match traceparent {
            Some(traceparent) => TraceContextPropagator::new().extract_with_context(
                &Context::new(),
                &Incoming {
                    traceparent,
                    tracestate,
                },
            ),
            None => Context::new(),
        };
        start(tracer, name.into(), SpanKind::Server, &parent)
    }

    /// The root span of a run (a batch command), named `name`.
    pub fn root(name: impl Into<Cow<'static, str>>) -> Trace {
        match tracer() {
            Some(tracer) => start(tracer, name.into(), SpanKind::Internal, &Context::new()),
            None => Trace(None),
        }
    }

    /// The span the thread's current context holds ([`Trace::attach`]),
    /// or nothing.
    pub fn current() -> Trace {
        if tracer().is_none() {
            return Trace(None);
        }
        let cx = Context::current();
        if cx.has_active_span() && cx.span().span_context().is_sampled() {
            Trace(Some(cx))
        } else {
            Trace(None)
        }
    }

    /// A child span named `name` of this one (nothing when this is
    /// nothing).
    pub fn child(&self, name: impl Into<Cow<'static, str>>) -> Trace {
        match (&self.0, tracer()) {
            (Some(cx), Some(tracer)) => start(tracer, name.into(), SpanKind::Internal, cx),
            _ => Trace(None),
        }
    }

    /// A child of [`Trace::current`]: how library code marks a step of
    /// whatever run it is part of.
    pub fn step(name: impl Into<Cow<'static, str>>) -> Trace {
        Trace::current().child(name)
    }

    /// Whether a span is being recorded (worth computing attributes for).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute (never a feature value or a secret).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, with what went wrong.
    pub fn fail(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(message));
        }
    }

    /// Ends the span now (it ends by itself when its last copy is
    /// dropped).
    pub fn end(&self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }

    /// The trace's id (32 hex digits), for log lines.
    pub fn trace_id(&self) -> Option<String> {
        self.0
            .as_ref()
            .map(|cx| cx.span().span_context().trace_id().to_string())
    }

    /// The `traceparent` and `tracestate` headers an outgoing call carries
    /// to continue this trace.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let Some(cx) = &self.0 else {
            return Vec::new();
        };
        let mut out = Outgoing(Vec::with_capacity(2));
        TraceContextPropagator::new().inject_context(cx, &mut out);
        out.0
    }

    /// Makes this the thread's current trace (for [`Trace::current`] and
    /// [`Trace::step`]) until the guard is dropped.
    pub fn attach(&self) -> TraceGuard {
        TraceGuard {
            _attached: self.0.clone().map(Context::attach),
        }
    }
}

fn start(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    name: Cow<'static, str>,
    kind: SpanKind,
    parent: &Context,
) -> Trace {
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, parent);
    if span.span_context().is_sampled() && span.is_recording() {
        Trace(Some(parent.with_span(span)))
    } else {
        Trace(None)
    }
}

/// An incoming call's trace-context headers.
struct Incoming<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The headers an outgoing call carries.
struct Outgoing(Vec<(&'static str, String)>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}
