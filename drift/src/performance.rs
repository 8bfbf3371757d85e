//! Live model quality from true outcomes: ROC AUC, accuracy, Brier score
//! and a calibration table for classifiers; RMSE and MAE for regressors.
//! The metrics themselves are [`crate::metrics`]'s, the ones training
//! validates with; this module picks the usable pairs and adds the Brier
//! score and the calibration error.

use serde::{Deserialize, Serialize};

use crate::metrics;
pub use crate::metrics::CalibrationBin;

/// The calibration table's equal-width score bins.
const CALIBRATION_BINS: usize = 10;

/// A classifier's quality on labelled predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Labelled predictions.
    pub n: u64,
    /// The share of positive labels.
    pub positive_rate: f64,
    /// ROC AUC; `None` until both classes have been seen.
    pub roc_auc: Option<f64>,
    /// Accuracy at threshold 0.5.
    pub accuracy: f64,
    /// Mean squared difference of score and label.
    pub brier: f64,
    /// Expected calibration error over the calibration bins.
    pub calibration_error: f64,
    /// Ten equal-width score bins.
    pub calibration: Vec<CalibrationBin>,
}

/// A regressor's quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// Labelled predictions.
    pub n: u64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean of prediction − truth.
    pub bias: f64,
}

/// Quality of scores (probabilities of the positive class) against labels.
/// Non-finite scores are left out. `None` for no usable pairs.
pub fn classification(pairs: &[(f64, bool)]) -> Option<Classification> {
    let (scores, positive): (Vec<f64>, Vec<bool>) =
        pairs.iter().copied().filter(|(s, _)| s.is_finite()).unzip();
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    let brier = scores
        .iter()
        .zip(&positive)
        .map(|(s, &y)| (s - f64::from(u8::from(y))).powi(2))
        .sum::<f64>()
        / n;
    let calibration = metrics::calibration(&scores, &positive, CALIBRATION_BINS);
    let calibration_error = calibration
        .iter()
        .map(|b| b.count as f64 / n * (b.mean_score - b.observed_rate).abs())
        .sum();
    Some(Classification {
        n: scores.len() as u64,
        positive_rate: metrics::positive_rate(&positive),
        roc_auc: metrics::roc_auc(&scores, &positive),
        accuracy: metrics::accuracy(&scores, &positive, 0.5),
        brier,
        calibration_error,
        calibration,
    })
}

/// Quality of predictions against true values; pairs whose error is not
/// finite are left out. `None` for no finite pairs.
pub fn regression(pairs: &[(f64, f64)]) -> Option<Regression> {
    let (predictions, truths): (Vec<f64>, Vec<f64>) = pairs
        .iter()
        .copied()
        .filter(|(p, t)| (p - t).is_finite())
        .unzip();
    if predictions.is_empty() {
        return None;
    }
    let errors = metrics::regression(&predictions, &truths);
    Some(Regression {
        n: predictions.len() as u64,
        rmse: errors.rmse,
        mae: errors.mae,
        bias: errors.bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_a_perfect_and_a_tied_ranking() {
        let perfect =
            classification(&[(0.1, false), (0.2, false), (0.8, true), (0.9, true)]).unwrap();
        assert_eq!(perfect.roc_auc, Some(1.0));
        assert_eq!(perfect.accuracy, 1.0);
        let tied = classification(&[(0.5, false), (0.5, true)]).unwrap();
        assert_eq!(tied.roc_auc, Some(0.5));
        let one_class = classification(&[(0.3, true), (0.9, true)]).unwrap();
        assert_eq!(one_class.roc_auc, None);
        assert!(classification(&[(f64::NAN, true)]).is_none());
    }

    #[test]
    fn regression_errors() {
        let r = regression(&[(1.0, 0.0), (1.0, 2.0)]).unwrap();
        assert_eq!((r.rmse, r.mae, r.bias), (1.0, 1.0, 0.0));
    }
}
