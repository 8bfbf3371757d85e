//! The inputs of the A/B analysis: the outcomes of the [`crate::feedback`]
//! table tallied per arm, under the version each arm's alias points at now,
//! and the comparison of every arm with the control by
//! [`drift::ab::analyze`].

use std::collections::BTreeMap;

use drift::ab::{AbOptions, AbResult, Decision, OutcomeKind, Tally};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::feedback::Outcome;

/// What is compared between arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbMetric {
    /// Whether the prediction (≥ 0.5) equals a 0/1 outcome.
    Accuracy,
    /// The outcome itself (e.g. a conversion).
    Outcome,
    /// |prediction − outcome|; lower is better.
    AbsoluteError,
}

impl AbMetric {
    /// The metric named `accuracy`, `outcome` or `absolute_error`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownMetric`] for any other name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "accuracy" => Ok(AbMetric::Accuracy),
            "outcome" => Ok(AbMetric::Outcome),
            "absolute_error" => Ok(AbMetric::AbsoluteError),
            other => Err(Error::UnknownMetric(other.to_string())),
        }
    }

    /// The metric's name, as [`AbMetric::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            AbMetric::Accuracy => "accuracy",
            AbMetric::Outcome => "outcome",
            AbMetric::AbsoluteError => "absolute_error",
        }
    }

    /// The metric's value for prediction `p` and outcome `y`.
    pub fn value(self, p: f64, y: f64) -> f64 {
        match self {
            AbMetric::Accuracy => f64::from(u8::from((p >= 0.5) == (y == 1.0))),
            AbMetric::Outcome => y,
            AbMetric::AbsoluteError => (p - y).abs(),
        }
    }
}

/// Every arm's tally of one metric, ready to be compared.
#[derive(Debug, Clone)]
pub struct AbInputs {
    /// The metric tallied.
    pub metric: AbMetric,
    /// Which test fits it.
    pub kind: OutcomeKind,
    /// Whether a larger value is better.
    pub higher_is_better: bool,
    /// The control arm.
    pub control: String,
    /// The version the control's alias points at.
    pub control_version: u64,
    /// The control's tally (empty when it has no outcomes).
    pub control_tally: Tally,
    /// Every arm with outcomes (the control too), with the version its
    /// alias points at now and its tally there.
    pub arms: BTreeMap<String, (u64, Tally)>,
}

/// Tallies `outcomes` per arm under the version each arm's alias (in
/// `aliases`) points at now; outcomes of other versions or of arms that are
/// not aliases are left out. Without a `metric`, accuracy is used when
/// every outcome is 0 or 1, and the absolute error otherwise.
///
/// # Errors
///
/// [`Error::NoControl`] when `control` is not in `aliases`;
/// [`Error::MetricNeedsBinary`] when accuracy is asked for but not every
/// outcome is 0 or 1.
pub fn ab_inputs(
    outcomes: &[Outcome],
    aliases: &BTreeMap<String, u64>,
    control: &str,
    metric: Option<AbMetric>,
) -> Result<AbInputs> {
    let Some(&control_version) = aliases.get(control) else {
        return Err(Error::NoControl(control.to_string()));
    };
    // Judged over all of the model's outcomes, before the alias filter.
    let binary = outcomes
        .iter()
        .all(|o| o.outcome == 0.0 || o.outcome == 1.0);
    let metric = metric.unwrap_or(if binary {
        AbMetric::Accuracy
    } else {
        AbMetric::AbsoluteError
    });
    let (kind, higher_is_better) = match metric {
        AbMetric::Accuracy if binary => (OutcomeKind::Proportion, true),
        AbMetric::Accuracy => return Err(Error::MetricNeedsBinary),
        AbMetric::Outcome if binary => (OutcomeKind::Proportion, true),
        AbMetric::Outcome => (OutcomeKind::Continuous, true),
        AbMetric::AbsoluteError => (OutcomeKind::Continuous, false),
    };
    let mut arms: BTreeMap<String, (u64, Tally)> = BTreeMap::new();
    for o in outcomes {
        let Some(&current) = aliases.get(&o.arm) else {
            continue;
        };
        if o.version != current {
            continue;
        }
        arms.entry(o.arm.clone())
            .or_insert((current, Tally::default()))
            .1
            .add(metric.value(o.prediction, o.outcome));
    }
    let control_tally = arms.get(control).map(|(_, t)| *t).unwrap_or_default();
    Ok(AbInputs {
        metric,
        kind,
        higher_is_better,
        control: control.to_string(),
        control_version,
        control_tally,
        arms,
    })
}

