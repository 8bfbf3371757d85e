//! One model version's drift window: the features and predictions of its
//! most recent live and shadow rows, oldest dropped first.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::record::{PredictionRecord, headline};

/// The rows of one version's window.
pub(crate) struct Window {
    feature_names: Arc<[String]>,
    rows: VecDeque<WindowRow>,
}

struct WindowRow {
    time_micros: i64,
    features: Vec<f32>,
    prediction: f32,
}

/// A window's live rows, column by column: the input names, the values per
/// input, the predictions and the row count.
pub(crate) type LiveColumns = (Arc<[String]>, Vec<Vec<f64>>, Vec<f64>, usize);

impl Window {
    /// An empty window of a version with these inputs.
    pub(crate) fn new(feature_names: Arc<[String]>) -> Self {
        Window {
            feature_names,
            rows: VecDeque::new(),
        }
    }

    /// Adds `record` (its feature buffer moves, no copy), dropping the
    /// oldest row when the window holds `capacity` rows.
    pub(crate) fn push(&mut self, record: PredictionRecord, capacity: usize) {
        if self.rows.len() >= capacity {
            self.rows.pop_front();
        }
        let prediction = if record.outputs.is_empty() {
            f32::NAN
        } else {
            headline(&record.outputs)
        };
        self.rows.push_back(WindowRow {
            time_micros: record.time_micros,
            features: record.features,
            prediction,
        });
    }

    /// The rows at or after `cutoff` (µs since the epoch), column by
    /// column; a missing value is NaN.
    pub(crate) fn live_columns(&self, cutoff: i64) -> LiveColumns {
        let live: Vec<&WindowRow> = self
            .rows
            .iter()
            .filter(|r| r.time_micros >= cutoff)
            .collect();
        let width = self.feature_names.len();
        let columns: Vec<Vec<f64>> = (0..width)
            .map(|j| {
                live.iter()
                    .map(|r| r.features.get(j).map_or(f64::NAN, |v| f64::from(*v)))
                    .collect()
            })
            .collect();
        let predictions: Vec<f64> = live.iter().map(|r| f64::from(r.prediction)).collect();
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
