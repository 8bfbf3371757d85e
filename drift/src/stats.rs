//! The statistics: two-sample Kolmogorov–Smirnov, chi-squared test of
//! homogeneity, population stability index, Jensen–Shannon distance,
//! Wasserstein distance, Welch's t-test and the two-proportion z-test.
//!
//! Each function is checked against scipy on fixed vectors
//! (`tests/fixtures/scipy_reference.json`, made by the script beside it).
//! Two-sample functions take samples already sorted (see [`crate::sort`]),
//! because a report sorts each column once and runs several tests on it.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// A test's statistic, and its p-value where the test has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The test statistic.
    pub statistic: f64,
    /// The p-value (tests of hypotheses only).
    pub p_value: Option<f64>,
}

/// How the Kolmogorov–Smirnov p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    /// Exact (counting lattice paths) when `n·m ≤ 10⁶`, else asymptotic.
    Auto,
    /// The exact distribution of the statistic (no ties assumed).
    Exact,
    /// The limiting Kolmogorov distribution at `D·√(nm/(n+m))`.
    Asymptotic,
}

/// Largest `n·m` for which [`KsMethod::Auto`] counts paths exactly.
pub const KS_EXACT_LIMIT: u64 = 1_000_000;

/// The two-sample KS statistic of two sorted samples, each with uniform
/// weights: the largest gap between their empirical CDFs.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = if a[i] <= b[j] { a[i] } else { b[j] };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Two-sample KS test of sorted samples. `n` and `m` are the sample sizes
/// the p-value is computed for (a reference kept as a quantile sketch has
/// fewer points than rows); `a.len()`/`b.len()` when the samples are whole.
pub fn ks_test(a: &[f64], b: &[f64], n: u64, m: u64, method: KsMethod) -> TestResult {
    let d = ks_statistic(a, b);
    let exact = match method {
        KsMethod::Exact => true,
        KsMethod::Asymptotic => false,
        KsMethod::Auto => n.saturating_mul(m) <= KS_EXACT_LIMIT,
    };
    let p = if exact {
        ks_exact_p(d, n, m)
    } else {
        let en = (n as f64 * m as f64) / (n as f64 + m as f64);
        kolmogorov_sf(en.sqrt() * d)
    };
    TestResult {
        statistic: d,
        p_value: Some(p.clamp(0.0, 1.0)),
    }
}

/// P(D ≥ d) for samples of sizes n and m under the null: one minus the
/// probability that a uniformly random lattice path from (0,0) to (n,m)
/// stays strictly inside |i·m − j·n| < d·n·m.
fn ks_exact_p(d: f64, n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let h = (d * n as f64 * m as f64).round() as i128;
    if h <= 0 {
        return 1.0;
    }
    let (n, m) = (n as usize, m as usize);
    let outside = |i: usize, j: usize| (i as i128 * m as i128 - j as i128 * n as i128).abs() >= h;
    // prob[j]: the probability of being at (i, j) having stayed inside.
    let mut prob = vec![0f64; m + 1];
    prob[0] = 1.0;
    for i in 0..=n {
        for j in 0..=m {
            if i == 0 && j == 0 {
                continue;
            }
            if outside(i, j) {
                prob[j] = 0.0;
                continue;
            }
            // Arriving from (i-1, j) took an `a` step; from (i, j-1) a `b`.
            let from_a = if i > 0 {
                let (ra, rb) = ((n - (i - 1)) as f64, (m - j) as f64);
                prob[j] * ra / (ra + rb)
            } else {
                0.0
            };
            let from_b = if j > 0 {
                let (ra, rb) = ((n - i) as f64, (m - (j - 1)) as f64);
                prob[j - 1] * rb / (ra + rb)
            } else {
                0.0
            };
            prob[j] = from_a + from_b;
        }
    }
    1.0 - prob[m]
}

/// The survival function of the Kolmogorov distribution (scipy's
/// `kstwobign.sf`).
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // The Jacobi theta form converges fast for small x.
        let c = std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        let mut cdf = 0.0;
        for k in 1..=50 {
            let k = f64::from(2 * k - 1);
            let term = (-k * k * c).exp();
            cdf += term;
            if term < 1e-17 {
                break;
            }
        }
        let cdf = (2.0 * std::f64::consts::PI).sqrt() / x * cdf;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The 1-Wasserstein (earth mover's) distance between two sorted samples
/// with uniform weights: ∫ |F_a − F_b| dx.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut x = if a[0] <= b[0] { a[0] } else { b[0] };
    let mut area = 0.0;
    while i < a.len() || j < b.len() {
        // Advance past every point equal to x, then integrate up to the next.
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        area += (i as f64 / n - j as f64 / m).abs() * (next - x);
        x = next;
    }
    area
}

/// Chi-squared test of homogeneity of two count vectors over the same
/// categories (scipy's `chi2_contingency` on the 2×k table, no continuity
/// correction). Categories empty in both are left out; with fewer than two
/// categories left the samples cannot differ: statistic 0, p-value 1.
pub fn chi_squared(reference: &[u64], current: &[u64]) -> TestResult {
    let pairs: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .filter(|(r, c)| **r + **c > 0)
        .map(|(&r, &c)| (r as f64, c as f64))
        .collect();
    let (nr, nc): (f64, f64) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (r, c)| (a + r, b + c));
    if pairs.len() < 2 || nr == 0.0 || nc == 0.0 {
        return TestResult {
            statistic: 0.0,
            p_value: Some(1.0),
        };
    }
    let total = nr + nc;
    let mut stat = 0.0;
    for &(r, c) in &pairs {
        let col = r + c;
        let (er, ec) = (nr * col / total, nc * col / total);
        stat += (r - er).powi(2) / er + (c - ec).powi(2) / ec;
    }
    let dof = (pairs.len() - 1) as f64;
    let p = ChiSquared::new(dof).map(|d| d.sf(stat)).unwrap_or(1.0);
    TestResult {
        statistic: stat,
        p_value: Some(p.clamp(0.0, 1.0)),
    }
}