impl AbInputs {
    /// The test design: `mde` when given, else 0.02 for proportions and a
    /// tenth of the control's standard deviation otherwise.
    pub fn options(&self, mde: Option<f64>, alpha: f64, power: f64) -> AbOptions {
        let mde = match mde {
            Some(m) => m,
            None if self.kind == OutcomeKind::Proportion => 0.02,
            None => (self.control_tally.variance().sqrt() / 10.0).max(f64::MIN_POSITIVE),
        };
        AbOptions {
            alpha,
            power,
            mde,
            higher_is_better: self.higher_is_better,
        }
    }

    /// Every arm other than the control compared with it, in arm order
    /// (empty when only the control has outcomes).
    ///
    /// # Errors
    ///
    /// [`Error::Drift`] when `options` are out of range.
    pub fn compare(&self, options: AbOptions) -> Result<Vec<ArmComparison>> {
        let mut results = Vec::new();
        for (arm, (version, tally)) in &self.arms {
            if *arm == self.control {
                continue;
            }
            let result = drift::ab::analyze(
                self.kind,
                (&self.control, self.control_tally),
                (arm, *tally),
                options,
            )
            .map_err(Error::Drift)?;
            results.push(ArmComparison {
                arm: arm.clone(),
                version: *version,
                result,
            });
        }
        Ok(results)
    }
}

/// One arm compared with the control.
#[derive(Debug, Clone, Serialize)]
pub struct ArmComparison {
    /// The arm (alias).
    pub arm: String,
    /// The version its alias points at.
    pub version: u64,
    /// The comparison.
    pub result: AbResult,
}

/// The best arm to promote, if any: among the comparisons recommending
/// promotion, the one with the largest improvement.
pub fn winner(comparisons: &[ArmComparison], higher_is_better: bool) -> Option<&ArmComparison> {
    let key = |r: &AbResult| {
        if higher_is_better {
            r.difference
        } else {
            -r.difference
        }
    };
    comparisons
        .iter()
        .filter(|c| c.result.decision == Decision::Promote)
        .max_by(|a, b| key(&a.result).total_cmp(&key(&b.result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(arm: &str, version: u64, prediction: f64, outcome: f64) -> Outcome {
        Outcome {
            arm: arm.into(),
            version,
            prediction,
            outcome,
        }
    }

    fn aliases() -> BTreeMap<String, u64> {
        [("champion".to_string(), 1), ("challenger".to_string(), 2)].into()
    }

    #[test]
    fn arms_are_tallied_at_their_current_version() {
        let outcomes = [
            outcome("champion", 1, 0.9, 1.0),
            outcome("champion", 1, 0.9, 0.0),
            outcome("challenger", 2, 0.8, 1.0),
            // An old version of the challenger, and an arm with no alias.
            outcome("challenger", 1, 0.8, 0.0),
            outcome("canary", 3, 0.8, 0.0),
        ];
        let inputs = ab_inputs(&outcomes, &aliases(), "champion", None).unwrap();
        assert_eq!(inputs.metric, AbMetric::Accuracy);
        assert_eq!(inputs.kind, OutcomeKind::Proportion);
        assert_eq!(inputs.control_version, 1);
        assert_eq!(inputs.control_tally, Tally::of([1.0, 0.0]));
        assert_eq!(inputs.arms.len(), 2);
        assert_eq!(inputs.arms["challenger"], (2, Tally::of([1.0])));
        assert_eq!(inputs.options(None, 0.05, 0.8).mde, 0.02);
        let compared = inputs.compare(inputs.options(None, 0.05, 0.8)).unwrap();
        assert_eq!(compared.len(), 1);
        assert_eq!(compared[0].arm, "challenger");
    }

    #[test]
    fn the_metric_fits_the_outcomes() {
        let continuous = [outcome("champion", 1, 2.0, 3.5)];
        let inputs = ab_inputs(&continuous, &aliases(), "champion", None).unwrap();
        assert_eq!(
            (inputs.metric, inputs.kind, inputs.higher_is_better),
            (AbMetric::AbsoluteError, OutcomeKind::Continuous, false)
        );
        assert!(matches!(
            ab_inputs(
                &continuous,
                &aliases(),
                "champion",
                Some(AbMetric::Accuracy)
            ),
            Err(Error::MetricNeedsBinary)
        ));
        assert!(matches!(
            ab_inputs(&continuous, &aliases(), "nobody", None),
            Err(Error::NoControl(_))
        ));
        assert!(matches!(
            AbMetric::parse("auc"),
            Err(Error::UnknownMetric(m)) if m == "auc"
        ));
        // The absolute error is lower-is-better even for 0/1 outcomes.
        let binary = [outcome("champion", 1, 0.2, 1.0)];
        let inputs = ab_inputs(
            &binary,
            &aliases(),
            "champion",
            Some(AbMetric::AbsoluteError),
        )
        .unwrap();
        assert_eq!(inputs.kind, OutcomeKind::Continuous);
        assert!(!inputs.higher_is_better);
    }
}
