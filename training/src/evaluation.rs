//! Validation metrics of a model's predictions, under the names the
//! registry records (`val_roc_auc`, `val_rmse`, …). The numbers come from
//! [`drift::metrics`], the implementation live monitoring uses, so a
//! model's validation figures and its live ones are the same function of
//! the same pairs; this module only widens training's f32 values (exactly)
//! and names the results.

use std::collections::BTreeMap;

use drift::metrics::{self, CalibrationBin};

use crate::spec::Task;

/// Bins of the validation calibration table.
const CALIBRATION_BINS: usize = 10;

/// The validation metrics of `predictions` (probabilities for a
/// classifier) against `labels`, and for a classifier the calibration
/// table without its empty bins.
pub fn validation_metrics(
    task: Task,
    predictions: &[f32],
    labels: &[f32],
) -> (BTreeMap<String, f64>, Vec<CalibrationBin>) {
    let scores = widen(predictions);
    let mut out = BTreeMap::new();
    match task {
        Task::BinaryClassification => {
            let positive = positives(labels);
            if let Some(auc) = metrics::roc_auc(&scores, &positive) {
                out.insert("val_roc_auc".into(), auc);
            }
            if let Some(ap) = metrics::pr_auc(&scores, &positive) {
                out.insert("val_pr_auc".into(), ap);
            }
            out.insert("val_log_loss".into(), metrics::log_loss(&scores, &positive));
            out.insert(
                "val_accuracy".into(),
                metrics::accuracy(&scores, &positive, 0.5),
            );
            let (precision, recall) = metrics::precision_recall(&scores, &positive, 0.5);
            out.insert("val_precision_at_0.5".into(), precision);
            out.insert("val_recall_at_0.5".into(), recall);
            out.insert(
                "val_positive_rate".into(),
                metrics::positive_rate(&positive),
            );
            let calibration: Vec<CalibrationBin> =
                metrics::calibration(&scores, &positive, CALIBRATION_BINS)
                    .into_iter()
                    .filter(|bin| bin.count > 0)
                    .collect();
            for bin in &calibration {
                let k = (bin.lower * 10.0).round() as usize;
                out.insert(format!("val_calibration_{k}_count"), bin.count as f64);
                out.insert(format!("val_calibration_{k}_predicted"), bin.mean_score);
                out.insert(format!("val_calibration_{k}_observed"), bin.observed_rate);
            }
            (out, calibration)
        }
        Task::Regression => {
            let errors = metrics::regression(&scores, &widen(labels));
            out.insert("val_rmse".into(), errors.rmse);
            out.insert("val_mae".into(), errors.mae);
            out.insert("val_r2".into(), errors.r2);
            (out, Vec::new())
        }
    }
}

/// One named validation metric of `predictions`; `None` when `name` is not
/// a metric of `task` that a champion comparison can use, or is undefined
/// (ROC AUC of a single class).
pub fn metric(name: &str, task: Task, predictions: &[f32], labels: &[f32]) -> Option<f64> {
    let scores = widen(predictions);
    let positive = || positives(labels);
    let errors = || metrics::regression(&scores, &widen(labels));
    match (task, name) {
        (Task::BinaryClassification, "val_roc_auc") => metrics::roc_auc(&scores, &positive()),
        (Task::BinaryClassification, "val_pr_auc") => metrics::pr_auc(&scores, &positive()),
        (Task::BinaryClassification, "val_log_loss") => {
            Some(metrics::log_loss(&scores, &positive()))
        }
        (Task::BinaryClassification, "val_accuracy") => {
            Some(metrics::accuracy(&scores, &positive(), 0.5))
        }
        (Task::Regression, "val_rmse") => Some(errors().rmse),
        (Task::Regression, "val_mae") => Some(errors().mae),
        (Task::Regression, "val_r2") => Some(errors().r2),
        _ => None,
    }
}

/// The score permutation importance compares: ROC AUC (0.5 when undefined)
/// for a classifier, RMSE for a regressor.
pub(crate) fn importance_score(task: Task, predictions: &[f32], labels: &[f32]) -> f64 {
    let scores = widen(predictions);
    match task {
        Task::BinaryClassification => metrics::roc_auc(&scores, &positives(labels)).unwrap_or(0.5),
        Task::Regression => metrics::regression(&scores, &widen(labels)).rmse,
    }
}

/// f32 values as f64: exact, and order and ties are kept.
fn widen(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// 0/1 labels as classes (above one half is positive).
fn positives(labels: &[f32]) -> Vec<bool> {
    labels.iter().map(|&y| y > 0.5).collect()
}
