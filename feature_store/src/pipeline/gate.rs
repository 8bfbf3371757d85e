//! Quality gates: what a silver batch must meet for the gold tables over
//! it to advance. Each configured check (a source's `[source.quality_gate]`
//! and each view's over the source) is measured on the batch, written with
//! its outcome to the quality table in the batch's own commit (so a server
//! shows the last run's gates, and a re-run writes nothing twice), and a
//! failed one holds gold back for the run, which then fails naming it.

use crate::project::{QualityGate, Source, ViewSpec};

/// One check of one gate on one batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateCheck {
    /// The view whose gate this is (`None`: the source's own).
    pub view: Option<String>,
    /// `min_score` or `max_quarantine_share`.
    pub check: &'static str,
    /// What the batch measured.
    pub value: f64,
    /// The gate's threshold.
    pub threshold: f64,
    /// Whether the batch met it.
    pub passed: bool,
}

impl GateCheck {
    /// The check named as the quality table and messages name it.
    pub fn name(&self) -> String {
        format!("gate:{}", self.check)
    }

    /// What failed, for the run's error.
    pub fn describe(&self, source: &str) -> String {
        let whose = match &self.view {
            Some(view) => format!("the quality gate of feature view {view}"),
            None => format!("the quality gate of source {source}"),
        };
        let (measured, relation) = match self.check {
            "min_score" => ("quality score", "under the minimum"),
            _ => ("quarantined share", "over the maximum"),
        };
        format!(
            "{whose}: the batch's {measured} {:.4} is {relation} {} ({})",
            self.value,
            self.threshold,
            self.name()
        )
    }
}

/// The gates over `source`'s batch (its own and those of `views` over it)
/// measured on a batch of `rows` rows with quality `score` and
/// `quarantined` rows quarantined.
pub(crate) fn evaluate(
    source: &Source,
    views: &[&ViewSpec],
    score: f64,
    quarantined: usize,
    rows: usize,
) -> Vec<GateCheck> {
    let share = if rows == 0 {
        0.0
    } else {
        quarantined as f64 / rows as f64
    };
    let gates = std::iter::once((None, source.quality_gate))
        .chain(views.iter().map(|v| (Some(v.name.clone()), v.quality_gate)));
    let mut checks = Vec::new();
    for (view, gate) in gates {
        let QualityGate {
            min_score,
            max_quarantine_share,
        } = gate;
        if let Some(min) = min_score {
            checks.push(GateCheck {
                view: view.clone(),
                check: "min_score",
                value: score,
                threshold: min,
                passed: score >= min,
            });
        }
        if let Some(max) = max_quarantine_share {
            checks.push(GateCheck {
                view: view.clone(),
                check: "max_quarantine_share",
                value: share,
                threshold: max,
                passed: share <= max,
            });
        }
    }
    checks
}

/// Whether `view`'s gold may advance after `checks` of its source's batch.
pub(crate) fn holds(checks: &[GateCheck], view: &str) -> bool {
    checks
        .iter()
        .any(|c| !c.passed && c.view.as_deref().is_none_or(|v| v == view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(view: Option<&str>, passed: bool) -> GateCheck {
        GateCheck {
            view: view.map(str::to_string),
            check: "min_score",
            value: 0.9,
            threshold: 0.95,
            passed,
        }
    }

    #[test]
    fn a_failed_source_gate_holds_every_view_and_a_view_gate_only_its_own() {
        assert!(holds(&[check(None, false)], "a"));
        assert!(holds(&[check(Some("a"), false)], "a"));
        assert!(!holds(&[check(Some("a"), false)], "b"));
        assert!(!holds(&[check(None, true), check(Some("b"), true)], "b"));
        assert_eq!(
            check(Some("a"), false).describe("tx"),
            "the quality gate of feature view a: the batch's quality score 0.9000 is under the minimum 0.95 (gate:min_score)"
        );
    }
}
