//! Quality gates: what a silver batch must meet for the gold tables over
//! it to advance. Each configured check (a source's `[source.quality_gate]`
//! and each view's over the source) is measured on the batch, written with
//! its outcome to the quality table in the batch's own commit (so a server
//! shows the last run's gates, and a re-run writes nothing twice), and a
//! failed one holds gold back for the run, which then fails naming it.

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::silver::QUALITY_TABLE;
use crate::project::{Project, QualityGate, Source, ViewSpec};

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

/// Adds a later batch's checks to a run's: one check per (view, check),
/// failed when any batch failed it (the failing value kept).
pub(crate) fn merge(checks: &mut Vec<GateCheck>, later: Vec<GateCheck>) {
    for check in later {
        match checks
            .iter_mut()
            .find(|c| c.view == check.view && c.check == check.check)
        {
            Some(known) => {
                if known.passed && !check.passed || known.passed == check.passed {
                    *known = check;
                }
            }
            None => checks.push(check),
        }
    }
}

/// Whether `source` or a view over it declares a gate.
pub(crate) fn declared(project: &Project, source: &Source) -> bool {
    !source.quality_gate.is_empty()
        || project
            .feature_views
            .iter()
            .any(|v| v.source == source.name && !v.quality_gate.is_empty())
}

/// The gate checks of `source`'s last measured batch (its rows in the
/// quality table), judged against the gates as they are declared now.
pub(crate) async fn last_verdict(
    store: &delta::DeltaStore,
    project: &Project,
    source: &Source,
) -> Result<Vec<GateCheck>> {
    if store.latest_version(QUALITY_TABLE).await?.is_none() {
        return Ok(Vec::new());
    }
    let (frame, _) = store.read(QUALITY_TABLE, None).await?;
    let rows = frame
        .lazy()
        .filter(
            col("source")
                .eq(lit(source.name.as_str()))
                .and(col("check").str().starts_with(lit("gate:"))),
        )
        .filter(col("bronze_version").eq(col("bronze_version").max()))
        .select([
            col("column"),
            col("check"),
            col("score").cast(DataType::Float64),
        ])
        .collect()
        .map_err(Error::polars("reading the last quality gate verdicts"))?;
    let text = |name: &str| -> Result<StringChunked> {
        Ok(rows
            .column(name)
            .map_err(Error::polars("reading the last quality gate verdicts"))?
            .str()
            .map_err(Error::polars("reading the last quality gate verdicts"))?
            .clone())
    };
    let (columns, names) = (text("column")?, text("check")?);
    let scores = rows
        .column("score")
        .map_err(Error::polars("reading the last quality gate verdicts"))?
        .f64()
        .map_err(Error::polars("reading the last quality gate verdicts"))?
        .clone();
    let mut checks = Vec::new();
    for i in 0..rows.height() {
        let (Some(column), Some(name), Some(value)) = (columns.get(i), names.get(i), scores.get(i))
        else {
            continue;
        };
        let view = (column != "*").then(|| column.to_string());
        let gate = match &view {
            None => source.quality_gate,
            Some(view) => match project.feature_views.iter().find(|v| &v.name == view) {
                Some(spec) => spec.quality_gate,
                None => continue,
            },
        };
        let (check, threshold, passed) = match name.strip_prefix("gate:") {
            Some("min_score") => match gate.min_score {
                Some(min) => ("min_score", min, value >= min),
                None => continue,
            },
            Some("max_quarantine_share") => match gate.max_quarantine_share {
                Some(max) => ("max_quarantine_share", max, value <= max),
                None => continue,
            },
            _ => continue,
        };
        merge(
            &mut checks,
            vec![GateCheck {
                view,
                check,
                value,
                threshold,
                passed,
            }],
        );
    }
    Ok(checks)
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
