//! The project file's shape, as serde reads it. Names that other parts
//! refer to are `Spanned` so that a bad reference can name its line.

use serde::Deserialize;
use toml::Spanned;

use super::spec::{Format, Severity};

// `Spanned` so that a bad reference can name its line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProject {
    pub(super) project: RawHeader,
    #[serde(default)]
    pub(super) entity: Vec<RawEntity>,
    #[serde(default)]
    pub(super) source: Vec<RawSource>,
    #[serde(default)]
    pub(super) feature_view: Vec<RawView>,
    #[serde(default)]
    pub(super) feature_service: Vec<RawService>,
    #[serde(default)]
    pub(super) model: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    pub(super) storage: Option<Spanned<RawStorage>>,
    #[serde(default)]
    pub(super) online_store: Option<super::spec::OnlineStoreSpec>,
}

/// `[storage]`: where the project's Delta tables live when not under
/// `data_dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) uri: String,
    #[serde(default)]
    pub(super) options: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    /// `view:feature` references, or a view's name for all its features.
    pub(super) features: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub(super) name: String,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: String,
}

pub(super) fn default_data_dir() -> String {
    "data".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntity {
    pub(super) name: Spanned<String>,
    pub(super) join_keys: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: Spanned<String>,
    pub(super) format: Spanned<Format>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) kafka: Option<Spanned<super::kafka::RawKafka>>,
    #[serde(default)]
    pub(super) version: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) options: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    pub(super) timestamp: Spanned<String>,
    #[serde(default)]
    pub(super) created: Option<Spanned<String>>,
    pub(super) columns: Vec<RawColumn>,
    #[serde(default)]
    pub(super) silver: RawSilver,
    #[serde(default)]
    pub(super) quality_gate: Option<RawGate>,
}

/// `[source.quality_gate]` / `[feature_view.quality_gate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGate {
    #[serde(default)]
    pub(super) min_score: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) max_quarantine_share: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawColumn {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) ty: Spanned<String>,
    #[serde(default)]
    pub(super) trim: Option<bool>,
    #[serde(default)]
    pub(super) lowercase: bool,
    #[serde(default)]
    pub(super) format: Option<String>,
    #[serde(default)]
    pub(super) timezone: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSilver {
    #[serde(default)]
    pub(super) table: Option<String>,
    #[serde(default)]
    pub(super) dedup_key: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) nulls: Vec<RawNull>,
    #[serde(default)]
    pub(super) enrich: Vec<RawEnrich>,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNull {
    pub(super) column: Spanned<String>,
    pub(super) strategy: Spanned<String>,
    #[serde(default)]
    pub(super) value: Option<toml::Value>,
    #[serde(default)]
    pub(super) by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnrich {
    pub(super) source: Spanned<String>,
    pub(super) on: Spanned<Vec<String>>,
    pub(super) columns: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) column: Spanned<String>,
    pub(super) check: Spanned<String>,
    #[serde(default = "default_severity")]
    pub(super) severity: Severity,
    #[serde(default)]
    pub(super) min: Option<f64>,
    #[serde(default)]
    pub(super) max: Option<f64>,
    #[serde(default)]
    pub(super) pattern: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) values: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub(super) columns: Option<Vec<String>>,
    #[serde(default)]
    pub(super) max_delay: Option<Spanned<String>>,
}

pub(super) fn default_severity() -> Severity {
    Severity::Hard
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    pub(super) name: Spanned<String>,
    pub(super) entity: Spanned<String>,
    pub(super) source: Spanned<String>,
    pub(super) ttl: Spanned<String>,
    #[serde(default)]
    pub(super) windows: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) windows_at: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) aggregation: Vec<RawAggregation>,
    #[serde(default)]
    pub(super) derived: Vec<RawDerived>,
    #[serde(default)]
    pub(super) quality_gate: Option<RawGate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAggregation {
    pub(super) column: Spanned<String>,
    pub(super) functions: Spanned<Vec<String>>,
    #[serde(default)]
    pub(super) windows: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDerived {
    pub(super) name: Spanned<String>,
    pub(super) expr: Spanned<String>,
}
