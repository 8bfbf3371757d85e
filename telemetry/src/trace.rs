//! [`Trace`]: a sampled span of aurum's work, or nothing.

use std::borrow::Cow;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::{sampling, tracer};

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

    /// The span of a call this process answers, named by `name` (called
    /// only when the call is recorded): a child of the caller's span when
    /// `traceparent` (and `tracestate`) carry a valid W3C trace context,
    /// else the root of a new trace (a malformed header is ignored).
    /// Whether it is recorded is decided first, without building anything:
    /// by the caller's sampled flag under a parent-based sampler, else by
    /// the ratio.
    pub fn incoming(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        name: impl FnOnce() -> String,
    ) -> Trace {
        let (Some(tracer), Some(sampling)) = (tracer(), sampling()) else {
            return Trace(None);
        };
        let parent_flag = traceparent.and_then(sampled_flag);
        let record = match parent_flag {
            Some(sampled) if sampling.parent_based => sampled,
            _ => draw(sampling.ratio),
        };
        if !record {
            return Trace(None);
        }
        let parent = match (traceparent, parent_flag) {
            (Some(traceparent), Some(_)) => TraceContextPropagator::new().extract_with_context(
                &Context::new(),
                &Incoming {
                    traceparent,
                    tracestate,
                },
            ),
            _ => Context::new(),
        };
        start(tracer, name().into(), SpanKind::Server, &parent)
    }

    /// The root span of a run (a batch command), named `name`, when the
    /// sampler's ratio draws it.
    pub fn root(name: impl Into<Cow<'static, str>>) -> Trace {
        match (tracer(), sampling()) {
            (Some(tracer), Some(sampling)) if draw(sampling.ratio) => {
                start(tracer, name.into(), SpanKind::Internal, &Context::new())
            }
            _ => Trace(None),
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

    /// Marks the span failed, with what went wrong (URLs in the message
    /// lose their user information and queries).
    pub fn fail(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(cx) = &self.0 {
            let message: Cow<'static, str> = message.into();
            cx.span()
                .set_status(Status::error(crate::export::redact(&message)));
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

/// The sampled flag of a well-formed W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero), or `None`.
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let bytes = traceparent.trim().as_bytes();
    if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
        return None;
    }
    // Lowercase only, as the specification (and the SDK's parser) require.
    let hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |range: std::ops::Range<usize>| bytes[range].iter().any(|&b| b != b'0');
    let well_formed = hex(0..2)
        && &bytes[0..2] != b"ff"
        && bytes[2] == b'-'
        && hex(3..35)
        && nonzero(3..35)
        && bytes[35] == b'-'
        && hex(36..52)
        && nonzero(36..52)
        && bytes[52] == b'-'
        && hex(53..55)
        && (bytes.len() == 55 || &bytes[0..2] != b"00");
    if !well_formed {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(&bytes[53..55]).ok()?, 16).ok()?;
    Some(flags & 1 == 1)
}

/// Whether a new trace is recorded under `ratio`: a draw from a
/// thread-local xorshift generator (seeded from the clock and the thread),
/// far cheaper than building a span to ask the SDK.
fn draw(ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    let x = STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    ((x >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() | 1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_contexts_carry_a_sampled_flag() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            sampled_flag(&format!("00-{id}-b7ad6b7169203331-01")),
            Some(true)
        );
        assert_eq!(
            sampled_flag(&format!("00-{id}-b7ad6b7169203331-00")),
            Some(false)
        );
        // A later version may add fields after a dash.
        assert_eq!(
            sampled_flag(&format!("01-{id}-b7ad6b7169203331-01-xyz")),
            Some(true)
        );
        for bad in [
            "00-not-a-trace-context".to_string(),
            format!("00-{id}-b7ad6b7169203331-01-extra"),
            format!("ff-{id}-b7ad6b7169203331-01"),
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{id}-b7ad6b716920333g-01"),
            format!("00-{}-b7ad6b7169203331-01", id.to_uppercase()),
        ] {
            assert_eq!(sampled_flag(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_ratio_draws_about_its_share() {
        assert!(draw(1.0) && !draw(0.0));
        let drawn = (0..100_000).filter(|_| draw(0.01)).count();
        assert!((700..1300).contains(&drawn), "{drawn} of 100,000 at 1 %");
    }
}
