//! Evaluation metrics for binary classifiers.

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
    fn log_loss_of_perfect_and_uniform_guesses() {
        assert!(log_loss(&[1.0, 0.0], &[1.0, 0.0]) < 1e-6);
        assert!((log_loss(&[0.5, 0.5], &[1.0, 0.0]) - std::f64::consts::LN_2).abs() < 1e-9);
    }
}
