//! Live model quality from outcomes: per version and arm, a window of
//! (prediction, outcome) pairs and the quality measured on it.

use std::collections::VecDeque;

use serde::Serialize;

/// Labelled predictions of one version at one arm.
#[derive(Debug, Default)]
pub(crate) struct VersionPerformance {
    pairs: VecDeque<(f64, f64)>,
    total: u64,
}

impl VersionPerformance {
    /// Counts one labelled prediction, keeping the last `window` pairs.
    pub(crate) fn push(&mut self, prediction: f64, outcome: f64, window: usize) {
        if self.pairs.len() == window {
            self.pairs.pop_front();
        }
        self.pairs.push_back((prediction, outcome));
        self.total += 1;
    }

    /// The quality over the window: a classifier's when every outcome in it
    /// is 0 or 1, a regressor's otherwise.
    pub(crate) fn quality(&self, version: u64, arm: &str) -> PerformanceRow {
        let binary = self.pairs.iter().all(|(_, y)| *y == 0.0 || *y == 1.0);
        let (classification, regression) = if binary {
            let pairs: Vec<(f64, bool)> = self.pairs.iter().map(|(s, y)| (*s, *y == 1.0)).collect();
            (drift::performance::classification(&pairs), None)
        } else {
            let pairs: Vec<(f64, f64)> = self.pairs.iter().copied().collect();
            (None, drift::performance::regression(&pairs))
        };
        PerformanceRow {
            version,
            arm: arm.to_string(),
            feedback: self.total,
            window: self.pairs.len(),
            classification,
            regression,
        }
    }
}

/// Live quality of one version at one arm.
#[derive(Debug, Clone, Serialize)]
pub struct PerformanceRow {
    /// The version.
    pub version: u64,
    /// The arm.
    pub arm: String,
    /// Outcomes received since the server started.
    pub feedback: u64,
    /// Outcomes in the quality window.
    pub window: usize,
    /// Classifier quality, when every outcome in the window is 0 or 1.
    pub classification: Option<drift::performance::Classification>,
    /// Regressor quality, otherwise.
    pub regression: Option<drift::performance::Regression>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_last_pairs_and_the_total_counts_all() {
        let mut p = VersionPerformance::default();
        for (s, y) in [(0.9, 1.0), (0.2, 0.0), (0.7, 1.0)] {
            p.push(s, y, 2);
        }
        let row = p.quality(3, "champion");
        assert_eq!((row.version, row.feedback, row.window), (3, 3, 2));
        assert!(row.classification.is_some() && row.regression.is_none());
        p.push(0.5, 2.5, 2);
        let row = p.quality(3, "champion");
        assert!(row.classification.is_none() && row.regression.is_some());
    }
}