/// The floor a share gets in [`psi`], so an empty bin keeps it finite.
pub const PSI_FLOOR: f64 = 1e-4;

/// Population stability index: Σ (q − p)·ln(q / p) over bins, with each
/// share floored at [`PSI_FLOOR`].
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let (p, q) = (shares(reference), shares(current));
    p.iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (natural log, as scipy's default): the square
/// root of the mean Kullback–Leibler divergence of each distribution from
/// their average; 0 for equal distributions, at most √ln 2.
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> f64 {
    let (p, q) = (shares(reference), shares(current));
    let kl = |x: f64, m: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    let divergence: f64 = p
        .iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let m = (p + q) / 2.0;
            kl(p, m) + kl(q, m)
        })
        .sum::<f64>()
        / 2.0;
    divergence.max(0.0).sqrt()
}

/// Each count's share of their total (all 0 for no counts).
pub(crate) fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// Welch's t-test of mean(a) − mean(b) without assuming equal variances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WelchResult {
    /// The t statistic.
    pub t: f64,
    /// The Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// The two-sided p-value.
    pub p_value: f64,
}

/// Welch's t-test from summaries: means, sample variances (n − 1) and sizes.
/// Needs at least two observations per sample; when both variances are zero
/// the means either agree (t = 0, p = 1) or differ with certainty (p = 0).
pub fn welch(mean_a: f64, var_a: f64, n_a: u64, mean_b: f64, var_b: f64, n_b: u64) -> WelchResult {
    let (na, nb) = (n_a as f64, n_b as f64);
    let (sa, sb) = (var_a / na, var_b / nb);
    let se2 = sa + sb;
    if se2.is_nan() || se2 <= 0.0 {
        let same = mean_a == mean_b;
        return WelchResult {
            t: 0.0,
            df: (na + nb - 2.0).max(1.0),
            p_value: if same { 1.0 } else { 0.0 },
        };
    }
    let t = (mean_a - mean_b) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let p = StudentsT::new(0.0, 1.0, df)
        .map(|d| 2.0 * d.sf(t.abs()))
        .unwrap_or(1.0);
    WelchResult {
        t,
        df,
        p_value: p.clamp(0.0, 1.0),
    }
}

/// The pooled two-proportion z-test of p_b − p_a: (z, two-sided p-value).
/// When neither sample varies (all successes or all failures in both), z is
/// 0 and the p-value 1.
pub fn two_proportion_z(successes_a: u64, n_a: u64, successes_b: u64, n_b: u64) -> (f64, f64) {
    let (na, nb) = (n_a as f64, n_b as f64);
    let pooled = (successes_a + successes_b) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return (0.0, 1.0);
    }
    let z = (successes_b as f64 / nb - successes_a as f64 / na) / se;
    (z, (2.0 * standard_normal().sf(z.abs())).clamp(0.0, 1.0))
}

/// Observations per arm for a two-sided two-proportion test to detect an
/// absolute change `mde` from `baseline` with the given alpha and power.
pub fn sample_size_proportions(baseline: f64, mde: f64, alpha: f64, power: f64) -> u64 {
    let (p1, p2) = (baseline, (baseline + mde).clamp(0.0, 1.0));
    let pbar = (p1 + p2) / 2.0;
    let normal = standard_normal();
    let za = normal.inverse_cdf(1.0 - alpha / 2.0);
    let zb = normal.inverse_cdf(power);
    let num =
        za * (2.0 * pbar * (1.0 - pbar)).sqrt() + zb * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    let n = (num * num / (mde * mde)).ceil();
    if n.is_finite() { n as u64 } else { u64::MAX }
}

/// Observations per arm for a two-sided test of means to detect an absolute
/// change `mde` in a metric with standard deviation `std`.
pub fn sample_size_means(std: f64, mde: f64, alpha: f64, power: f64) -> u64 {
    let normal = standard_normal();
    let z = normal.inverse_cdf(1.0 - alpha / 2.0) + normal.inverse_cdf(power);
    let n = (2.0 * z * z * std * std / (mde * mde)).ceil();
    if n.is_finite() { n as u64 } else { u64::MAX }
}

/// The standard normal distribution.
pub fn standard_normal() -> Normal {
    // Parameters are constants: this cannot fail.
    Normal::standard()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_have_no_distance() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(wasserstein(&a, &a), 0.0);
        assert_eq!(psi(&[5, 5, 0], &[5, 5, 0]), 0.0);
        assert_eq!(jensen_shannon(&[5, 5, 0], &[10, 10, 0]), 0.0);
        let r = chi_squared(&[10, 20], &[20, 40]);
        assert!(r.statistic.abs() < 1e-12 && r.p_value == Some(1.0));
    }

    #[test]
    fn exact_ks_of_disjoint_samples() {
        // Every path from (0,0) to (3,3) touches D = 1 only along the two
        // border paths: p = 2 / C(6,3) = 0.1.
        let r = ks_test(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 3, 3, KsMethod::Exact);
        assert_eq!(r.statistic, 1.0);
        assert!((r.p_value.unwrap() - 0.1).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn a_single_category_cannot_drift() {
        assert_eq!(chi_squared(&[10], &[3]).p_value, Some(1.0));
        assert_eq!(chi_squared(&[0, 0], &[0, 0]).p_value, Some(1.0));
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let a: Vec<f64> = (0..50).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 2.5).collect();
        assert!((wasserstein(&a, &b) - 2.5).abs() < 1e-12);
    }
}
