//! A model's training specification: the `[model.training]` table of its
//! `[[model]]` section in the project file.
//!
//! ```toml
//! [[model]]
//! name = "fraud"
//! [model.training]
//! task = "binary_classification"        # or "regression"
//! features = "fraud_detection"          # a feature service, or a list of refs
//! label = "is_fraud"
//! spine = { table = "silver_transactions", timestamp = "event_time" }
//! family = "mlp"                        # "linear" (logistic for classifiers) or "mlp"
//! hidden = [64, 64]                     # MLP layers
//! dropout = 0.1
//! epochs = 30
//! batch_size = 1024
//! learning_rate = 0.001
//! weight_decay = 0.0
//! class_weight = "balanced"             # or "none"
//! patience = 5                          # early stopping, in epochs
//! validation_fraction = 0.2             # the latest share of rows, by time
//! seed = 42
//! promote_metric = "val_roc_auc"        # higher is better; val_rmse: lower
//! promote_margin = 0.0
//! retrain_every = "1d"                  # aurum retrain's interval
//! ```

use std::time::Duration;

use feature_store::project::{ModelSection, parse_duration};
use serde::Deserialize;

use crate::error::{Error, Result};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A probability of the positive class; the label is 0 or 1.
    BinaryClassification,
    /// A number.
    Regression,
}

/// The model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Logistic regression (classification) or linear regression.
    Linear,
    /// A multi-layer perceptron with ReLU layers.
    Mlp,
}

/// How the loss weighs the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeight {
    /// Every row counts the same.
    None,
    /// Each class counts as much in total (n / (2 · class count) per row).
    Balanced,
}

/// Hyperparameters; every one has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    /// The model family.
    pub family: Family,
    /// Hidden layer widths (MLP only).
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer, in training.
    pub dropout: f32,
    /// Passes over the training split at most.
    pub epochs: usize,
    /// Rows per Adam step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Class weighting (classification).
    pub class_weight: ClassWeight,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// The latest share of rows (by time) held out for validation.
    pub validation_fraction: f64,
    /// The seed of initialization, shuffling, dropout and permutations.
    pub seed: u64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Hyperparameters {
            family: Family::Linear,
            hidden: vec![64, 64],
            dropout: 0.0,
            epochs: 30,
            batch_size: 1024,
            learning_rate: 0.01,
            weight_decay: 0.0,
            class_weight: ClassWeight::None,
            patience: 5,
            validation_fraction: 0.2,
            seed: 42,
        }
    }
}

impl Hyperparameters {
    /// The hyperparameters as registry lineage parameters.
    pub fn parameters(&self) -> Vec<(String, String)> {
        vec![
            ("family".into(), format!("{:?}", self.family).to_lowercase()),
            (
                "hidden".into(),
                if self.family == Family::Mlp {
                    format!("{:?}", self.hidden)
                } else {
                    "[]".into()
                },
            ),
            ("dropout".into(), self.dropout.to_string()),
            ("epochs".into(), self.epochs.to_string()),
            ("batch_size".into(), self.batch_size.to_string()),
            ("learning_rate".into(), self.learning_rate.to_string()),
            ("weight_decay".into(), self.weight_decay.to_string()),
            (
                "class_weight".into(),
                format!("{:?}", self.class_weight).to_lowercase(),
            ),
            ("patience".into(), self.patience.to_string()),
            (
                "validation_fraction".into(),
                self.validation_fraction.to_string(),
            ),
            ("seed".into(), self.seed.to_string()),
        ]
    }
}

/// A model's complete training specification.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The registered model's name.
    pub name: String,
    /// What it predicts.
    pub task: Task,
    /// `view:feature` references or one feature service's name.
    pub features: FeatureList,
    /// The label column of the spine.
    pub label: String,
    /// The Delta table whose rows are the training examples.
    pub spine_table: String,
    /// The spine's event-time column.
    pub spine_timestamp: String,
    /// Hyperparameters.
    pub hyper: Hyperparameters,
    /// The metric `--promote-if-better` compares (`val_…`).
    pub promote_metric: String,
    /// How much better the new model must be.
    pub promote_margin: f64,
    /// `aurum retrain`'s interval, when it runs on one.
    pub retrain_every: Option<Duration>,
}

/// The features of a model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureList {
    /// `view:feature` references (or view names for all their features).
    References(Vec<String>),
    /// A feature service's name.
    Service(String),
}

