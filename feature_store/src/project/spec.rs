//! The checked shapes of a project: the project itself, its sources,
//! feature views and model sections, and the definition hashes that tell
//! when a processor's output must be recomputed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schema::{CREATED_TIMESTAMP, EVENT_TIMESTAMP, Entity, FeatureView};

/// A loaded and checked project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding `aurum.toml`; relative paths start here.
    pub root: PathBuf,
    /// The project name.
    pub name: String,
    /// Where bronze files and the registry live (and the Delta tables,
    /// unless `storage` says otherwise).
    pub data_dir: PathBuf,
    /// `[storage]`: the location (a local path or an object-store URI)
    /// under which the Delta tables (`delta/`) and the monitoring logs
    /// (`logs/`) live instead of `data_dir`.
    pub storage: Option<Storage>,
    /// Entities by name.
    pub entities: Vec<Entity>,
    /// Bronze sources with their silver rules, in dependency order
    /// (dimension sources used for enrichment come first).
    pub sources: Vec<Source>,
    /// Feature views.
    pub feature_views: Vec<ViewSpec>,
    /// Feature services: named feature lists.
    pub feature_services: Vec<crate::schema::FeatureService>,
    /// The `[[model]]` sections, by model name. Their keys belong to the
    /// crates that train and serve models (the feature store knows nothing
    /// of models): each reads its own sub-table and reports its own errors.
    pub models: Vec<ModelSection>,
    /// `[online_store]`: where `aurum serve` keeps online rows (the
    /// server's flags override it).
    pub online_store: OnlineStoreSpec,
    /// A hash of the file's checked content.
    pub definition_hash: String,
}

/// The `[online_store]` table. The Redis URL is never in the file (it
/// holds a password): `aurum serve` reads it from `AURUM_REDIS_URL`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineStoreSpec {
    /// `memory` (the default) or `redis`.
    #[serde(default)]
    pub backend: OnlineBackendKind,
    /// The Redis URL names nodes of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
}

/// Where online rows live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnlineBackendKind {
    /// In the serving process (moka): zero services.
    #[default]
    Memory,
    /// In Redis, shared by every replica, the process's store as L1.
    Redis,
}

impl std::str::FromStr for OnlineBackendKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "memory" => Ok(OnlineBackendKind::Memory),
            "redis" => Ok(OnlineBackendKind::Redis),
            other => Err(format!(
                "unknown online store {other:?}: expected memory or redis"
            )),
        }
    }
}

/// The `[storage]` table: checked when the project loads, reached only by
/// the commands that read or write tables (which have the credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// A local path (relative to the project root) or an object-store URI.
    pub uri: String,
    /// Non-secret object-store options (`endpoint`, `region`, …).
    pub options: std::collections::BTreeMap<String, String>,
}

/// A `[[model]]` section of the project file: a model's name and the
/// tables other crates read (`[model.serving]`, `[model.training]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSection {
    /// The registered model's name.
    pub name: String,
    /// The line the section's name is on, for error messages.
    pub line: usize,
    /// Every key of the section but `name`.
    pub table: toml::Table,
}

/// A stable sha256 of a serializable definition, salted with the version
/// of the code that interprets it.
pub fn hash_json<T: Serialize>(salt: &str, value: &T) -> String {
    use sha2::{Digest, Sha256};
    let doc = serde_json::to_vec(value).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(&doc);
    hex::encode(hasher.finalize())
}

/// The file format of a bronze source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// A Delta table (a local path or an object-store URI), read through
    /// the Delta protocol, incrementally by table version.
    Delta,
    /// Events on a Kafka topic (`[source.kafka]`), landed in bronze by
    /// `aurum stream`.
    Kafka,
}

/// A declared column type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant; stored as microseconds in UTC.
    Timestamp,
    /// A fixed-point decimal with precision and scale.
    Decimal {
        /// Total digits.
        precision: usize,
        /// Digits after the point.
        scale: usize,
    },
    /// Text from a small set of values; normalized, stored as text (Delta
    /// has no categorical type).
    Categorical,
}

