//! A/B analysis: per-arm outcomes with confidence intervals, the
//! significance test that fits the outcome, the sample size a stated
//! minimum detectable effect needs, and a recommendation.
//!
//! Peeking: the design is **fixed horizon**. The sample size per arm is
//! computed up front from the minimum detectable effect, alpha and power;
//! until both arms reach it the answer is "keep collecting" whatever the
//! p-value says, and at the horizon the test is read once. Looking at the
//! running numbers (the report, the metrics) is harmless because no
//! decision is taken from them before the horizon — that is what keeps the
//! false-positive rate at alpha.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats;

/// Running sums of one arm's outcomes (mergeable, so a server can keep
/// them per arm without keeping the values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Outcomes counted.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares.
    pub sum_squares: f64,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, value: f64) {
        self.n += 1;
        self.sum += value;
        self.sum_squares += value * value;
    }

    /// A tally of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Tally {
        let mut t = Tally::default();
        for v in values {
            t.add(v);
        }
        t
    }

    /// The mean (0 for no outcomes).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The sample variance (n − 1; 0 below two outcomes).
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_squares - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }
}

/// What kind of outcome is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// 0/1 outcomes (a conversion, a correct prediction): two-proportion
    /// z-test.
    Proportion,
    /// Any number (revenue, an error): Welch's t-test.
    Continuous,
}

/// The design of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AbOptions {
    /// Significance level.
    pub alpha: f64,
    /// Power at the minimum detectable effect.
    pub power: f64,
    /// The smallest absolute difference worth detecting.
    pub mde: f64,
    /// Whether a larger outcome is better.
    pub higher_is_better: bool,
}

impl Default for AbOptions {
    fn default() -> Self {
        AbOptions {
            alpha: 0.05,
            power: 0.8,
            mde: 0.02,
            higher_is_better: true,
        }
    }
}

/// One arm's outcome, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// The arm (alias).
    pub arm: String,
    /// Outcomes counted.
    pub n: u64,
    /// The mean outcome (the rate, for proportions).
    pub mean: f64,
    /// The lower end of its (1 − alpha) confidence interval.
    pub ci_low: f64,
    /// The upper end.
    pub ci_high: f64,
}

/// The recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The treatment is significantly better at the horizon.
    Promote,
    /// At the horizon the treatment is not significantly better.
    Keep,
    /// The horizon is not reached.
    KeepCollecting,
}

impl Decision {
    /// The decision as reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Keep => "keep",
            Decision::KeepCollecting => "keep collecting",
        }
    }
}

/// The comparison of a treatment arm with the control arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    /// The outcome kind (which test).
    pub kind: OutcomeKind,
    /// The control arm.
    pub control: ArmSummary,
    /// The treatment arm.
    pub treatment: ArmSummary,
    /// treatment − control.
    pub difference: f64,
    /// Its (1 − alpha) confidence interval.
    pub difference_ci: (f64, f64),
    /// `two_proportion_z` or `welch_t`.
    pub test: String,
    /// z or t.
    pub statistic: f64,
    /// The two-sided p-value.
    pub p_value: f64,
    /// Welch's degrees of freedom (continuous outcomes).
    pub df: Option<f64>,
    /// Outcomes needed per arm (the horizon).
    pub required_per_arm: u64,
    /// The recommendation.
    pub decision: Decision,
    /// Why, in a sentence.
    pub reason: String,
    /// The peeking rule applied.
    pub method: String,
    /// The design.
    pub options: AbOptions,
}

/// The peeking rule, as reports state it.
pub const PEEKING_RULE: &str = "fixed horizon: the sample size per arm is set from the minimum detectable effect, alpha and power before the test; no decision is taken before both arms reach it, and the test is read once at the horizon";

/// Compares `treatment` with `control`.
pub fn analyze(
    kind: OutcomeKind,
    control: (&str, Tally),
    treatment: (&str, Tally),
    options: AbOptions,
) -> Result<AbResult> {
    check_inputs(kind, control, treatment, &options)?;
    let (c, t) = (control.1, treatment.1);
    let normal = stats::standard_normal();
    use statrs::distribution::ContinuousCDF;
    let z = normal.inverse_cdf(1.0 - options.alpha / 2.0);
    let difference = t.mean() - c.mean();
    let test = run_test(kind, c, t, &options);
    let (decision, reason) = decide(control, treatment, difference, &test, &options);
    Ok(AbResult {
        kind,
        control: arm_summary(kind, control.0, c, z),
        treatment: arm_summary(kind, treatment.0, t, z),
        difference,
        difference_ci: (difference - z * test.se_diff, difference + z * test.se_diff),
        test: test.name.to_string(),
        statistic: test.statistic,
        p_value: test.p_value,
        df: test.df,
        required_per_arm: test.required,
        decision,
        reason,
        method: PEEKING_RULE.to_string(),
        options,
    })
}

