//! Model-quality metrics of scores against outcomes: ROC AUC, average
//! precision, log loss, accuracy, precision and recall, positive rate and a
//! calibration table for classifiers; RMSE, MAE, mean error and R² for
//! regressors.
//!
//! This is the one implementation: live monitoring ([`crate::performance`])
//! and training's validation both call it, so a model's validation figures
//! and its live figures are the same function of the same pairs. The
//! functions take plain slices and leave the choice of rows (dropping
//! non-finite scores, say) to the caller.

use serde::{Deserialize, Serialize};

/// One bin of a calibration table: the scores in `[lower, upper)` (the last
/// bin also holds its upper edge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// The bin's lower score.
    pub lower: f64,
    /// Its upper score.
    pub upper: f64,
    /// Predictions in the bin.
    pub count: u64,
    /// Their mean score (0 for an empty bin).
    pub mean_score: f64,
    /// Their share of positive labels (0 for an empty bin).
    pub observed_rate: f64,
}

/// A regressor's errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionErrors {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean of prediction − truth.
    pub bias: f64,
    /// The coefficient of determination (0 when the truths are constant).
    pub r2: f64,
}

/// Area under the ROC curve by the rank-sum (Mann–Whitney) formula, with
/// tied scores given their average rank. `None` when only one class is
/// present. A NaN score equals nothing, so each NaN takes a rank of its own.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    let positives = positive.iter().filter(|&&p| p).count() as f64;
    let negatives = positive.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Ranks are multiples of one half, so this sum is exact (below 2⁵³) and
    // does not depend on the order it is taken in.
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Average precision (the area under the precision–recall curve as the
/// step sum over positives, ranked by score). `None` without positives.
pub fn pr_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let positives = positive.iter().filter(|&&p| p).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut hits, mut sum) = (0usize, 0f64);
    let mut i = 0;
    // Tied scores form one threshold: they enter together.
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let new_hits = order[i..=j].iter().filter(|&&k| positive[k]).count();
        hits += new_hits;
        let precision = hits as f64 / (j + 1) as f64;
        sum += precision * new_hits as f64;
        i = j + 1;
    }
    Some(sum / positives as f64)
}

/// Mean binary cross-entropy of probabilities, clipped away from 0 and 1.
pub fn log_loss(probabilities: &[f64], positive: &[bool]) -> f64 {
    let n = probabilities.len().max(1) as f64;
    probabilities
        .iter()
        .zip(positive)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-7, 1.0 - 1e-7);
            let y = if y { 1.0 } else { 0.0 };
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / n
}

/// Share of correct predictions when `score >= threshold` predicts the
/// positive class.
pub fn accuracy(scores: &[f64], positive: &[bool], threshold: f64) -> f64 {
    let n = scores.len().max(1) as f64;
    scores
        .iter()
        .zip(positive)
        .filter(|(s, y)| (**s >= threshold) == **y)
        .count() as f64
        / n
}

/// Precision and recall of `score >= threshold` (0 where undefined).
pub fn precision_recall(scores: &[f64], positive: &[bool], threshold: f64) -> (f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0f64, 0f64, 0f64);
    for (&s, &y) in scores.iter().zip(positive) {
        match (s >= threshold, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            (false, false) => {}
        }
    }
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fneg > 0.0 {
        tp / (tp + fneg)
    } else {
        0.0
    };
    (precision, recall)
}

/// The share of positive labels (NaN for none).
pub fn positive_rate(positive: &[bool]) -> f64 {
    positive.iter().filter(|&&p| p).count() as f64 / positive.len() as f64
}

