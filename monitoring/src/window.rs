//! One model version's drift window: the features and predictions of its
//! most recent live and shadow rows, oldest dropped first.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::record::{PredictionRecord, headline};

/// The rows of one version's window, stored flat: a row's values are
/// `width` consecutive entries of `values`.
///
/// The window copies what it keeps instead of holding each record's own
/// buffers. Those were allocated by the request threads among their
/// short-lived allocations, and ten thousand survivors per version kept
/// the allocator from returning the pages around them: the server's
/// resident memory crept up for minutes (BENCHMARKS.md, the soak).
pub(crate) struct Window {
    feature_names: Arc<[String]>,
    times: VecDeque<i64>,
    predictions: VecDeque<f32>,
    values: VecDeque<f32>,
}

/// A window's live rows, column by column: the input names, the values per
/// input, the predictions and the row count.
pub(crate) type LiveColumns = (Arc<[String]>, Vec<Vec<f64>>, Vec<f64>, usize);

impl Window {
    /// An empty window of a version with these inputs.
    pub(crate) fn new(feature_names: Arc<[String]>) -> Self {
        Window {
            feature_names,
            times: VecDeque::new(),
            predictions: VecDeque::new(),
            values: VecDeque::new(),
        }
    }

    /// Adds `record`'s values (a value it lacks is NaN), dropping the
    /// oldest row when the window holds `capacity` rows.
    pub(crate) fn push(&mut self, record: PredictionRecord, capacity: usize) {
        let width = self.feature_names.len();
        if self.times.len() >= capacity.max(1) {
            self.times.pop_front();
            self.predictions.pop_front();
            self.values.drain(..width);
        }
        let prediction = if record.outputs.is_empty() {
            f32::NAN
        } else {
            headline(&record.outputs)
        };
        self.times.push_back(record.time_micros);
        self.predictions.push_back(prediction);
        self.values
            .extend((0..width).map(|j| record.features.get(j).copied().unwrap_or(f32::NAN)));
    }

    /// The rows at or after `cutoff` (µs since the epoch), column by
    /// column; a missing value is NaN.
    pub(crate) fn live_columns(&self, cutoff: i64) -> LiveColumns {
        let width = self.feature_names.len();
        let live: Vec<usize> = (0..self.times.len())
            .filter(|&i| self.times[i] >= cutoff)
            .collect();
        let columns: Vec<Vec<f64>> = (0..width)
            .map(|j| {
                live.iter()
                    .map(|&i| f64::from(self.values[i * width + j]))
                    .collect()
            })
            .collect();
        let predictions: Vec<f64> = live
            .iter()
            .map(|&i| f64::from(self.predictions[i]))
            .collect();
        (self.feature_names.clone(), columns, predictions, live.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time: i64, a: f32) -> PredictionRecord {
        PredictionRecord {
            request_id: Arc::from("r"),
            row: 0,
            time_micros: time,
            model: Arc::from("m"),
            version: 1,
            arm: Arc::from("champion"),
            shadow: false,
            entity: String::new(),
            feature_names: Arc::from(vec!["a".to_string(), "b".to_string()]),
            features: vec![a],
            outputs: vec![0.5],
            latency_micros: 0,
        }
    }

    #[test]
    fn the_window_drops_its_oldest_rows_and_old_rows_are_not_live() {
        let mut window = Window::new(Arc::from(vec!["a".to_string(), "b".to_string()]));
        for t in 0..4 {
            window.push(record(t, t as f32), 3);
        }
        let (names, columns, predictions, rows) = window.live_columns(2);
        assert_eq!(names.len(), 2);
        assert_eq!(rows, 2);
        assert_eq!(columns[0], [2.0, 3.0]);
        assert!(columns[1].iter().all(|v| v.is_nan()));
        assert_eq!(predictions, [0.5, 0.5]);
        assert_eq!(window.live_columns(0).3, 3);
    }
}