/// Refuses a design outside its ranges and arms whose outcomes cannot be
/// tested (not finite; for proportions, not 0/1).
fn check_inputs(
    kind: OutcomeKind,
    control: (&str, Tally),
    treatment: (&str, Tally),
    options: &AbOptions,
) -> Result<()> {
    if !(options.alpha > 0.0 && options.alpha < 1.0) {
        return Err(Error::InvalidOption(format!(
            "alpha must be in (0, 1), got {}",
            options.alpha
        )));
    }
    if !(options.power > 0.0 && options.power < 1.0) {
        return Err(Error::InvalidOption(format!(
            "power must be in (0, 1), got {}",
            options.power
        )));
    }
    if !(options.mde.is_finite() && options.mde > 0.0) {
        return Err(Error::InvalidOption(format!(
            "the minimum detectable effect must be a positive number, got {}",
            options.mde
        )));
    }
    for (name, tally) in [control, treatment] {
        if !(tally.sum.is_finite() && tally.sum_squares.is_finite()) {
            return Err(Error::InvalidOption(format!(
                "the outcomes of arm {name} are not finite numbers"
            )));
        }
        if kind == OutcomeKind::Proportion && (tally.sum < 0.0 || tally.sum > tally.n as f64) {
            return Err(Error::InvalidOption(format!(
                "arm {name} has {} successes in {} outcomes: proportions need 0/1 outcomes",
                tally.sum, tally.n
            )));
        }
    }
    Ok(())
}

/// What the test of one comparison found.
struct TestOutcome {
    /// `two_proportion_z` or `welch_t`.
    name: &'static str,
    statistic: f64,
    p_value: f64,
    /// Welch's degrees of freedom (continuous outcomes).
    df: Option<f64>,
    /// The standard error of the difference.
    se_diff: f64,
    /// Outcomes needed per arm (the horizon).
    required: u64,
}

/// The test `kind` calls for, of treatment `t` against control `c`.
fn run_test(kind: OutcomeKind, c: Tally, t: Tally, options: &AbOptions) -> TestOutcome {
    match kind {
        OutcomeKind::Proportion => {
            let (z_stat, p) = if c.n > 0 && t.n > 0 {
                stats::two_proportion_z(c.sum.round() as u64, c.n, t.sum.round() as u64, t.n)
            } else {
                (0.0, 1.0)
            };
            let se = (var_p(c) + var_p(t)).sqrt();
            let required = stats::sample_size_proportions(
                c.mean().clamp(0.0, 1.0),
                if options.higher_is_better {
                    options.mde
                } else {
                    -options.mde
                },
                options.alpha,
                options.power,
            );
            TestOutcome {
                name: "two_proportion_z",
                statistic: z_stat,
                p_value: p,
                df: None,
                se_diff: se,
                required,
            }
        }
        OutcomeKind::Continuous => {
            let w = if c.n >= 2 && t.n >= 2 {
                // scipy's sign convention is a − b; report treatment − control.
                stats::welch(t.mean(), t.variance(), t.n, c.mean(), c.variance(), c.n)
            } else {
                stats::WelchResult {
                    t: 0.0,
                    df: 1.0,
                    p_value: 1.0,
                }
            };
            let se = (c.variance() / c.n.max(1) as f64 + t.variance() / t.n.max(1) as f64).sqrt();
            let std = ((c.variance() + t.variance()) / 2.0).sqrt();
            let required =
                stats::sample_size_means(std, options.mde, options.alpha, options.power).max(2);
            TestOutcome {
                name: "welch_t",
                statistic: w.t,
                p_value: w.p_value,
                df: Some(w.df),
                se_diff: se,
                required,
            }
        }
    }
}

/// One arm's mean with its confidence interval (`z` standard errors).
fn arm_summary(kind: OutcomeKind, name: &str, tally: Tally, z: f64) -> ArmSummary {
    let (lo, hi) = match kind {
        OutcomeKind::Proportion => wilson(tally, z),
        OutcomeKind::Continuous => {
            let half = z * (tally.variance() / tally.n.max(1) as f64).sqrt();
            (tally.mean() - half, tally.mean() + half)
        }
    };
    ArmSummary {
        arm: name.to_string(),
        n: tally.n,
        mean: tally.mean(),
        ci_low: lo,
        ci_high: hi,
    }
}