impl ColumnType {
    pub(super) fn parse(text: &str) -> Option<ColumnType> {
        let text = text.trim();
        Some(match text {
            "string" => ColumnType::String,
            "int64" | "int" => ColumnType::Int64,
            "float64" | "float" | "double" => ColumnType::Float64,
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "categorical" => ColumnType::Categorical,
            _ => {
                let inner = text.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let precision: usize = p.trim().parse().ok()?;
                let scale: usize = s.trim().parse().ok()?;
                if precision == 0 || precision > 38 || scale > precision {
                    return None;
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }

    /// The type's name as the project file writes it.
    pub fn label(&self) -> String {
        match self {
            ColumnType::String => "string".into(),
            ColumnType::Int64 => "int64".into(),
            ColumnType::Float64 => "float64".into(),
            ColumnType::Bool => "bool".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::Categorical => "categorical".into(),
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        }
    }

    /// Whether values are numbers (range rules and mean/median apply).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. }
        )
    }
}

/// One declared column of a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// The column name, as in the file.
    pub name: String,
    /// The type silver standardizes it to.
    pub ty: ColumnType,
    /// Trim surrounding whitespace (text columns).
    pub trim: bool,
    /// Lower-case the value (text columns).
    pub lowercase: bool,
    /// The strptime format of a timestamp or date column; `None` accepts
    /// RFC 3339 / ISO 8601.
    pub format: Option<String>,
    /// The IANA time zone of timestamps written without an offset.
    pub timezone: String,
}

/// What silver does with a null in a column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum NullStrategy {
    /// Quarantine the row (reason: the null).
    Drop,
    /// Replace with a constant.
    Constant(String),
    /// Replace with the batch mean.
    Mean,
    /// Replace with the batch median.
    Median,
    /// Replace with the previous value of the same entity (by event time).
    ForwardFill {
        /// The entity key columns.
        by: Vec<String>,
    },
}

/// A quality check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Check {
    /// The value is present.
    NotNull,
    /// The value lies in `[min, max]`.
    Range {
        /// Lower bound, inclusive.
        min: Option<f64>,
        /// Upper bound, inclusive.
        max: Option<f64>,
    },
    /// The text matches a regular expression.
    Regex(String),
    /// The value is one of a list.
    Allowed(Vec<String>),
    /// The columns' values are unique within the batch.
    Unique(Vec<String>),
    /// The event arrived at most this long after it happened (created or
    /// ingest time minus event time): the declared lateness.
    Freshness(Duration),
}

/// How a failed check is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The row goes to quarantine.
    Hard,
    /// The row stays; the failure lowers the quality score.
    Soft,
}

/// A quality rule on one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// The column checked (the first column for `unique`).
    pub column: String,
    /// The check.
    pub check: Check,
    /// Hard rules quarantine, soft rules only score.
    pub severity: Severity,
}

impl Rule {
    /// The rule's short name, as stored in the quality and quarantine tables.
    pub fn name(&self) -> &'static str {
        match self.check {
            Check::NotNull => "not_null",
            Check::Range { .. } => "range",
            Check::Regex(_) => "regex",
            Check::Allowed(_) => "allowed",
            Check::Unique(_) => "unique",
            Check::Freshness(_) => "freshness",
        }
    }
}

/// A join against a dimension source's silver table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enrichment {
    /// The dimension source.
    pub source: String,
    /// Key columns present in both.
    pub on: Vec<String>,
    /// Columns taken from the dimension.
    pub columns: Vec<String>,
}

