//! The monitor's part of `/metrics`: the drift gauges of the last periodic
//! evaluation, the monitor's counters, and the live quality from
//! `/feedback`, each family handed to `prometheus-client`'s encoder.

use std::fmt;

use monitoring::{Monitor, PerformanceRow, VersionState};
use prometheus_client::encoding::DescriptorEncoder;

use super::exposition::{Label, counter, counter_family, gauge_family};

/// Encodes the monitor's metric families: drift, then feedback.
pub(crate) fn encode(monitor: &Monitor, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    encode_drift(monitor, encoder)?;
    encode_feedback(monitor, encoder)
}

/// One tested feature (or the prediction) of a version's last report.
struct Tested<'a> {
    model: &'a str,
    version: u64,
    feature: &'a str,
    test: &'static str,
    statistic: f64,
    p_value: Option<f64>,
    drifted: bool,
}

impl<'a> Tested<'a> {
    fn labels(&self) -> [(&'static str, Label<'a>); 4] {
        [
            ("model", Label::Text(self.model)),
            ("version", Label::Int(self.version)),
            ("feature", Label::Text(self.feature)),
            ("test", Label::Text(self.test)),
        ]
    }
}

/// A version's labels.
fn version_labels(s: &VersionState) -> [(&'static str, Label<'_>); 2] {
    [
        ("model", Label::Text(&s.model)),
        ("version", Label::Int(s.version)),
    ]
}

/// The drift gauges and the monitor's counters.
fn encode_drift(monitor: &Monitor, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let states = monitor.states();
    // Columns without a test or a statistic (skipped, too few values) have
    // no gauges.
    let tested: Vec<Tested<'_>> = states
        .iter()
        .filter_map(|s| s.report.as_ref().map(|report| (s, report)))
        .flat_map(|(s, report)| {
            report
                .columns
                .iter()
                .chain(&report.prediction)
                .filter_map(move |c| {
                    Some(Tested {
                        model: &s.model,
                        version: s.version,
                        feature: &c.column,
                        test: c.method?.as_str(),
                        statistic: c.statistic?,
                        p_value: c.p_value,
                        drifted: c.drifted,
                    })
                })
        })
        .collect();
    gauge_family(
        encoder,
        "aurum_drift_score",
        "The drift statistic per feature (and the prediction) of the last evaluation.",
        tested.iter().map(|t| (t.labels(), t.statistic)),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_p_value",
        "The p-value per feature, for hypothesis tests.",
        tested.iter().filter_map(|t| Some((t.labels(), t.p_value?))),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_feature_drifted",
        "1 when the feature drifted at the last evaluation.",
        tested.iter().map(|t| (t.labels(), u64::from(t.drifted))),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_share",
        "The share of tested features that drifted.",
        states
            .iter()
            .filter_map(|s| Some((version_labels(s), s.report.as_ref()?.drift_share))),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_dataset_drifted",
        "1 when the dataset drifted at the last evaluation.",
        states.iter().filter_map(|s| {
            let drifted = s.report.as_ref()?.dataset_drift;
            Some((version_labels(s), u64::from(drifted)))
        }),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_alerting",
        "1 while a drift alert is raised (with hysteresis).",
        states
            .iter()
            .map(|s| (version_labels(s), u64::from(s.alerting))),
    )?;
    gauge_family(
        encoder,
        "aurum_drift_window_rows",
        "Rows in the evaluated window.",
        states
            .iter()
            .map(|s| (version_labels(s), s.window_rows as u64)),
    )?;
    let counts = monitor.counts();
    // Counters are named without `_total`: the encoder appends it.
    for (name, help, count) in [
        (
            "aurum_drift_evaluations",
            "Evaluation passes of the drift monitor.",
            counts.evaluations,
        ),
        ("aurum_drift_alerts", "Drift alerts raised.", counts.alerts),
        (
            "aurum_drift_webhook_failures",
            "Alert webhook deliveries that failed.",
            counts.webhook_failures,
        ),
    ] {
        counter(encoder, name, help, count)?;
    }
    Ok(())
}

/// A model version and arm's labels.
fn arm_labels<'a>(model: &'a str, r: &'a PerformanceRow) -> [(&'static str, Label<'a>); 3] {
    [
        ("model", Label::Text(model)),
        ("version", Label::Int(r.version)),
        ("arm", Label::Text(&r.arm)),
    ]
}

/// Picks one live quality figure from a row, when it has it.
type Quality = fn(&PerformanceRow) -> Option<f64>;

/// The feedback counters and the live quality gauges.
fn encode_feedback(monitor: &Monitor, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let performance = monitor.all_performance();
    counter_family(
        encoder,
        "aurum_feedback",
        "Outcomes received per model version and arm.",
        performance
            .iter()
            .map(|(model, r)| (arm_labels(model, r), r.feedback)),
    )?;
    counter(
        encoder,
        "aurum_feedback_not_applied",
        "Outcomes that matched no remembered prediction (or one already labelled).",
        monitor.outcomes_not_applied(),
    )?;
    for (name, help, pick) in [
        (
            "aurum_model_roc_auc",
            "Live ROC AUC over the quality window.",
            (|r: &PerformanceRow| r.classification.as_ref().and_then(|c| c.roc_auc)) as Quality,
        ),
        (
            "aurum_model_accuracy",
            "Live accuracy at 0.5 over the quality window.",
            (|r: &PerformanceRow| r.classification.as_ref().map(|c| c.accuracy)) as Quality,
        ),
        (
            "aurum_model_calibration_error",
            "Live expected calibration error (10 bins).",
            (|r: &PerformanceRow| r.classification.as_ref().map(|c| c.calibration_error))
                as Quality,
        ),
        (
            "aurum_model_brier",
            "Live Brier score.",
            (|r: &PerformanceRow| r.classification.as_ref().map(|c| c.brier)) as Quality,
        ),
        (
            "aurum_model_rmse",
            "Live RMSE over the quality window.",
            (|r: &PerformanceRow| r.regression.as_ref().map(|g| g.rmse)) as Quality,
        ),
        (
            "aurum_model_mae",
            "Live MAE over the quality window.",
            (|r: &PerformanceRow| r.regression.as_ref().map(|g| g.mae)) as Quality,
        ),
    ] {
        // Undefined figures (no positives yet, an empty window) are left
        // out rather than exposed as NaN.
        gauge_family(
            encoder,
            name,
            help,
            performance.iter().filter_map(|(model, r)| {
                let value = pick(r).filter(|v| v.is_finite())?;
                Some((arm_labels(model, r), value))
            }),
        )?;
    }
    Ok(())
}
