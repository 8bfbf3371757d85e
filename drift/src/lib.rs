//! Statistical drift tests for aurum.
//!
//! Pure functions over samples of numbers: the two-sample Kolmogorov–Smirnov
//! test with its asymptotic (Kolmogorov distribution) p-value, and the
//! population stability index over reference quantile bins. Tests check both
//! against closed forms computed with statrs and against brute force. This
//! crate knows nothing of models, feature stores or HTTP.

use serde::Serialize;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a drift statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A sample had no finite values.
    #[error("the {0} sample has no finite values")]
    EmptySample(&'static str),
}

/// The outcome of a two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KsResult {
    /// The largest distance between the two empirical CDFs.
    pub statistic: f64,
    /// The asymptotic p-value of the statistic.
    pub p_value: f64,
}

/// Two-sample Kolmogorov–Smirnov test; non-finite values are ignored.
pub fn ks_two_sample(reference: &[f64], current: &[f64]) -> Result<KsResult> {
    let a = sorted_finite(reference, "reference")?;
    let b = sorted_finite(current, "current")?;
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let effective = (n * m / (n + m)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * d;
    Ok(KsResult {
        statistic: d,
        p_value: kolmogorov_survival(lambda),
    })
}

/// Population stability index of `current` against `reference`, over `bins`
/// quantile bins of the reference (empty bins get a small floor so the index
/// stays finite).
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Result<f64> {
    let a = sorted_finite(reference, "reference")?;
    let b = sorted_finite(current, "current")?;
    let bins = bins.max(2);
    let mut edges: Vec<f64> = (1..bins).map(|k| a[(k * (a.len() - 1)) / bins]).collect();
    edges.dedup();
    let share = |sample: &[f64]| {
        let mut counts = vec![0usize; edges.len() + 1];
        for &x in sample {
            counts[edges.partition_point(|&e| e < x)] += 1;
        }
        counts
            .into_iter()
            .map(|c| (c as f64 / sample.len() as f64).max(1e-4))
            .collect::<Vec<_>>()
    };
    let (p, q) = (share(&a), share(&b));
    Ok(p.iter().zip(&q).map(|(p, q)| (q - p) * (q / p).ln()).sum())
}

/// Q_KS(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²), the Kolmogorov distribution's tail.
fn kolmogorov_survival(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

fn sorted_finite(sample: &[f64], which: &'static str) -> Result<Vec<f64>> {
    let mut v: Vec<f64> = sample.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Err(Error::EmptySample(which));
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use statrs::distribution::{ContinuousCDF, Normal};

    use super::*;

    fn normal_sample(n: usize, shift: f64) -> Vec<f64> {
        let normal = Normal::new(0.0, 1.0).unwrap();
        (1..=n)
            .map(|i| normal.inverse_cdf(i as f64 / (n as f64 + 1.0)) + shift)
            .collect()
    }

    #[test]
    fn same_distribution_does_not_drift() {
        let a = normal_sample(1_000, 0.0);
        let r = ks_two_sample(&a, &a).unwrap();
        assert_eq!(r.statistic, 0.0);
        assert!(r.p_value > 0.99);
        assert!(psi(&a, &a, 10).unwrap().abs() < 1e-9);
    }

    #[test]
    fn shifted_distribution_drifts() {
        let a = normal_sample(1_000, 0.0);
        let b = normal_sample(1_000, 0.5);
        let r = ks_two_sample(&a, &b).unwrap();
        // D equals the CDF gap at the midpoint: Φ(0.25) − Φ(−0.25) ≈ 0.197.
        let normal = Normal::new(0.0, 1.0).unwrap();
        let expected = normal.cdf(0.25) - normal.cdf(-0.25);
        assert!((r.statistic - expected).abs() < 0.01, "{r:?}");
        assert!(r.p_value < 1e-6, "{r:?}");
        assert!(psi(&a, &b, 10).unwrap() > 0.1);
    }

    #[test]
    fn empty_samples_are_named() {
        assert_eq!(
            ks_two_sample(&[f64::NAN], &[1.0]),
            Err(Error::EmptySample("reference"))
        );
    }

    proptest! {
        #[test]
        fn ks_matches_a_brute_force_reference(
            a in prop::collection::vec(-100i32..100, 1..40),
            b in prop::collection::vec(-100i32..100, 1..40),
        ) {
            let a: Vec<f64> = a.into_iter().map(f64::from).collect();
            let b: Vec<f64> = b.into_iter().map(f64::from).collect();
            let ecdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
            let brute = a.iter().chain(&b)
                .map(|&x| (ecdf(&a, x) - ecdf(&b, x)).abs())
                .fold(0.0, f64::max);
            let r = ks_two_sample(&a, &b).unwrap();
            prop_assert!((r.statistic - brute).abs() < 1e-12);
            prop_assert!((0.0..=1.0).contains(&r.p_value));
        }
    }
}
