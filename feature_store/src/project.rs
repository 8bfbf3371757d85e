//! The project file, `aurum.toml`: entities, bronze sources with their
//! silver rules, and feature views.
//!
//! Loading is two steps. `toml` + serde check the file's shape (unknown
//! fields, wrong types and missing fields are errors that carry the line),
//! then [`Project::load`] checks meaning: that every name a view or rule
//! refers to exists, that durations, types and patterns parse. Every error
//! names the file, the line and the field.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::definitions::{Entity, FeatureView};
use crate::error::{Error, Result};

/// The project file's name.
pub const PROJECT_FILE: &str = "aurum.toml";

/// A loaded and checked project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding `aurum.toml`; relative paths start here.
    pub root: PathBuf,
    /// The project name.
    pub name: String,
    /// Where Delta tables, bronze files and the registry live.
    pub data_dir: PathBuf,
    /// Entities by name.
    pub entities: Vec<Entity>,
    /// Bronze sources with their silver rules, in dependency order
    /// (dimension sources used for enrichment come first).
    pub sources: Vec<Source>,
    /// Feature views.
    pub feature_views: Vec<ViewSpec>,
    /// Feature services: named feature lists.
    pub feature_services: Vec<crate::definitions::FeatureService>,
    /// The `[[model]]` sections, by model name. Their keys belong to the
    /// crates that train and serve models (the feature store knows nothing
    /// of models): each reads its own sub-table and reports its own errors.
    pub models: Vec<ModelSection>,
    /// A hash of the file's checked content.
    pub definition_hash: String,
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
    fn parse(text: &str) -> Option<ColumnType> {
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
    /// to the project root.
    pub path: String,
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
    fn parse(text: &str) -> Option<Aggregation> {
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
            timestamp_column: crate::gold::EVENT_TIMESTAMP.to_string(),
            created_column: crate::gold::CREATED_TIMESTAMP.to_string(),
            ttl: self.ttl,
        }
    }

    /// A stable hash of the definition and the gold processor's version.
    pub fn definition_hash(&self) -> String {
        hash_json("aurum-gold-v1", self)
    }
}

impl Project {
    /// Finds `aurum.toml` in `start` or a directory above it.
    pub fn find(start: &Path) -> Result<PathBuf> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let candidate = d.join(PROJECT_FILE);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent();
        }
        Err(Error::ProjectMissing(start.to_path_buf()))
    }

    /// Loads and checks a project file.
    pub fn load(path: &Path) -> Result<Project> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Project::parse(&text, path, &root)
    }

    /// Parses and checks project text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path, root: &Path) -> Result<Project> {
        let raw: RawProject = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, &s)).unwrap_or(0);
            Error::Project {
                path: path.to_path_buf(),
                line,
                field: String::new(),
                message: e.message().trim().to_string(),
            }
        })?;
        Checker { text, path }.check(raw, root)
    }

    /// The directory of the Delta tables.
    pub fn delta_dir(&self) -> PathBuf {
        self.data_dir.join("delta")
    }

    /// The registry directory.
    pub fn registry_dir(&self) -> PathBuf {
        self.data_dir.join("registry")
    }

    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// A feature view by name.
    pub fn view(&self, name: &str) -> Option<&ViewSpec> {
        self.feature_views.iter().find(|v| v.name == name)
    }
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

/// Parses a duration such as `90s`, `30m`, `1h`, `7d` or `2w`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    // Ten years at most: windows and TTLs longer than that are mistakes,
    // and the bound keeps every microsecond computation far from overflow.
    let seconds = n.checked_mul(unit_seconds)?;
    (n > 0 && seconds <= 3_650 * 86_400).then(|| Duration::from_secs(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest
/// whole unit up to days (feature names say `7d`, not `1w`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(size) && s >= size {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text[..end].bytes().filter(|&b| b == b'\n').count() + 1
}

// The file's shape, as serde reads it. Names that other parts refer to are
// `Spanned` so that a bad reference can name its line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    project: RawHeader,
    #[serde(default)]
    entity: Vec<RawEntity>,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    feature_view: Vec<RawView>,
    #[serde(default)]
    feature_service: Vec<RawService>,
    #[serde(default)]
    model: Vec<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    /// `view:feature` references, or a view's name for all its features.
    features: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default = "default_data_dir")]
    data_dir: String,
}