impl ModelSpec {
    /// Whether a larger value of the promotion metric is better.
    pub fn higher_is_better(&self) -> bool {
        !matches!(
            self.promote_metric.as_str(),
            "val_rmse" | "val_mae" | "val_log_loss" | "val_loss"
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    task: Task,
    features: RawFeatures,
    label: String,
    spine: RawSpine,
    #[serde(default)]
    family: Option<Family>,
    #[serde(default)]
    hidden: Option<Vec<usize>>,
    #[serde(default)]
    dropout: Option<f32>,
    #[serde(default)]
    epochs: Option<usize>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    learning_rate: Option<f64>,
    #[serde(default)]
    weight_decay: Option<f64>,
    #[serde(default)]
    class_weight: Option<ClassWeight>,
    #[serde(default)]
    patience: Option<usize>,
    #[serde(default)]
    validation_fraction: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    promote_metric: Option<String>,
    #[serde(default)]
    promote_margin: Option<f64>,
    #[serde(default)]
    retrain_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFeatures {
    Service(String),
    References(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpine {
    table: String,
    timestamp: String,
}

/// The training spec of every `[[model]]` section with a `training` table.
pub fn specs(sections: &[ModelSection]) -> Result<Vec<ModelSpec>> {
    sections
        .iter()
        .filter_map(|s| s.table.get("training").map(|t| (s, t)))
        .map(|(section, table)| {
            parse(&section.name, table).map_err(|message| {
                Error::Spec(format!(
                    "[[model]] {:?} (line {}): training: {message}",
                    section.name, section.line
                ))
            })
        })
        .collect()
}

fn parse(name: &str, table: &toml::Value) -> std::result::Result<ModelSpec, String> {
    let raw: RawSpec = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    let d = Hyperparameters::default();
    let hyper = Hyperparameters {
        family: raw.family.unwrap_or(d.family),
        hidden: raw.hidden.unwrap_or(d.hidden),
        dropout: raw.dropout.unwrap_or(d.dropout),
        epochs: raw.epochs.unwrap_or(d.epochs),
        batch_size: raw.batch_size.unwrap_or(d.batch_size),
        learning_rate: raw.learning_rate.unwrap_or(d.learning_rate),
        weight_decay: raw.weight_decay.unwrap_or(d.weight_decay),
        class_weight: raw.class_weight.unwrap_or(d.class_weight),
        patience: raw.patience.unwrap_or(d.patience),
        validation_fraction: raw.validation_fraction.unwrap_or(d.validation_fraction),
        seed: raw.seed.unwrap_or(d.seed),
    };
    if hyper.epochs == 0 || hyper.batch_size == 0 {
        return Err("epochs and batch_size must be at least 1".into());
    }
    if !(0.0..1.0).contains(&hyper.dropout) {
        return Err(format!(
            "dropout is {}; it must be in [0, 1)",
            hyper.dropout
        ));
    }
    if !(hyper.validation_fraction > 0.0 && hyper.validation_fraction < 1.0) {
        return Err(format!(
            "validation_fraction is {}; it must be in (0, 1)",
            hyper.validation_fraction
        ));
    }
    if !(hyper.learning_rate > 0.0 && hyper.learning_rate.is_finite()) {
        return Err(format!(
            "learning_rate is {}; it must be positive",
            hyper.learning_rate
        ));
    }
    if hyper.family == Family::Mlp && (hyper.hidden.is_empty() || hyper.hidden.contains(&0)) {
        return Err("an mlp needs hidden layers of at least one unit".into());
    }
    let features = match raw.features {
        RawFeatures::Service(s) => FeatureList::Service(s),
        RawFeatures::References(r) if r.is_empty() => return Err("features is empty".into()),
        RawFeatures::References(r) => FeatureList::References(r),
    };
    let promote_metric = raw.promote_metric.unwrap_or_else(|| match raw.task {
        Task::BinaryClassification => "val_roc_auc".into(),
        Task::Regression => "val_rmse".into(),
    });
    let retrain_every = match raw.retrain_every {
        None => None,
        Some(text) => Some(parse_duration(&text).ok_or_else(|| {
            format!("retrain_every {text:?} is not a duration such as 30m, 6h or 1d")
        })?),
    };
    Ok(ModelSpec {
        name: name.to_string(),
        task: raw.task,
        features,
        label: raw.label,
        spine_table: raw.spine.table,
        spine_timestamp: raw.spine.timestamp,
        hyper,
        promote_metric,
        promote_margin: raw.promote_margin.unwrap_or(0.0),
        retrain_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> ModelSection {
        ModelSection {
            name: "fraud".into(),
            line: 7,
            table: toml::from_str(text).unwrap(),
        }
    }

    const BASE: &str = "[training]\ntask = \"binary_classification\"\nfeatures = \"svc\"\n\
                        label = \"y\"\nspine = { table = \"t\", timestamp = \"ts\" }\n";

    #[test]
    fn a_spec_reads_with_defaults() {
        let all = specs(&[section(&format!("{BASE}family = \"mlp\"\nhidden = [8]"))]).unwrap();
        let spec = &all[0];
        assert_eq!(spec.features, FeatureList::Service("svc".into()));
        assert_eq!(spec.hyper.family, Family::Mlp);
        assert_eq!(spec.hyper.hidden, vec![8]);
        assert_eq!(spec.promote_metric, "val_roc_auc");
        assert!(spec.higher_is_better());
        // Sections without a training table are not training specs.
        assert!(
            specs(&[section("[serving]\nshadow = \"x\"")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (extra, needle) in [
            ("dropout = 1.5", "dropout is 1.5"),
            ("family = \"mlp\"\nhidden = []", "hidden layers"),
            ("validation_fraction = 0.0", "validation_fraction is 0"),
            ("retrain_every = \"soon\"", "\"soon\""),
            ("epochs = 0", "epochs"),
            ("famly = \"mlp\"", "famly"),
        ] {
            let error = specs(&[section(&format!("{BASE}{extra}"))]).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(needle), "{extra}: {message}");
            assert!(message.contains("\"fraud\" (line 7)"), "{message}");
        }
    }
}