/// The recommendation under the fixed-horizon rule, and why.
fn decide(
    control: (&str, Tally),
    treatment: (&str, Tally),
    difference: f64,
    test: &TestOutcome,
    options: &AbOptions,
) -> (Decision, String) {
    let (c, t) = (control.1, treatment.1);
    let (required, p_value) = (test.required, test.p_value);
    let better = if options.higher_is_better {
        difference > 0.0
    } else {
        difference < 0.0
    };
    if c.n < required || t.n < required {
        (
            Decision::KeepCollecting,
            format!(
                "{} and {} outcomes so far; the horizon is {} per arm for an effect of {} (alpha {}, power {})",
                c.n, t.n, required, options.mde, options.alpha, options.power
            ),
        )
    } else if p_value < options.alpha && better {
        (
            Decision::Promote,
            format!(
                "{} beats {} by {:+.4} (p = {:.4} < {})",
                treatment.0, control.0, difference, p_value, options.alpha
            ),
        )
    } else if p_value < options.alpha {
        (
            Decision::Keep,
            format!(
                "{} is significantly worse than {} ({:+.4}, p = {:.4})",
                treatment.0, control.0, difference, p_value
            ),
        )
    } else {
        (
            Decision::Keep,
            format!(
                "no significant difference at the horizon ({:+.4}, p = {:.4} ≥ {})",
                difference, p_value, options.alpha
            ),
        )
    }
}

fn var_p(t: Tally) -> f64 {
    if t.n == 0 {
        return 0.0;
    }
    let p = t.mean();
    p * (1.0 - p) / t.n as f64
}

/// Wilson's score interval for a proportion.
fn wilson(t: Tally, z: f64) -> (f64, f64) {
    if t.n == 0 {
        return (0.0, 1.0);
    }
    let n = t.n as f64;
    let p = t.mean();
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(successes: u64, n: u64) -> Tally {
        Tally::of((0..n).map(|i| if i < successes { 1.0 } else { 0.0 }))
    }

    #[test]
    fn a_clear_win_past_the_horizon_is_promoted() {
        let options = AbOptions {
            mde: 0.05,
            ..AbOptions::default()
        };
        let r = analyze(
            OutcomeKind::Proportion,
            ("champion", tally(1000, 5000)),
            ("challenger", tally(1300, 5000)),
            options,
        )
        .unwrap();
        assert!(r.required_per_arm < 5000, "{r:?}");
        assert_eq!(r.decision, Decision::Promote, "{r:?}");
        assert!(r.treatment.ci_low < 0.26 && r.treatment.ci_high > 0.26);
    }

    #[test]
    fn before_the_horizon_the_answer_is_keep_collecting() {
        let r = analyze(
            OutcomeKind::Proportion,
            ("champion", tally(10, 100)),
            ("challenger", tally(40, 100)),
            AbOptions::default(),
        )
        .unwrap();
        assert!(r.p_value < 0.001);
        assert_eq!(r.decision, Decision::KeepCollecting, "{r:?}");
    }

    #[test]
    fn worse_or_equal_arms_are_kept() {
        let options = AbOptions {
            mde: 0.05,
            ..AbOptions::default()
        };
        let worse = analyze(
            OutcomeKind::Proportion,
            ("champion", tally(1300, 5000)),
            ("challenger", tally(1000, 5000)),
            options,
        )
        .unwrap();
        assert_eq!(worse.decision, Decision::Keep);
        // Lower error is better: a continuous outcome.
        let lower = AbOptions {
            mde: 0.2,
            higher_is_better: false,
            ..AbOptions::default()
        };
        let same = analyze(
            OutcomeKind::Continuous,
            ("champion", Tally::of((0..4000).map(|i| f64::from(i % 7)))),
            (
                "challenger",
                Tally::of((0..4000).map(|i| f64::from((i + 3) % 7))),
            ),
            lower,
        )
        .unwrap();
        assert_eq!(same.decision, Decision::Keep, "{same:?}");
    }

    #[test]
    fn bad_designs_are_refused() {
        for options in [
            AbOptions {
                alpha: 0.0,
                ..AbOptions::default()
            },
            AbOptions {
                power: 1.0,
                ..AbOptions::default()
            },
            AbOptions {
                mde: f64::NAN,
                ..AbOptions::default()
            },
        ] {
            assert!(
                analyze(
                    OutcomeKind::Proportion,
                    ("a", tally(1, 2)),
                    ("b", tally(1, 2)),
                    options
                )
                .is_err()
            );
        }
        let not_binary = Tally::of([2.0, 3.0]);
        assert!(
            analyze(
                OutcomeKind::Proportion,
                ("a", not_binary),
                ("b", tally(1, 2)),
                AbOptions::default()
            )
            .is_err()
        );
    }
}
