//! A prediction request as the inference layer reads it: the model's name
//! and the request's columns, one value per row.

use std::collections::BTreeMap;

use feature_store::online::key_part;
use serde::Deserialize;
use serde_json::Value;

/// The `/predict` request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// The model name.
    pub model: String,
    /// Join-key columns: key name → one value per row.
    #[serde(default)]
    pub entities: BTreeMap<String, Vec<Value>>,
    /// Request-time feature columns (`view:feature` or bare feature name →
    /// one value per row); they take precedence over stored values.
    #[serde(default)]
    pub features: BTreeMap<String, Vec<Value>>,
}

impl PredictRequest {
    /// Per row, its entity key as `name=value` pairs (entity columns in
    /// name order), or empty without entities.
    pub fn entity_labels(&self, rows: usize) -> Vec<String> {
        (0..rows)
            .map(|row| {
                let mut label = String::new();
                for (name, values) in &self.entities {
                    if !label.is_empty() {
                        label.push(',');
                    }
                    label.push_str(name);
                    label.push('=');
                    if let Some(part) = values.get(row).and_then(key_part) {
                        label.push_str(&part);
                    }
                }
                label
            })
            .collect()
    }
}
