//! One served prediction, as the request path hands it to the log.

use std::sync::Arc;

/// One logged prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRecord {
    /// The request's id (also in the `x-request-id` response header).
    pub request_id: Arc<str>,
    /// The row of the request the prediction answers (from 0).
    pub row: u32,
    /// When the request arrived, in microseconds since the epoch (UTC).
    pub time_micros: i64,
    /// The model name.
    pub model: Arc<str>,
    /// The version that answered.
    pub version: u64,
    /// The arm (alias) that answered.
    pub arm: Arc<str>,
    /// Whether this was a shadow run (its answer was not returned).
    pub shadow: bool,
    /// The row's entity key, as `name=value` pairs joined by `,`.
    pub entity: String,
    /// The model's input names, in input order.
    pub feature_names: Arc<[String]>,
    /// The input values; NaN where a value was missing (before imputation).
    pub features: Vec<f32>,
    /// The model's outputs for the row.
    pub outputs: Vec<f32>,
    /// From the request's arrival to the end of its inference.
    pub latency_micros: u64,
}

/// The one number a row's answer leads with: a two-column output is a
/// binary classifier's `[P(0), P(1)]` (skl2onnx), answered by `P(1)`;
/// otherwise the first value.
#[inline]
pub fn headline(output: &[f32]) -> f32 {
    match output {
        [_, positive] => *positive,
        [first, ..] => *first,
        [] => f32::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::headline;

    #[test]
    fn headline_picks_the_positive_class_of_two_outputs() {
        assert_eq!(headline(&[0.3, 0.7]), 0.7);
        assert_eq!(headline(&[0.3]), 0.3);
        assert_eq!(headline(&[1.0, 2.0, 3.0]), 1.0);
        assert!(headline(&[]).is_nan());
    }
}
