//! The monitor's part of `/metrics` in Prometheus' text format: the drift
//! gauges of the last periodic evaluation, the monitor's counters, and the
//! live quality from `/feedback`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use feature_store::metrics::{header as metric_header, label_value};
use monitoring::Monitor;

/// Appends the monitor's metric families to `out`: drift, then feedback.
pub(crate) fn render(monitor: &Monitor, out: &mut String) {
    render_drift(monitor, out);
    render_feedback(monitor, out);
}

/// The drift gauges and the monitor's counters.
fn render_drift(monitor: &Monitor, out: &mut String) {
    let states = monitor.states();
    let mut scores = String::new();
    let mut p_values = String::new();
    let mut drifted = String::new();
    let mut share = String::new();
    let mut dataset = String::new();
    let mut alerting = String::new();
    let mut rows = String::new();
    for s in &states {
        let base = format!(
            "model=\"{}\",version=\"{}\"",
            label_value(&s.model),
            s.version
        );
        let _ = writeln!(rows, "aurum_drift_window_rows{{{base}}} {}", s.window_rows);
        let _ = writeln!(
            alerting,
            "aurum_drift_alerting{{{base}}} {}",
            u8::from(s.alerting)
        );
        let Some(report) = &s.report else { continue };
        let _ = writeln!(share, "aurum_drift_share{{{base}}} {}", report.drift_share);
        let _ = writeln!(
            dataset,
            "aurum_drift_dataset_drifted{{{base}}} {}",
            u8::from(report.dataset_drift)
        );
        for c in report.columns.iter().chain(&report.prediction) {
            let Some(method) = c.method else { continue };
            let Some(statistic) = c.statistic else {
                continue;
            };
            let labels = format!(
                "{base},feature=\"{}\",test=\"{}\"",
                label_value(&c.column),
                method.as_str()
            );
            let _ = writeln!(scores, "aurum_drift_score{{{labels}}} {statistic}");
            if let Some(p) = c.p_value {
                let _ = writeln!(p_values, "aurum_drift_p_value{{{labels}}} {p}");
            }
            let _ = writeln!(
                drifted,
                "aurum_drift_feature_drifted{{{labels}}} {}",
                u8::from(c.drifted)
            );
        }
    }
    for (name, help, body) in [
        (
            "aurum_drift_score",
            "The drift statistic per feature (and the prediction) of the last evaluation.",
            &scores,
        ),
        (
            "aurum_drift_p_value",
            "The p-value per feature, for hypothesis tests.",
            &p_values,
        ),
        (
            "aurum_drift_feature_drifted",
            "1 when the feature drifted at the last evaluation.",
            &drifted,
        ),
        (
            "aurum_drift_share",
            "The share of tested features that drifted.",
            &share,
        ),
        (
            "aurum_drift_dataset_drifted",
            "1 when the dataset drifted at the last evaluation.",
            &dataset,
        ),
        (
            "aurum_drift_alerting",
            "1 while a drift alert is raised (with hysteresis).",
            &alerting,
        ),
        (
            "aurum_drift_window_rows",
            "Rows in the evaluated window.",
            &rows,
        ),
    ] {
        metric_header(name, help, "gauge", out);
        out.push_str(body);
    }
    let counts = monitor.counts();
    for (name, help, count) in [
        (
            "aurum_drift_evaluations_total",
            "Evaluation passes of the drift monitor.",
            counts.evaluations,
        ),
        (
            "aurum_drift_alerts_total",
            "Drift alerts raised.",
            counts.alerts,
        ),
        (
            "aurum_drift_webhook_failures_total",
            "Alert webhook deliveries that failed.",
            counts.webhook_failures,
        ),
    ] {
        metric_header(name, help, "counter", out);
        let _ = writeln!(out, "{name} {count}");
    }
}

/// The feedback counters and the live quality gauges.
fn render_feedback(monitor: &Monitor, out: &mut String) {
    let performance = monitor.all_performance();
    let mut totals = String::new();
    let mut quality: BTreeMap<&str, String> = BTreeMap::new();
    for (model, r) in &performance {
        let labels = format!(
            "model=\"{}\",version=\"{}\",arm=\"{}\"",
            label_value(model),
            r.version,
            label_value(&r.arm)
        );
        let _ = writeln!(totals, "aurum_feedback_total{{{labels}}} {}", r.feedback);
        let mut put = |name: &'static str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                let _ = writeln!(quality.entry(name).or_default(), "{name}{{{labels}}} {v}");
            }
        };
        if let Some(c) = &r.classification {
            put("aurum_model_roc_auc", c.roc_auc);
            put("aurum_model_accuracy", Some(c.accuracy));
            put("aurum_model_calibration_error", Some(c.calibration_error));
            put("aurum_model_brier", Some(c.brier));
        }
        if let Some(g) = &r.regression {
            put("aurum_model_rmse", Some(g.rmse));
            put("aurum_model_mae", Some(g.mae));
        }
    }
    metric_header(
        "aurum_feedback_total",
        "Outcomes received per model version and arm.",
        "counter",
        out,
    );
    out.push_str(&totals);
    metric_header(
        "aurum_feedback_not_applied_total",
        "Outcomes that matched no remembered prediction (or one already labelled).",
        "counter",
        out,
    );
    let _ = writeln!(
        out,
        "aurum_feedback_not_applied_total {}",
        monitor.outcomes_not_applied()
    );
    for (name, help) in [
        (
            "aurum_model_roc_auc",
            "Live ROC AUC over the quality window.",
        ),
        (
            "aurum_model_accuracy",
            "Live accuracy at 0.5 over the quality window.",
        ),
        (
            "aurum_model_calibration_error",
            "Live expected calibration error (10 bins).",
        ),
        ("aurum_model_brier", "Live Brier score."),
        ("aurum_model_rmse", "Live RMSE over the quality window."),
        ("aurum_model_mae", "Live MAE over the quality window."),
    ] {
        metric_header(name, help, "gauge", out);
        if let Some(body) = quality.get(name) {
            out.push_str(body);
        }
    }
}
