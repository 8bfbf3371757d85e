//! Hands metric families to `prometheus-client`'s encoder: label values,
//! and one helper per family shape (one histogram, counter or gauge, or one
//! per label set).

use std::fmt::{self, Write as _};
use std::ops::Deref;

use feature_store::metrics::Histogram;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// A label value. `prometheus-client` writes label values as they are
/// given, and model, arm, route and view names are free text, so text is
/// escaped here (`\`, `"` and line feeds, as the exposition formats ask).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Label<'a> {
    /// Free text (the encoder escapes it).
    Text(&'a str),
    /// A whole number (a version, a status).
    Int(u64),
    /// A flag, as `true` or `false`.
    Bool(bool),
}

impl EncodeLabelValue for Label<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        match *self {
            // prometheus-client (from 0.25.2, the version pinned) escapes
            // `\\`, `"` and newlines in label values itself.
            Label::Text(text) => encoder.write_str(text),
            Label::Int(n) => EncodeLabelValue::encode(&n, encoder),
            Label::Bool(b) => EncodeLabelValue::encode(&b, encoder),
        }
    }
}

/// Encodes a histogram family of one unlabelled histogram.
pub(crate) fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> fmt::Result {
    EncodeMetric::encode(
        histogram,
        encoder.encode_descriptor(name, help, None, MetricType::Histogram)?,
    )
}

/// Encodes a histogram family, one histogram per label set.
pub(crate) fn histogram_family<S: EncodeLabelSet, H: Deref<Target = Histogram>>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, H)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        EncodeMetric::encode(&*histogram, family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a counter family of one unlabelled counter. `name` comes without
/// `_total`: the encoder appends it to the sample.
pub(crate) fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// Encodes a counter family, one sample per label set. `name` comes without
/// `_total`: the encoder appends it to each sample.
pub(crate) fn counter_family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a gauge family of one unlabelled gauge.
pub(crate) fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Encodes a gauge family, one sample per label set.
pub(crate) fn gauge_family<S: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, V)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::text;
    use prometheus_client::registry::Registry;

    use super::*;

    /// One gauge whose model label needs every escape.
    #[derive(Debug)]
    struct Quoted;

    impl Collector for Quoted {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            let labels = [
                ("model", Label::Text("a\"b\\c\nd")),
                ("version", Label::Int(3)),
                ("shadow", Label::Bool(false)),
            ];
            gauge_family(&mut encoder, "g", "A gauge.", [(labels, 1u64)])?;
            counter(&mut encoder, "c", "A counter.", 2)
        }
    }

    #[test]
    fn label_text_is_escaped_and_counters_get_their_total_suffix() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Quoted));
        let mut out = String::new();
        text::encode(&mut out, &registry).unwrap();
        assert_eq!(
            out,
            "# HELP g A gauge.\n# TYPE g gauge\n\
             g{model=\"a\\\"b\\\\c\\nd\",version=\"3\",shadow=\"false\"} 1\n\
             # HELP c A counter.\n# TYPE c counter\nc_total 2\n\
             # EOF\n"
        );
    }
}
