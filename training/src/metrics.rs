//! Evaluation metrics: binary classification and regression.

/// Area under the ROC curve by the rank-sum (Mann–Whitney) formula, with ties
/// given their average rank. `None` when only one class is present.
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
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
    let positives = labels.iter().filter(|&&l| l > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l > 0.5)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean binary cross-entropy of probabilities, clipped away from 0 and 1.
pub fn log_loss(probabilities: &[f32], labels: &[f32]) -> f64 {
    let n = probabilities.len().max(1) as f64;
    probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            let y = f64::from(y);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / n
}

/// Share of correct predictions at `threshold`.
pub fn accuracy(probabilities: &[f32], labels: &[f32], threshold: f32) -> f64 {
    let n = probabilities.len().max(1) as f64;
    probabilities
        .iter()
        .zip(labels)
        .filter(|(p, y)| (**p >= threshold) == (**y > 0.5))
        .count() as f64
        / n
}

/// Average precision (the area under the precision–recall curve as the
/// step sum over positives, ranked by score). `None` without positives.
pub fn pr_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l > 0.5).count();
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
        let new_hits = order[i..=j].iter().filter(|&&k| labels[k] > 0.5).count();
        hits += new_hits;
        let precision = hits as f64 / (j + 1) as f64;
        sum += precision * new_hits as f64;
        i = j + 1;
    }
    Some(sum / positives as f64)
}

/// Precision and recall of `probability >= threshold` (0 where undefined).
pub fn precision_recall(probabilities: &[f32], labels: &[f32], threshold: f32) -> (f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0f64, 0f64, 0f64);
    for (&p, &y) in probabilities.iter().zip(labels) {
        match (p >= threshold, y > 0.5) {
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

/// One bin of a calibration table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    /// The bin's lower edge (bins are `[k/n, (k+1)/n)`, the last closed).
    pub lower: f64,
    /// Rows in the bin.
    pub count: usize,
    /// Their mean predicted probability.
    pub predicted: f64,
    /// Their observed positive rate.
    pub observed: f64,
}

/// A calibration table of `bins` equal-width probability bins (empty bins
/// are left out).
pub fn calibration(probabilities: &[f32], labels: &[f32], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0f64, 0f64); bins];
    for (&p, &y) in probabilities.iter().zip(labels) {
        let k = ((f64::from(p) * bins as f64) as usize).min(bins - 1);
        sums[k].0 += 1;
        sums[k].1 += f64::from(p);
        sums[k].2 += f64::from(y);
    }
    sums.iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(k, &(count, p, y))| CalibrationBin {
            lower: k as f64 / bins as f64,
            count,
            predicted: p / count as f64,
            observed: y / count as f64,
        })
        .collect()
}

/// Root mean squared error, mean absolute error and R² of predictions.
pub fn regression(predictions: &[f32], targets: &[f32]) -> (f64, f64, f64) {
    let n = predictions.len().max(1) as f64;
    let mean = targets.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
    let (mut se, mut ae, mut tss) = (0f64, 0f64, 0f64);
    for (&p, &t) in predictions.iter().zip(targets) {
        let e = f64::from(p) - f64::from(t);
        se += e * e;
        ae += e.abs();
        tss += (f64::from(t) - mean).powi(2);
    }
    let r2 = if tss > 0.0 { 1.0 - se / tss } else { 0.0 };
    ((se / n).sqrt(), ae / n, r2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orderings() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[0., 0., 1., 1.]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[0., 0., 1., 1.]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[0., 1., 0., 1.]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[1., 1.]), None);
    }

    #[test]
    fn pr_auc_precision_recall_calibration_and_regression() {
        // Ranked: 1 (pos), 0.8 (neg), 0.6 (pos), 0.2 (neg): AP = (1 + 2/3) / 2.
        let ap = pr_auc(&[1.0, 0.8, 0.6, 0.2], &[1., 0., 1., 0.]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
        assert_eq!(pr_auc(&[0.3], &[0.]), None);
        let (p, r) = precision_recall(&[0.9, 0.7, 0.4, 0.1], &[1., 0., 1., 0.], 0.5);
        assert_eq!((p, r), (0.5, 0.5));
        let table = calibration(&[0.05, 0.15, 0.95, 1.0], &[0., 1., 1., 1.], 10);
        assert_eq!(table.len(), 3);
        assert_eq!((table[2].count, table[2].observed), (2, 1.0));
        let (rmse, mae, r2) = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((rmse - (4.0f64 / 3.0).sqrt()).abs() < 1e-9 && (mae - 2.0 / 3.0).abs() < 1e-9);
        assert!((r2 - (1.0 - 4.0 / (78.0 / 9.0))).abs() < 1e-9, "{r2}");
    }

    #[test]
    fn log_loss_of_perfect_and_uniform_guesses() {
        assert!(log_loss(&[1.0, 0.0], &[1.0, 0.0]) < 1e-6);
        assert!((log_loss(&[0.5, 0.5], &[1.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-9);
    }
}