/// A bronze source and the silver processor over it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// The source name.
    pub name: String,
    /// The file format.
    pub format: Format,
    /// A file path or glob (`*` and `?` in the last component), relative
    /// to the project root; for a Delta source, the table's path or URI.
    pub path: String,
    /// For a Delta source, the table version to read (the latest when
    /// `None`).
    pub version: Option<u64>,
    /// For a Delta source on object storage, non-secret store options
    /// (`endpoint`, `region`, …): the source's own, or the project's
    /// `[storage]` options when the source gives none and its URI has the
    /// same scheme.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// Declared columns, in order.
    pub columns: Vec<Column>,
    /// The event-time column (a timestamp).
    pub timestamp: String,
    /// The column that orders re-deliveries; the ingest time when absent.
    pub created: Option<String>,
    /// The silver table name.
    pub silver_table: String,
    /// Columns that identify a record (with the event time) for duplicate
    /// resolution; empty means no duplicate resolution.
    pub dedup_key: Vec<String>,
    /// Null strategies by column.
    pub nulls: Vec<(String, NullStrategy)>,
    /// Dimension joins.
    pub enrich: Vec<Enrichment>,
    /// Quality rules.
    pub rules: Vec<Rule>,
    /// What a silver batch must meet for gold to advance over it (not part
    /// of the silver definition: changing it recomputes nothing).
    #[serde(skip)]
    pub quality_gate: QualityGate,
    /// For a Kafka source, where its events come from (not part of the
    /// silver definition: moving a topic recomputes nothing).
    #[serde(skip)]
    pub kafka: Option<super::kafka::KafkaSpec>,
}

/// The least a silver batch must meet for the gold tables over it to
/// advance: a batch under it is still committed to silver, quarantine and
/// quality, but the run leaves gold as it was and fails, naming the check.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualityGate {
    /// The lowest quality score (share of rows passing every check).
    pub min_score: Option<f64>,
    /// The highest share of a batch's rows quarantined.
    pub max_quarantine_share: Option<f64>,
}

impl QualityGate {
    /// Whether the gate checks anything.
    pub fn is_empty(&self) -> bool {
        self.min_score.is_none() && self.max_quarantine_share.is_none()
    }
}

impl Source {
    /// The bronze table name.
    pub fn bronze_table(&self) -> String {
        format!("bronze_{}", self.name)
    }

    /// A declared column.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// An aggregation function of a windowed feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Aggregation {
    /// Rows in the window.
    Count,
    /// Sum of the column.
    Sum,
    /// Mean of the column.
    Mean,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Sample standard deviation.
    Stddev,
    /// Number of distinct values.
    DistinctCount,
    /// The latest value (the row's own).
    Last,
}

impl Aggregation {
    pub(super) fn parse(text: &str) -> Option<Aggregation> {
        Some(match text {
            "count" => Aggregation::Count,
            "sum" => Aggregation::Sum,
            "mean" | "avg" => Aggregation::Mean,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "stddev" | "std" => Aggregation::Stddev,
            "distinct_count" => Aggregation::DistinctCount,
            "last" => Aggregation::Last,
            _ => return None,
        })
    }

    /// The name used in feature names.
    pub fn label(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Mean => "mean",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Stddev => "stddev",
            Aggregation::DistinctCount => "distinct_count",
            Aggregation::Last => "last",
        }
    }
}

/// One windowed feature: `{column}_{function}_{window}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowFeature {
    /// The feature name.
    pub name: String,
    /// The aggregated column.
    pub column: String,
    /// The function.
    pub function: Aggregation,
    /// The window length (`None` for `last`).
    pub window: Option<Duration>,
    /// The value type: `float64`, or for `last` the column's type.
    pub value_type: String,
}

/// A feature computed from other features or columns of the same row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DerivedFeature {
    /// The feature name.
    pub name: String,
    /// The arithmetic expression, e.g. `amount_sum_1d / amount_sum_7d`.
    pub expr: String,
}

/// When a view's windowed features are valued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum WindowsAt {
    /// At each event: a read gets the window that ended at the entity's
    /// last event (the gold row's value). The default when the project
    /// file does not say, so existing projects read what they did.
    #[default]
    Event,
    /// At the read: the window that ends at the request's (or the spine
    /// row's) time, on tiles ([`crate::window`]). `aurum init` writes it.
    Request,
}