/// A calibration table of `bins` equal-width score bins over `[0, 1]`,
/// every bin listed (empty ones with zero means). Scores outside `[0, 1]`
/// count in the nearest end bin.
pub fn calibration(scores: &[f64], positive: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sums: Vec<(u64, f64, u64)> = vec![(0, 0.0, 0); bins];
    for (&s, &y) in scores.iter().zip(positive) {
        let k = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[k].0 += 1;
        sums[k].1 += s;
        sums[k].2 += u64::from(y);
    }
    sums.iter()
        .enumerate()
        .map(|(k, &(count, sum, positives))| CalibrationBin {
            lower: k as f64 / bins as f64,
            upper: (k + 1) as f64 / bins as f64,
            count,
            mean_score: if count == 0 { 0.0 } else { sum / count as f64 },
            observed_rate: if count == 0 {
                0.0
            } else {
                positives as f64 / count as f64
            },
        })
        .collect()
}

/// RMSE, MAE, mean error and R² of predictions against truths, pair by
/// pair (a non-finite pair makes them non-finite; callers that want such
/// pairs left out drop them first).
pub fn regression(predictions: &[f64], truths: &[f64]) -> RegressionErrors {
    let n = predictions.len().max(1) as f64;
    let mean = truths.iter().sum::<f64>() / n;
    let (mut se, mut ae, mut tss) = (0f64, 0f64, 0f64);
    for (&p, &t) in predictions.iter().zip(truths) {
        let e = p - t;
        se += e * e;
        ae += e.abs();
        tss += (t - mean).powi(2);
    }
    // A separate sum, as live monitoring has always taken it: the sign of a
    // zero mean error depends on the sum's starting value.
    let bias = predictions
        .iter()
        .zip(truths)
        .map(|(p, t)| p - t)
        .sum::<f64>()
        / n;
    let r2 = if tss > 0.0 { 1.0 - se / tss } else { 0.0 };
    RegressionErrors {
        rmse: (se / n).sqrt(),
        mae: ae / n,
        bias,
        r2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orderings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(
            roc_auc(&[0.5, 0.5, 0.5, 0.5], &[false, true, false, true]),
            Some(0.5)
        );
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn pr_auc_precision_recall_calibration_and_regression() {
        // Ranked: 1 (pos), 0.8 (neg), 0.6 (pos), 0.2 (neg): AP = (1 + 2/3) / 2.
        let ap = pr_auc(&[1.0, 0.8, 0.6, 0.2], &[true, false, true, false]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
        assert_eq!(pr_auc(&[0.3], &[false]), None);
        let (p, r) = precision_recall(&[0.9, 0.7, 0.4, 0.1], &[true, false, true, false], 0.5);
        assert_eq!((p, r), (0.5, 0.5));
        let table = calibration(&[0.05, 0.15, 0.95, 1.0], &[false, true, true, true], 10);
        assert_eq!(table.len(), 10, "every bin is listed");
        let table: Vec<_> = table.into_iter().filter(|b| b.count > 0).collect();
        assert_eq!(table.len(), 3);
        assert_eq!((table[2].count, table[2].observed_rate), (2, 1.0));
        let errors = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        let (rmse, mae, r2) = (errors.rmse, errors.mae, errors.r2);
        assert!((rmse - (4.0f64 / 3.0).sqrt()).abs() < 1e-9 && (mae - 2.0 / 3.0).abs() < 1e-9);
        assert!((r2 - (1.0 - 4.0 / (78.0 / 9.0))).abs() < 1e-9, "{r2}");
    }

    #[test]
    fn log_loss_of_perfect_and_uniform_guesses() {
        assert!(log_loss(&[1.0, 0.0], &[true, false]) < 1e-6);
        assert!((log_loss(&[0.5, 0.5], &[true, false]) - std::f64::consts::LN_2).abs() < 1e-9);
    }

    #[test]
    fn a_nan_score_ranks_alone_instead_of_stalling_the_ranking() {
        let auc = roc_auc(&[0.2, f64::NAN, 0.8], &[false, true, true]).unwrap();
        // NaN sorts above every number: both positives outrank the negative.
        assert_eq!(auc, 1.0);
    }
}
