//! Live model quality from true outcomes: ROC AUC, accuracy, Brier score
//! and a calibration table for classifiers; RMSE and MAE for regressors.

use serde::{Deserialize, Serialize};

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

/// One calibration bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// The bin's lower score.
    pub lower: f64,
    /// Its upper score.
    pub upper: f64,
    /// Predictions in the bin.
    pub count: u64,
    /// Their mean score.
    pub mean_score: f64,
    /// Their share of positive labels.
    pub observed_rate: f64,
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
    let mut pairs: Vec<(f64, bool)> = pairs
        .iter()
        .copied()
        .filter(|(s, _)| s.is_finite())
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let accuracy = pairs.iter().filter(|(s, y)| (*s >= 0.5) == *y).count() as f64 / n;
    let brier = pairs
        .iter()
        .map(|(s, y)| (s - f64::from(u8::from(*y))).powi(2))
        .sum::<f64>()
        / n;
    let mut bins: Vec<(u64, f64, u64)> = vec![(0, 0.0, 0); 10];
    for &(s, y) in &pairs {
        let b = ((s.clamp(0.0, 1.0) * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += s;
        bins[b].2 += u64::from(y);
    }
    let calibration: Vec<CalibrationBin> = bins
        .iter()
        .enumerate()
        .map(|(i, &(count, sum, pos))| CalibrationBin {
            lower: i as f64 / 10.0,
            upper: (i + 1) as f64 / 10.0,
            count,
            mean_score: if count == 0 { 0.0 } else { sum / count as f64 },
            observed_rate: if count == 0 {
                0.0
            } else {
                pos as f64 / count as f64
            },
        })
        .collect();
    let calibration_error = calibration
        .iter()
        .map(|b| b.count as f64 / n * (b.mean_score - b.observed_rate).abs())
        .sum();
    // ROC AUC = the Mann–Whitney U of the positives' ranks (ties share
    // their mean rank).
    let roc_auc = (positives > 0.0 && positives < n).then(|| {
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut rank_sum = 0.0;
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j < pairs.len() && pairs[j].0 == pairs[i].0 {
                j += 1;
            }
            let mean_rank = (i + j + 1) as f64 / 2.0;
            rank_sum += mean_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
            i = j;
        }
        let negatives = n - positives;
        (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
    });
    Some(Classification {
        n: pairs.len() as u64,
        positive_rate: positives / n,
        roc_auc,
        accuracy,
        brier,
        calibration_error,
        calibration,
    })
}

/// Quality of predictions against true values; `None` for no finite pairs.
pub fn regression(pairs: &[(f64, f64)]) -> Option<Regression> {
    let errors: Vec<f64> = pairs
        .iter()
        .map(|(p, t)| p - t)
        .filter(|e| e.is_finite())
        .collect();
    if errors.is_empty() {
        return None;
    }
    let n = errors.len() as f64;
    Some(Regression {
        n: errors.len() as u64,
        rmse: (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
        mae: errors.iter().map(|e| e.abs()).sum::<f64>() / n,
        bias: errors.iter().sum::<f64>() / n,
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