/// A feature view as declared: how the gold processor computes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewSpec {
    /// The view (and gold table) name.
    pub name: String,
    /// The entity.
    pub entity: Entity,
    /// The source whose silver table feeds the view.
    pub source: String,
    /// How long values stay valid.
    pub ttl: Duration,
    /// Windowed features.
    pub windowed: Vec<WindowFeature>,
    /// Derived features.
    pub derived: Vec<DerivedFeature>,
    /// When windowed features are valued. Not part of the definition hash:
    /// gold rows are the same either way (valued at their own events);
    /// reads differ.
    #[serde(skip)]
    pub windows_at: WindowsAt,
    /// The silver table of the view's source (where request-time windows
    /// read their events).
    #[serde(skip)]
    pub silver_table: String,
    /// The source's event-time column in silver.
    #[serde(skip)]
    pub source_timestamp: String,
    /// What the source's batches must meet for this view's gold table to
    /// advance (besides the source's own gate).
    #[serde(skip)]
    pub quality_gate: QualityGate,
}

impl ViewSpec {
    /// Every feature's value type, in [`feature_names`] order.
    ///
    /// [`feature_names`]: ViewSpec::feature_names
    pub fn feature_types(&self) -> Vec<String> {
        self.windowed
            .iter()
            .map(|f| f.value_type.clone())
            .chain(self.derived.iter().map(|_| "float64".to_string()))
            .collect()
    }

    /// Every feature name, windowed then derived.
    pub fn feature_names(&self) -> Vec<String> {
        self.windowed
            .iter()
            .map(|f| f.name.clone())
            .chain(self.derived.iter().map(|f| f.name.clone()))
            .collect()
    }

    /// The longest window.
    pub fn max_window(&self) -> Duration {
        self.windowed
            .iter()
            .filter_map(|f| f.window)
            .max()
            .unwrap_or_default()
    }

    /// The serving-side view: gold columns `event_timestamp` and
    /// `created_timestamp`.
    pub fn feature_view(&self) -> FeatureView {
        FeatureView {
            name: self.name.clone(),
            entity: self.entity.clone(),
            features: self.feature_names(),
            feature_types: self.feature_types(),
            timestamp_column: EVENT_TIMESTAMP.to_string(),
            created_column: CREATED_TIMESTAMP.to_string(),
            ttl: self.ttl,
            request_windows: self.request_windows(),
        }
    }

    /// What a read values at its own time, for a view with
    /// `windows_at = "request"`: its windowed features with a window (a
    /// `last` value, or a count over all time, is the same at the last
    /// event as at any later read) and its derived features.
    pub fn request_windows(&self) -> Option<crate::window::RequestWindows> {
        use crate::window::{DerivedAtRead, Function, RequestWindows, WindowFeature};
        if self.windows_at != WindowsAt::Request {
            return None;
        }
        let features: Vec<WindowFeature> = self
            .windowed
            .iter()
            .filter_map(|f| {
                let function = match f.function {
                    Aggregation::Count => Function::Count,
                    Aggregation::Sum => Function::Sum,
                    Aggregation::Mean => Function::Mean,
                    Aggregation::Min => Function::Min,
                    Aggregation::Max => Function::Max,
                    Aggregation::Stddev => Function::Stddev,
                    Aggregation::DistinctCount => Function::DistinctCount,
                    Aggregation::Last => return None,
                };
                Some(WindowFeature {
                    name: f.name.clone(),
                    column: f.column.clone(),
                    function,
                    window_micros: i64::try_from(f.window?.as_micros()).unwrap_or(i64::MAX),
                })
            })
            .collect();
        if features.is_empty() {
            return None;
        }
        Some(RequestWindows {
            events_table: self.silver_table.clone(),
            timestamp_column: self.source_timestamp.clone(),
            features,
            derived: self
                .derived
                .iter()
                .map(|d| DerivedAtRead {
                    name: d.name.clone(),
                    expr: d.expr.clone(),
                })
                .collect(),
        })
    }

    /// A stable hash of the definition and the gold processor's version.
    pub fn definition_hash(&self) -> String {
        hash_json("aurum-gold-v1", self)
    }
}