fn default_data_dir() -> String {
    "data".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    name: Spanned<String>,
    join_keys: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    format: Format,
    path: String,
    timestamp: Spanned<String>,
    #[serde(default)]
    created: Option<Spanned<String>>,
    columns: Vec<RawColumn>,
    #[serde(default)]
    silver: RawSilver,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    #[serde(default)]
    trim: Option<bool>,
    #[serde(default)]
    lowercase: bool,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilver {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    dedup_key: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    nulls: Vec<RawNull>,
    #[serde(default)]
    enrich: Vec<RawEnrich>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNull {
    column: Spanned<String>,
    strategy: Spanned<String>,
    #[serde(default)]
    value: Option<toml::Value>,
    #[serde(default)]
    by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrich {
    source: Spanned<String>,
    on: Spanned<Vec<String>>,
    columns: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    column: Spanned<String>,
    check: Spanned<String>,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    values: Option<Vec<toml::Value>>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    max_delay: Option<Spanned<String>>,
}

fn default_severity() -> Severity {
    Severity::Hard
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: Spanned<String>,
    entity: Spanned<String>,
    source: Spanned<String>,
    ttl: Spanned<String>,
    #[serde(default)]
    windows: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    aggregation: Vec<RawAggregation>,
    #[serde(default)]
    derived: Vec<RawDerived>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregation {
    column: Spanned<String>,
    functions: Spanned<Vec<String>>,
    #[serde(default)]
    windows: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerived {
    name: Spanned<String>,
    expr: Spanned<String>,
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    fn fail<T>(&self, span: Range<usize>, field: impl Into<String>, message: String) -> Result<T> {
        Err(Error::Project {
            path: self.path.to_path_buf(),
            line: line_of(self.text, &span),
            field: field.into(),
            message,
        })
    }

    fn check(&self, raw: RawProject, root: &Path) -> Result<Project> {
        let mut entities: Vec<Entity> = Vec::new();
        for (i, e) in raw.entity.iter().enumerate() {
            let field = format!("entity[{i}]");
            if entities.iter().any(|x| &x.name == e.name.get_ref()) {
                return self.fail(
                    e.name.span(),
                    format!("{field}.name"),
                    format!("entity {:?} is declared twice", e.name.get_ref()),
                );
            }
            if e.join_keys.get_ref().is_empty() {
                return self.fail(
                    e.join_keys.span(),
                    format!("{field}.join_keys"),
                    "an entity needs at least one join key".into(),
                );
            }
            entities.push(Entity {
                name: e.name.get_ref().clone(),
                join_keys: e.join_keys.get_ref().clone(),
            });
        }

        let mut sources: Vec<Source> = Vec::new();
        for (i, s) in raw.source.iter().enumerate() {
            let source = self.check_source(i, s, &sources)?;
            sources.push(source);
        }
        // Enrichment may refer to sources declared later: check and order.
        let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        for (i, s) in raw.source.iter().enumerate() {
            for (j, e) in s.silver.enrich.iter().enumerate() {
                let field = format!("source[{i}].silver.enrich[{j}]");
                let Some(dim) = sources.iter().find(|d| &d.name == e.source.get_ref()) else {
                    return self.fail(
                        e.source.span(),
                        format!("{field}.source"),
                        format!(
                            "no source named {:?} (declared: {})",
                            e.source.get_ref(),
                            names.join(", ")
                        ),
                    );
                };
                if dim.name == *s.name.get_ref() {
                    return self.fail(
                        e.source.span(),
                        format!("{field}.source"),
                        "a source cannot enrich itself".into(),
                    );
                }
                for key in e.on.get_ref() {
                    if sources[i].column(key).is_none() || dim.column(key).is_none() {
                        return self.fail(
                            e.on.span(),
                            format!("{field}.on"),
                            format!(
                                "join key {key:?} must be a declared column of both {:?} and {:?}",
                                s.name.get_ref(),
                                dim.name
                            ),
                        );
                    }
                }
                for column in e.columns.get_ref() {
                    if dim.column(column).is_none() {
                        return self.fail(
                            e.columns.span(),
                            format!("{field}.columns"),
                            format!("{:?} is not a column of source {:?}", column, dim.name),
                        );
                    }
                    if sources[i].column(column).is_some() {
                        return self.fail(
                            e.columns.span(),
                            format!("{field}.columns"),
                            format!("{column:?} is already a column of {:?}", s.name.get_ref()),
                        );
                    }
                }
            }
        }
        let sources = order_sources(sources).map_err(|cycle| Error::Project {
            path: self.path.to_path_buf(),
            line: 0,
            field: "source.silver.enrich".into(),
            message: format!("enrichment forms a cycle through {cycle:?}"),
        })?;

        let mut views: Vec<ViewSpec> = Vec::new();
        for (i, v) in raw.feature_view.iter().enumerate() {
            let view = self.check_view(i, v, &entities, &sources)?;
            if views.iter().any(|x| x.name == view.name) {
                return self.fail(
                    v.name.span(),
                    format!("feature_view[{i}].name"),
                    format!("feature view {:?} is declared twice", view.name),
                );
            }
            views.push(view);
        }

        let mut services: Vec<crate::definitions::FeatureService> = Vec::new();
        for (i, raw_service) in raw.feature_service.iter().enumerate() {
            let service = self.check_service(i, raw_service, &views)?;
            if services.iter().any(|x| x.name == service.name) {
                return self.fail(
                    raw_service.name.span(),
                    format!("feature_service[{i}].name"),
                    format!("feature service {:?} is declared twice", service.name),
                );
            }
            services.push(service);
        }

        let mut models: Vec<ModelSection> = Vec::new();
        for (i, m) in raw.model.into_iter().enumerate() {
            let span = m.span();
            let mut table = m.into_inner();
            let name = match table.remove("name") {
                Some(toml::Value::String(name)) if !name.is_empty() => name,
                _ => {
                    return self.fail(
                        span,
                        format!("model[{i}].name"),
                        "a [[model]] section needs a name (the registered model's)".into(),
                    );
                }
            };
            if models.iter().any(|x| x.name == name) {
                return self.fail(
                    span,
                    format!("model[{i}].name"),
                    format!("model {name:?} is declared twice"),
                );
            }
            models.push(ModelSection {
                line: line_of(self.text, &span),
                name,
                table,
            });
        }

        let mut project = Project {
            root: root.to_path_buf(),
            name: raw.project.name,
            data_dir: root.join(&raw.project.data_dir),
            entities,
            sources,
            feature_views: views,
            feature_services: services,
            models,
            definition_hash: String::new(),
        };
        project.definition_hash = hash_json(
            "aurum-project-v1",
            &(&project.sources, &project.feature_views),
        );
        Ok(project)
    }

    fn check_service(
        &self,
        i: usize,
        raw: &RawService,
        views: &[ViewSpec],
    ) -> Result<crate::definitions::FeatureService> {
        let field = format!("feature_service[{i}].features");
        let span = raw.features.span();
        if raw.features.get_ref().is_empty() {
            return self.fail(
                span,
                field,
                "a feature service needs at least one feature".into(),
            );
        }
        let mut features: Vec<String> = Vec::new();
        for entry in raw.features.get_ref() {
            let (view_name, feature) = match entry.split_once(':') {
                Some((view, feature)) => (view, Some(feature)),
                None => (entry.as_str(), None),
            };
            let Some(view) = views.iter().find(|v| v.name == view_name) else {
                return self.fail(
                    span,
                    field,
                    format!("{entry:?}: no feature view named {view_name:?}"),
                );
            };
            let names = view.feature_names();
            let chosen: Vec<String> = match feature {
                None => names,
                Some(f) if names.iter().any(|n| n == f) => vec![f.to_string()],
                Some(f) => {
                    return self.fail(
                        span,
                        field,
                        format!("{entry:?}: feature view {view_name:?} has no feature {f:?}"),
                    );
                }
            };
            for name in chosen {
                let reference = format!("{view_name}:{name}");
                if features.contains(&reference) {
                    return self.fail(span, field, format!("{reference:?} is listed twice"));
                }
                features.push(reference);
            }
        }
        Ok(crate::definitions::FeatureService {
            name: raw.name.get_ref().clone(),
            features,
        })
    }

    fn check_source(&self, i: usize, s: &RawSource, earlier: &[Source]) -> Result<Source> {
        let field = format!("source[{i}]");
        let name = s.name.get_ref().clone();
        if !is_identifier(&name) {
            return self.fail(
                s.name.span(),
                format!("{field}.name"),
                format!("{name:?} is not a valid name (letters, digits, underscore)"),
            );
        }
        if earlier.iter().any(|x| x.name == name) {
            return self.fail(
                s.name.span(),
                format!("{field}.name"),
                format!("source {name:?} is declared twice"),
            );
        }
        let mut columns: Vec<Column> = Vec::new();
        for (j, c) in s.columns.iter().enumerate() {
            let cfield = format!("{field}.columns[{j}]");
            let Some(ty) = ColumnType::parse(c.ty.get_ref()) else {
                return self.fail(
                    c.ty.span(),
                    format!("{cfield}.type"),
                    format!(
                        "unknown type {:?} (string, int64, float64, bool, date, timestamp, categorical, decimal(p,s))",
                        c.ty.get_ref()
                    ),
                );
            };
            if columns.iter().any(|x| x.name == c.name) || c.name.starts_with('_') {
                return self.fail(
                    c.ty.span(),
                    format!("{cfield}.name"),
                    format!(
                        "column {:?} is declared twice or starts with '_' (reserved for ingest metadata)",
                        c.name
                    ),
                );
            }
            let timezone = match &c.timezone {
                Some(tz) => {
                    if tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
                        return self.fail(
                            tz.span(),
                            format!("{cfield}.timezone"),
                            format!("unknown time zone {:?}", tz.get_ref()),
                        );
                    }
                    tz.get_ref().clone()
                }
                None => "UTC".to_string(),
            };
            let text = matches!(ty, ColumnType::String | ColumnType::Categorical);
            columns.push(Column {
                name: c.name.clone(),
                trim: c.trim.unwrap_or(text),
                lowercase: c.lowercase,
                format: c.format.clone(),
                timezone,
                ty,
            });
        }
        let find = |col: &Spanned<String>, what: &str, want_ts: bool| -> Result<()> {
            match columns.iter().find(|c| &c.name == col.get_ref()) {
                None => self.fail(
                    col.span(),
                    format!("{field}.{what}"),
                    format!("{:?} is not a declared column", col.get_ref()),
                ),
                Some(c) if want_ts && c.ty != ColumnType::Timestamp => self.fail(
                    col.span(),
                    format!("{field}.{what}"),
                    format!("{:?} must have type timestamp", col.get_ref()),
                ),
                Some(_) => Ok(()),
            }
        };
        find(&s.timestamp, "timestamp", true)?;
        if let Some(created) = &s.created {
            find(created, "created", true)?;
        }
        let dedup_key: Vec<String> = s
            .silver
            .dedup_key
            .as_ref()
            .map(|k| k.get_ref().clone())
            .unwrap_or_default();
        for key in &dedup_key {
            if !columns.iter().any(|c| &c.name == key) {
                return self.fail(
                    s.silver
                        .dedup_key
                        .as_ref()
                        .map(|k| k.span())
                        .unwrap_or_default(),
                    format!("{field}.silver.dedup_key"),
                    format!("{key:?} is not a declared column"),
                );
            }
        }
        let mut nulls = Vec::new();
        for (j, n) in s.silver.nulls.iter().enumerate() {
            let nfield = format!("{field}.silver.nulls[{j}]");
            find(&n.column, &format!("silver.nulls[{j}].column"), false)?;
            let column = columns
                .iter()
                .find(|c| &c.name == n.column.get_ref())
                .cloned();
            let numeric = column.as_ref().is_some_and(|c| c.ty.is_numeric());
            let strategy = match n.strategy.get_ref().as_str() {
                "drop" => NullStrategy::Drop,
                "constant" => match &n.value {
                    Some(v) => NullStrategy::Constant(value_text(v)),
                    None => {
                        return self.fail(
                            n.strategy.span(),
                            format!("{nfield}.value"),
                            "strategy \"constant\" needs a value".into(),
                        );
                    }
                },
                "mean" | "median" if !numeric => {
                    return self.fail(
                        n.strategy.span(),
                        format!("{nfield}.strategy"),
                        format!(
                            "{:?} needs a numeric column; {:?} is not",
                            n.strategy.get_ref(),
                            n.column.get_ref()
                        ),
                    );
                }
                "mean" => NullStrategy::Mean,
                "median" => NullStrategy::Median,
                "forward_fill" => {
                    if n.by.is_empty() || n.by.iter().any(|b| !columns.iter().any(|c| &c.name == b))
                    {
                        return self.fail(
                            n.strategy.span(),
                            format!("{nfield}.by"),
                            "forward_fill needs `by`, the declared entity key columns".into(),
                        );
                    }
                    NullStrategy::ForwardFill { by: n.by.clone() }
                }
                other => {
                    return self.fail(
                        n.strategy.span(),
                        format!("{nfield}.strategy"),
                        format!(
                            "unknown null strategy {other:?} (drop, constant, mean, median, forward_fill)"
                        ),
                    );
                }
            };
            nulls.push((n.column.get_ref().clone(), strategy));
        }
        let mut enrich = Vec::new();
        let mut enriched_columns: Vec<String> = Vec::new();
        for e in &s.silver.enrich {
            enriched_columns.extend(e.columns.get_ref().iter().cloned());
            enrich.push(Enrichment {
                source: e.source.get_ref().clone(),
                on: e.on.get_ref().clone(),
                columns: e.columns.get_ref().clone(),
            });
        }
        let mut rules = Vec::new();
        for (j, r) in s.silver.rules.iter().enumerate() {
            let rfield = format!("{field}.silver.rules[{j}]");
            let column = r.column.get_ref().clone();
            let declared = columns.iter().find(|c| c.name == column);
            if declared.is_none() && !enriched_columns.contains(&column) {
                return self.fail(
                    r.column.span(),
                    format!("{rfield}.column"),
                    format!("{column:?} is neither a declared nor an enriched column"),
                );
            }
            let check = match r.check.get_ref().as_str() {
                "not_null" => Check::NotNull,
                "range" => {
                    if r.min.is_none() && r.max.is_none() {
                        return self.fail(
                            r.check.span(),
                            format!("{rfield}.min"),
                            "a range rule needs min, max or both".into(),
                        );
                    }
                    if declared.is_some_and(|c| !c.ty.is_numeric()) {
                        return self.fail(
                            r.column.span(),
                            format!("{rfield}.column"),
                            format!("a range rule needs a numeric column; {column:?} is not"),
                        );
                    }
                    Check::Range {
                        min: r.min,
                        max: r.max,
                    }
                }
                "regex" => match &r.pattern {
                    Some(p) => {
                        if let Err(e) = regex::Regex::new(p.get_ref()) {
                            return self.fail(
                                p.span(),
                                format!("{rfield}.pattern"),
                                format!("invalid regular expression: {e}"),
                            );
                        }
                        Check::Regex(p.get_ref().clone())
                    }
                    None => {
                        return self.fail(
                            r.check.span(),
                            format!("{rfield}.pattern"),
                            "a regex rule needs a pattern".into(),
                        );
                    }
                },
                "allowed" => match &r.values {
                    Some(v) if !v.is_empty() => Check::Allowed(v.iter().map(value_text).collect()),
                    _ => {
                        return self.fail(
                            r.check.span(),
                            format!("{rfield}.values"),
                            "an allowed rule needs a non-empty list of values".into(),
                        );
                    }
                },
                "unique" => {
                    let cols = r.columns.clone().unwrap_or_else(|| vec![column.clone()]);
                    if let Some(bad) = cols.iter().find(|c| !columns.iter().any(|x| &x.name == *c))
                    {
                        return self.fail(
                            r.check.span(),
                            format!("{rfield}.columns"),
                            format!("{bad:?} is not a declared column"),
                        );
                    }
                    Check::Unique(cols)
                }
                "freshness" => {
                    let parsed = r
                        .max_delay
                        .as_ref()
                        .and_then(|d| parse_duration(d.get_ref()));
                    match parsed {
                        Some(d) => Check::Freshness(d),
                        None => {
                            return self.fail(
                                r.check.span(),
                                format!("{rfield}.max_delay"),
                                "a freshness rule needs max_delay, e.g. \"2d\"".into(),
                            );
                        }
                    }
                }
                other => {
                    return self.fail(
                        r.check.span(),
                        format!("{rfield}.check"),
                        format!(
                            "unknown check {other:?} (not_null, range, regex, allowed, unique, freshness)"
                        ),
                    );
                }
            };
            rules.push(Rule {
                column,
                check,
                severity: r.severity,
            });
        }
        Ok(Source {
            silver_table: s
                .silver
                .table
                .clone()
                .unwrap_or_else(|| format!("silver_{name}")),
            name,
            format: s.format,
            path: s.path.clone(),
            timestamp: s.timestamp.get_ref().clone(),
            created: s.created.as_ref().map(|c| c.get_ref().clone()),
            columns,
            dedup_key,
            nulls,
            enrich,
            rules,
        })
    }

    fn check_view(
        &self,
        i: usize,
        v: &RawView,
        entities: &[Entity],
        sources: &[Source],
    ) -> Result<ViewSpec> {
        let field = format!("feature_view[{i}]");
        let name = v.name.get_ref().clone();
        if !is_identifier(&name) {
            return self.fail(
                v.name.span(),
                format!("{field}.name"),
                format!("{name:?} is not a valid name (letters, digits, underscore)"),
            );
        }
        let Some(entity) = entities.iter().find(|e| &e.name == v.entity.get_ref()) else {
            let known: Vec<&str> = entities.iter().map(|e| e.name.as_str()).collect();
            return self.fail(
                v.entity.span(),
                format!("{field}.entity"),
                format!(
                    "no entity named {:?} (declared: {})",
                    v.entity.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let Some(source) = sources.iter().find(|s| &s.name == v.source.get_ref()) else {
            let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return self.fail(
                v.source.span(),
                format!("{field}.source"),
                format!(
                    "no source named {:?} (declared: {})",
                    v.source.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let available: Vec<String> = source
            .columns
            .iter()
            .map(|c| c.name.clone())
            .chain(source.enrich.iter().flat_map(|e| e.columns.iter().cloned()))
            .collect();
        for key in &entity.join_keys {
            if !available.contains(key) {
                return self.fail(
                    v.entity.span(),
                    format!("{field}.entity"),
                    format!(
                        "join key {key:?} of entity {:?} is not a column of source {:?}",
                        entity.name, source.name
                    ),
                );
            }
        }
        let Some(ttl) = parse_duration(v.ttl.get_ref()) else {
            return self.fail(
                v.ttl.span(),
                format!("{field}.ttl"),
                format!(
                    "{:?} is not a duration (e.g. 90s, 30m, 1h, 7d, 2w)",
                    v.ttl.get_ref()
                ),
            );
        };
        let parse_windows = |list: &Spanned<Vec<String>>, what: &str| -> Result<Vec<Duration>> {
            list.get_ref()
                .iter()
                .map(|w| match parse_duration(w) {
                    Some(d) => Ok(d),
                    None => self.fail(
                        list.span(),
                        format!("{field}.{what}"),
                        format!("{w:?} is not a duration (e.g. 90s, 30m, 1h, 7d, 2w)"),
                    ),
                })
                .collect()
        };
        let default_windows = match &v.windows {
            Some(w) => parse_windows(w, "windows")?,
            None => Vec::new(),
        };
        let mut windowed: Vec<WindowFeature> = Vec::new();
        for (j, a) in v.aggregation.iter().enumerate() {
            let afield = format!("aggregation[{j}]");
            let column = a.column.get_ref().clone();
            if !available.contains(&column) {
                return self.fail(
                    a.column.span(),
                    format!("{field}.{afield}.column"),
                    format!("{column:?} is not a column of source {:?}", source.name),
                );
            }
            let windows = match &a.windows {
                Some(w) => parse_windows(w, &format!("{afield}.windows"))?,
                None => default_windows.clone(),
            };
            let numeric = source.column(&column).is_none_or(|c| c.ty.is_numeric());
            for f in a.functions.get_ref() {
                let Some(function) = Aggregation::parse(f) else {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.functions"),
                        format!(
                            "unknown aggregation {f:?} (count, sum, mean, min, max, stddev, distinct_count, last)"
                        ),
                    );
                };
                let needs_number = matches!(
                    function,
                    Aggregation::Sum
                        | Aggregation::Mean
                        | Aggregation::Min
                        | Aggregation::Max
                        | Aggregation::Stddev
                );
                if needs_number && !numeric {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.functions"),
                        format!("{f:?} needs a numeric column; {column:?} is not"),
                    );
                }
                if function == Aggregation::Last {
                    let value_type = sources
                        .iter()
                        .find_map(|s| s.column(&column))
                        .map(|c| c.ty.label())
                        .unwrap_or_else(|| "string".into());
                    windowed.push(WindowFeature {
                        name: format!("{column}_last"),
                        column: column.clone(),
                        function,
                        window: None,
                        value_type,
                    });
                    continue;
                }
                if windows.is_empty() {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.windows"),
                        "no windows: set `windows` on the view or the aggregation".into(),
                    );
                }
                for w in &windows {
                    windowed.push(WindowFeature {
                        name: format!("{column}_{}_{}", function.label(), format_duration(*w)),
                        column: column.clone(),
                        function,
                        window: Some(*w),
                        value_type: "float64".into(),
                    });
                }
            }
        }
        let mut names: Vec<String> = Vec::new();
        for f in &windowed {
            if names.contains(&f.name) {
                return self.fail(
                    v.name.span(),
                    format!("{field}.aggregation"),
                    format!("feature {:?} is defined twice", f.name),
                );
            }
            names.push(f.name.clone());
        }
        let mut derived = Vec::new();
        for (j, d) in v.derived.iter().enumerate() {
            let dname = d.name.get_ref().clone();
            if !is_identifier(&dname) || names.contains(&dname) {
                return self.fail(
                    d.name.span(),
                    format!("{field}.derived[{j}].name"),
                    format!("{dname:?} is not a valid, unused feature name"),
                );
            }
            let mut known = names.clone();
            known.extend(available.iter().cloned());
            if let Err(message) = crate::expr::parse(d.expr.get_ref(), &known) {
                return self.fail(d.expr.span(), format!("{field}.derived[{j}].expr"), message);
            }
            names.push(dname.clone());
            derived.push(DerivedFeature {
                name: dname,
                expr: d.expr.get_ref().clone(),
            });
        }
        if names.is_empty() {
            return self.fail(
                v.name.span(),
                field.to_string(),
                "a feature view needs at least one aggregation".into(),
            );
        }
        for key in &entity.join_keys {
            if names.contains(key) || key == crate::gold::EVENT_TIMESTAMP {
                return self.fail(
                    v.name.span(),
                    field.to_string(),
                    format!("feature name {key:?} collides with a key column"),
                );
            }
        }
        Ok(ViewSpec {
            name,
            entity: entity.clone(),
            source: source.name.clone(),
            ttl,
            windowed,
            derived,
        })
    }
}

/// Orders sources so that every dimension comes before the sources it
/// enriches; returns a source on a cycle when there is one.
fn order_sources(sources: Vec<Source>) -> std::result::Result<Vec<Source>, String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(sources.len());
    let mut pending = sources;
    while !pending.is_empty() {
        let before = pending.len();
        let (ready, rest): (Vec<Source>, Vec<Source>) = pending
            .into_iter()
            .partition(|s| s.enrich.iter().all(|e| done.contains(&e.source)));
        for s in ready {
            done.insert(s.name.clone());
            ordered.push(s);
        }
        pending = rest;
        if pending.len() == before {
            return Err(pending[0].name.clone());
        }
    }
    Ok(ordered)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Project::parse(text, Path::new("aurum.toml"), Path::new("."))
            .unwrap_err()
            .to_string()
    }

    const BASE: &str = r#"[project]
name = "t"

[[entity]]
name = "customer"
join_keys = ["customer_id"]

[[source]]
name = "tx"
format = "csv"
path = "x/*.csv"
timestamp = "ts"
columns = [
  { name = "customer_id", type = "int64" },
  { name = "amount", type = "float64" },
  { name = "ts", type = "timestamp" },
]

[[feature_view]]
name = "v"
entity = "customer"
source = "tx"
ttl = "1d"
windows = ["1h"]

[[feature_view.aggregation]]
column = "amount"
functions = ["sum"]
"#;

    #[test]
    fn a_valid_file_loads() {
        let p = Project::parse(BASE, Path::new("aurum.toml"), Path::new("/p")).unwrap();
        assert_eq!(p.view("v").unwrap().feature_names(), vec!["amount_sum_1h"]);
        let with_service =
            format!("{BASE}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"v\"]\n");
        let p = Project::parse(&with_service, Path::new("aurum.toml"), Path::new("/p")).unwrap();
        assert_eq!(p.feature_services[0].features, vec!["v:amount_sum_1h"]);
        assert_eq!(p.data_dir, Path::new("/p/data"));
    }

    #[test]
    fn errors_name_line_and_field() {
        for (from, to, expected) in [
            (
                "ttl = \"1d\"",
                "ttl = \"1 day\"",
                "aurum.toml:23: feature_view[0].ttl: \"1 day\" is not a duration",
            ),
            (
                "type = \"float64\"",
                "type = \"float\" , oops = 1",
                "aurum.toml:15: unknown field `oops`",
            ),
            (
                "functions = [\"sum\"]",
                "functions = [\"median\"]",
                "aurum.toml:28: feature_view[0].aggregation[0].functions: unknown aggregation \"median\"",
            ),
            (
                "source = \"tx\"",
                "source = \"txs\"",
                "aurum.toml:22: feature_view[0].source: no source named \"txs\"",
            ),
            (
                "timestamp = \"ts\"",
                "timestamp = \"amount\"",
                "aurum.toml:12: source[0].timestamp: \"amount\" must have type timestamp",
            ),
            ("name = \"t\"\n", "", "missing field `name`"),
            (
                "functions = [\"sum\"]\n",
                "functions = [\"sum\"]\n[[feature_service]]\nname = \"s\"\nfeatures = [\"v:amount_sum_1d\"]\n",
                "aurum.toml:31: feature_service[0].features: \"v:amount_sum_1d\": feature view \"v\" has no feature \"amount_sum_1d\"",
            ),
            (
                "{ name = \"ts\", type = \"timestamp\" }",
                "{ name = \"ts\", type = \"decimal(3,4)\" }",
                "source[0].columns[2].type: unknown type",
            ),
        ] {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "{from}");
            let e = error(&text);
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for text in ["90s", "30m", "1h", "7d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(parse_duration("2w").unwrap()), "14d");
        assert!(parse_duration("0d").is_none());
        assert!(parse_duration("1y").is_none());
        assert!(parse_duration("3651d").is_none());
        assert!(parse_duration("99999999999999999w").is_none());
    }
}
