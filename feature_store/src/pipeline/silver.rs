//! The silver processor: a batch of raw bronze rows → typed, cleaned,
//! de-duplicated and enriched rows, with every rejected row in quarantine
//! and a quality score per batch and per column.
//!
//! The order of the steps matters and is fixed:
//! 1. **types**: each declared column is parsed from its text; a value that
//!    does not parse is a hard failure (rule `type`), never a silent null;
//! 2. **nulls**: `drop` makes a null a hard failure (rule `null`), the other
//!    strategies fill it (constant, batch mean or median, forward fill per
//!    entity in event-time order within the batch);
//! 3. **duplicates**: rows with the same key and event time keep the latest
//!    by created (or ingest) time;
//! 4. **enrichment**: left joins on dimension tables;
//! 5. **rules**: hard failures go to quarantine, soft ones only score.
//!
//! [`process`] is pure polars work on one batch; resolving duplicates
//! against rows committed by earlier runs is the pipeline's job.

use std::collections::BTreeMap;

use chrono::Datelike;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::bronze::{INGESTED_AT, SOURCE_FILE, SOURCE_ROW, STREAM_ERROR, STREAM_RAW};
use crate::project::{Check, ColumnType, NullStrategy, Severity, Source};

/// The quarantine table, shared by all sources.
pub const QUARANTINE_TABLE: &str = "quarantine";
/// The quality table, shared by all sources.
pub const QUALITY_TABLE: &str = "quality";

const UTC: TimeZone = TimeZone::UTC;

/// What one silver batch produced.
#[derive(Debug, Clone)]
pub struct SilverBatch {
    /// Clean rows, sorted by event time.
    pub clean: DataFrame,
    /// Rejected rows, one per bronze row, with rule and reason.
    pub quarantine: DataFrame,
    /// Quality measurements, one row per check, per column and per batch.
    pub quality: DataFrame,
    /// Counts.
    pub summary: SilverSummary,
}

/// Counts of one silver batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SilverSummary {
    /// Bronze rows in.
    pub rows_in: usize,
    /// Clean rows out.
    pub rows_out: usize,
    /// Rows quarantined.
    pub quarantined: usize,
    /// Rows superseded by a later delivery of the same record.
    pub duplicates_resolved: usize,
    /// Share of rows (duplicates aside) that passed every check.
    pub quality_score: f64,
    /// Failures by `check:column`.
    pub failures: BTreeMap<String, usize>,
}

/// Identifies a batch in the quality and quarantine tables.
#[derive(Debug, Clone)]
pub struct BatchContext {
    /// The pipeline run.
    pub run_id: String,
    /// The bronze version the batch was read at.
    pub bronze_version: u64,
    /// The run's clock, microseconds since the epoch.
    pub now_micros: i64,
}

struct CheckColumn {
    /// `type`, `null` or a rule name.
    rule: String,
    column: String,
    severity: Severity,
    flag: String,
    check: Option<Check>,
}

/// Runs the silver steps over one bronze batch. `dimensions` holds the
/// silver frames of the sources this one is enriched from.
pub fn process(
    bronze: DataFrame,
    source: &Source,
    dimensions: &BTreeMap<String, DataFrame>,
    ctx: &BatchContext,
) -> Result<SilverBatch> {
    let failed = |what: &str| step_failed(source, what);
    let rows_in = bronze.height();
    let clock = std::time::Instant::now();
    let step = |what: &str| tracing::debug!(source = %source.name, elapsed = ?clock.elapsed(), "silver {what}");
    let created = source
        .created
        .clone()
        .unwrap_or_else(|| INGESTED_AT.to_string());

    // Step 1: events that did not decode, types, and nulls that drop the
    // row.
    let stream = bronze.column(STREAM_ERROR).is_ok();
    let texts = typed_columns(bronze, source)?;
    let (flags, stage1) = type_and_null_flags(source, stream);
    let hard1 = any_of(stage1.iter().map(|c| col(c.flag.as_str())));
    let df1 = texts
        .lazy()
        .with_columns(flags)
        .with_column(hard1.alias("__hard"))
        .collect()
        .map_err(failed("types"))?;
    step("types");
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let bad1 = tally(&df1, &stage1, &mut failures).map_err(failed("quarantine"))?;
    let good = passed_types(df1, source, &stage1, stream)?;

    // Step 2: null strategies. From here on rows are in event-time order
    // (then created order), sorted once: forward fill follows it, duplicate
    // resolution keeps the last (latest created) row of each key, and the
    // output files are clustered by event time.
    let lf = fill_nulls(
        good.lazy().sort(
            [source.timestamp.as_str(), created.as_str()],
            SortMultipleOptions::default().with_maintain_order(true),
        ),
        source,
    )?;

    // Step 3: duplicates within the batch.
    step("split");
    let filled = lf.collect().map_err(failed("nulls"))?;
    step("nulls");
    let before_dedup = filled.height();
    let lf = latest_deliveries(filled.lazy(), source);

    // Step 4: enrichment.
    let lf = enrich(lf, source, dimensions)?;

    // Step 5: rules.
    let (df2, stage2) = check_rules(lf, source, &created)?;
    step("dedup, enrichment, rules");
    let duplicates_resolved = before_dedup - df2.height();
    let bad2 = tally(&df2, &stage2, &mut failures).map_err(failed("quarantine"))?;
    let any_failure = count_true(&df2, "__any")?;
    let clean = df2
        .lazy()
        .filter(col("__hard").not())
        .select(output_columns(source))
        .collect()
        .map_err(failed("output"))?;

    step("output");
    let quarantine = quarantine_frame(source, ctx, &[(&bad1, &stage1), (&bad2, &stage2)])?;
    let considered = rows_in.saturating_sub(duplicates_resolved).max(1);
    let passed = considered.saturating_sub(bad1.height() + any_failure);
    let quality_score = passed as f64 / considered as f64;
    let quality = quality_frame(
        source,
        ctx,
        &failures,
        &stage1,
        &stage2,
        considered,
        quality_score,
    )?;
    step("quarantine and quality");
    let summary = SilverSummary {
        rows_in,
        rows_out: clean.height(),
        quarantined: quarantine.height(),
        duplicates_resolved,
        quality_score,
        failures,
    };
    Ok(SilverBatch {
        clean,
        quarantine,
        quality,
        summary,
    })
}

/// The error of step `what` of `source`'s silver batch.
fn step_failed(source: &Source, what: &str) -> impl FnOnce(PolarsError) -> Error + use<> {
    Error::polars(format!("silver {} ({what})", source.name))
}

/// The bronze batch with each declared column's text normalized (trimmed,
/// empty as null, lowercased, as declared) and parsed into its type; the
/// raw and the normalized text stay beside (`__raw_`, `__text_`) for the
/// type checks and the quarantine.
fn typed_columns(bronze: DataFrame, source: &Source) -> Result<DataFrame> {
    let failed = |what: &str| step_failed(source, what);
    let mut exprs = Vec::new();
    for c in &source.columns {
        let raw = col(c.name.as_str());
        let text = if c.trim {
            raw.clone().str().strip_chars(lit(NULL))
        } else {
            raw.clone()
        };
        let text = when(text.clone().eq(lit("")))
            .then(lit(NULL).cast(DataType::String))
            .otherwise(text);
        let text = if c.lowercase {
            text.str().to_lowercase()
        } else {
            text
        };
        exprs.push(raw.alias(raw_name(&c.name)));
        exprs.push(text.alias(text_name(&c.name)));
    }
    // Text first, then types from the text columns: each string is trimmed
    // and normalized once.
    // ISO 8601 timestamps take a hand-written parser (about ten times
    // faster than strptime); other formats go through polars.
    let (fast, slow): (Vec<&crate::project::Column>, Vec<&crate::project::Column>) =
        source.columns.iter().partition(|c| fast_timestamp(c));
    let typed_exprs: Vec<Expr> = slow
        .iter()
        .map(|c| typed(col(text_name(&c.name)), c).alias(c.name.as_str()))
        .collect();
    let mut texts = bronze
        .lazy()
        .with_columns(exprs)
        .with_columns(typed_exprs)
        .collect()
        .map_err(failed("types"))?;
    for c in fast {
        let parsed = parse_iso_column(&texts, &text_name(&c.name)).map_err(failed("timestamps"))?;
        texts
            .with_column(parsed.with_name(c.name.as_str().into()))
            .map_err(failed("timestamps"))?;
    }
    Ok(texts)
}

/// Step 1's checks: a stream event that did not decode (`decode`, when
/// `stream`), a value whose text does not parse (`type`), and a null where
/// the row must be dropped (`null`), each as a flag column. An event that
/// did not decode has no values, so it fails only `decode`.
fn type_and_null_flags(source: &Source, stream: bool) -> (Vec<Expr>, Vec<CheckColumn>) {
    let mut stage1: Vec<CheckColumn> = Vec::new();
    let mut flags = Vec::new();
    let decoded = |flag: Expr| {
        if stream {
            flag.and(col(STREAM_ERROR).is_null())
        } else {
            flag
        }
    };
    if stream {
        flags.push(col(STREAM_ERROR).is_not_null().alias("__decode"));
        stage1.push(CheckColumn {
            rule: "decode".into(),
            column: "event".into(),
            severity: Severity::Hard,
            flag: "__decode".into(),
            check: None,
        });
    }
    for c in &source.columns {
        let flag = format!("__type_{}", c.name);
        flags.push(
            decoded(
                col(text_name(&c.name))
                    .is_not_null()
                    .and(col(c.name.as_str()).is_null()),
            )
            .alias(flag.as_str()),
        );
        stage1.push(CheckColumn {
            rule: "type".into(),
            column: c.name.clone(),
            severity: Severity::Hard,
            flag,
            check: None,
        });
    }
    // The event time is required: a row without one cannot be placed in
    // any window, so it is quarantined like a `drop` null.
    let mut dropped: Vec<String> = source
        .nulls
        .iter()
        .filter(|(_, s)| *s == NullStrategy::Drop)
        .map(|(c, _)| c.clone())
        .collect();
    if !dropped.contains(&source.timestamp) {
        dropped.push(source.timestamp.clone());
    }
    for column in &dropped {
        let flag = format!("__null_{column}");
        flags.push(decoded(col(text_name(column)).is_null()).alias(flag.as_str()));
        stage1.push(CheckColumn {
            rule: "null".into(),
            column: column.clone(),
            severity: Severity::Hard,
            flag,
            check: None,
        });
    }
    // A stream event consumed later after its event time than the declared
    // lateness: its windows have been read, so it is quarantined (from
    // bronze's own consumption time, so every run decides alike).
    if let Some(lateness) = source
        .kafka
        .as_ref()
        .map(|k| k.lateness)
        .filter(|l| !l.is_zero())
        .filter(|_| stream)
    {
        let micros = i64::try_from(lateness.as_micros()).unwrap_or(i64::MAX);
        flags.push(
            decoded(
                col(source.timestamp.as_str())
                    .cast(DataType::Int64)
                    .lt(col(INGESTED_AT).cast(DataType::Int64) - lit(micros))
                    .fill_null(lit(false)),
            )
            .alias("__late"),
        );
        stage1.push(CheckColumn {
            rule: "late".into(),
            column: source.timestamp.clone(),
            severity: Severity::Hard,
            flag: "__late".into(),
            check: None,
        });
    }
    (flags, stage1)
}

/// The rows that passed step 1, without their raw and intermediate
/// columns: the bronze table keeps the raw text, `_source_file`/
/// `_source_row` point at it, and carrying it through sorts and joins would
/// double the work.
fn passed_types(
    df1: DataFrame,
    source: &Source,
    stage1: &[CheckColumn],
    stream: bool,
) -> Result<DataFrame> {
    let mut scratch: Vec<String> = vec!["__hard".to_string()];
    if stream {
        scratch.extend([STREAM_ERROR.to_string(), STREAM_RAW.to_string()]);
    }
    for c in &source.columns {
        scratch.push(raw_name(&c.name));
        scratch.push(text_name(&c.name));
    }
    scratch.extend(stage1.iter().map(|c| c.flag.clone()));
    df1.lazy()
        .filter(col("__hard").not())
        .drop(by_name(scratch.iter().map(String::as_str), true, false))
        .collect()
        .map_err(step_failed(source, "types"))
}

/// Step 2: each declared column's null strategy other than `drop`.
fn fill_nulls(mut lf: LazyFrame, source: &Source) -> Result<LazyFrame> {
    for (column, strategy) in &source.nulls {
        let Some(declared) = source.column(column) else {
            continue;
        };
        let dtype = polars_type(&declared.ty);
        let filled = match strategy {
            NullStrategy::Drop => continue,
            NullStrategy::Constant(value) => {
                col(column.as_str()).fill_null(typed(lit(value.clone()), declared))
            }
            NullStrategy::Mean => col(column.as_str()).fill_null(col(column.as_str()).mean()),
            NullStrategy::Median => col(column.as_str()).fill_null(col(column.as_str()).median()),
            NullStrategy::ForwardFill { by } => col(column.as_str())
                .fill_null_with_strategy(FillNullStrategy::Forward(None))
                .over(by.iter().map(|b| col(b.as_str())).collect::<Vec<_>>())
                .map_err(step_failed(source, "forward fill"))?,
        };
        lf = lf.with_column(filled.cast(dtype).alias(column.as_str()));
    }
    Ok(lf)
}

/// Step 3: of the rows with the same dedup key and event time, the last
/// (the latest created: rows are in that order); all rows without a key.
fn latest_deliveries(lf: LazyFrame, source: &Source) -> LazyFrame {
    if source.dedup_key.is_empty() {
        return lf;
    }
    let mut key: Vec<Expr> = source.dedup_key.iter().map(|k| col(k.as_str())).collect();
    key.push(col(source.timestamp.as_str()));
    lf.unique_stable_generic(Some(key), UniqueKeepStrategy::Last)
}

/// Step 4: left joins on the dimensions' silver frames (the latest row of
/// each key).
fn enrich(
    mut lf: LazyFrame,
    source: &Source,
    dimensions: &BTreeMap<String, DataFrame>,
) -> Result<LazyFrame> {
    for e in &source.enrich {
        let Some(dim) = dimensions.get(&e.source) else {
            return Err(Error::Schema {
                view: source.name.clone(),
                message: format!(
                    "enrichment needs the silver table of source {:?}, which has no rows yet",
                    e.source
                ),
            });
        };
        let mut wanted: Vec<Expr> = e.on.iter().map(|k| col(k.as_str())).collect();
        wanted.extend(e.columns.iter().map(|c| col(c.as_str())));
        let on: Vec<Expr> = e.on.iter().map(|k| col(k.as_str())).collect();
        let dim = dim
            .clone()
            .lazy()
            .select(wanted)
            .unique_stable_generic(Some(on.clone()), UniqueKeepStrategy::Last);
        lf = lf.join(dim, on.clone(), on, left_ordered(JoinType::Left));
    }
    Ok(lf)
}

/// Step 5: `lf` with each rule's flag, `__hard` (a hard rule failed) and
/// `__any` (any rule failed), and the checks flagged.
fn check_rules(
    lf: LazyFrame,
    source: &Source,
    created: &str,
) -> Result<(DataFrame, Vec<CheckColumn>)> {
    let (flags, stage2) = rule_flags(source, created)?;
    let hard2 = any_of(
        stage2
            .iter()
            .filter(|c| c.severity == Severity::Hard)
            .map(|c| col(c.flag.as_str())),
    );
    let soft2 = any_of(stage2.iter().map(|c| col(c.flag.as_str())));
    let df2 = lf
        .with_columns(flags)
        .with_columns([hard2.alias("__hard"), soft2.alias("__any")])
        .collect()
        .map_err(step_failed(source, "rules"))?;
    Ok((df2, stage2))
}

/// Step 5's checks: each rule's failure as a flag column (null counts as
/// passing). `created` is the delivery-time column freshness is measured
/// to.
fn rule_flags(source: &Source, created: &str) -> Result<(Vec<Expr>, Vec<CheckColumn>)> {
    let mut stage2: Vec<CheckColumn> = Vec::new();
    let mut flags = Vec::new();
    for (i, rule) in source.rules.iter().enumerate() {
        let flag = format!("__rule_{i}");
        let fail = rule_failure(source, rule, created)?;
        flags.push(fail.fill_null(lit(false)).alias(flag.as_str()));
        stage2.push(CheckColumn {
            rule: rule.name().to_string(),
            column: rule.column.clone(),
            severity: rule.severity,
            flag,
            check: Some(rule.check.clone()),
        });
    }
    Ok((flags, stage2))
}

/// Whether a row fails `rule`.
fn rule_failure(source: &Source, rule: &crate::project::Rule, created: &str) -> Result<Expr> {
    let value = col(rule.column.as_str());
    Ok(match &rule.check {
        Check::NotNull => value.is_null(),
        Check::Range { min, max } => {
            let v = value.clone().cast(DataType::Float64);
            let low = min.map(|m| v.clone().lt(lit(m))).unwrap_or(lit(false));
            let high = max.map(|m| v.gt(lit(m))).unwrap_or(lit(false));
            value.is_not_null().and(low.or(high))
        }
        Check::Regex(pattern) => value.clone().is_not_null().and(
            value
                .cast(DataType::String)
                .str()
                .contains(lit(pattern.clone()), true)
                .not(),
        ),
        Check::Allowed(values) => {
            let list = Series::new("allowed".into(), values.clone());
            value.clone().is_not_null().and(
                value
                    .cast(DataType::String)
                    .is_in(lit(list).implode(false), false)
                    .not(),
            )
        }
        Check::Unique(columns) => len()
            .over(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            .map_err(step_failed(source, "unique rule"))?
            .gt(lit(1)),
        Check::Freshness(max_delay) => {
            let delay = col(created).cast(DataType::Int64)
                - col(source.timestamp.as_str()).cast(DataType::Int64);
            delay.gt(lit(i64::try_from(max_delay.as_micros()).unwrap_or(i64::MAX)))
        }
    })
}

/// The output columns: declared, enriched, then ingest metadata.
fn output_columns(source: &Source) -> Vec<Expr> {
    let mut keep: Vec<Expr> = source
        .columns
        .iter()
        .map(|c| col(c.name.as_str()))
        .collect();
    keep.extend(
        source
            .enrich
            .iter()
            .flat_map(|e| e.columns.iter().map(|c| col(c.as_str()))),
    );
    keep.extend([col(SOURCE_FILE), col(SOURCE_ROW), col(INGESTED_AT)]);
    keep
}

/// The polars type a declared column is stored as.
pub fn polars_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::String | ColumnType::Categorical => DataType::String,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, Some(UTC)),
        ColumnType::Decimal { precision, scale } => DataType::Decimal(*precision, *scale),
    }
}

fn raw_name(column: &str) -> String {
    format!("__raw_{column}")
}

fn text_name(column: &str) -> String {
    format!("__text_{column}")
}

/// Parses text into a declared column's type; a value that does not fit
/// becomes null (the caller flags it).
fn typed(text: Expr, column: &crate::project::Column) -> Expr {
    match &column.ty {
        ColumnType::String | ColumnType::Categorical => text,
        ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. } => {
            text.cast(polars_type(&column.ty))
        }
        ColumnType::Bool => {
            let lower = text.str().to_lowercase();
            let truthy = Series::new("t".into(), ["true", "t", "yes", "y", "1"]);
            let falsy = Series::new("f".into(), ["false", "f", "no", "n", "0"]);
            when(lower.clone().is_in(lit(truthy).implode(false), false))
                .then(lit(true))
                .when(lower.is_in(lit(falsy).implode(false), false))
                .then(lit(false))
                .otherwise(lit(NULL).cast(DataType::Boolean))
        }
        ColumnType::Date => text.str().to_date(StrptimeOptions {
            format: column.format.as_deref().map(Into::into),
            strict: false,
            exact: true,
            cache: false,
        }),
        ColumnType::Timestamp => {
            let format = column.format.clone();
            let aware = format
                .as_deref()
                .is_some_and(|f| f.contains("%z") || f.contains("%:z"));
            let options = StrptimeOptions {
                format: format.map(Into::into),
                strict: false,
                exact: true,
                cache: false,
            };
            if aware {
                text.str().to_datetime(
                    Some(TimeUnit::Microseconds),
                    Some(UTC),
                    options,
                    lit("raise"),
                )
            } else {
                let zone = TimeZone::opt_try_new(Some(column.timezone.as_str()))
                    .ok()
                    .flatten()
                    .unwrap_or(UTC);
                text.str()
                    .to_datetime(Some(TimeUnit::Microseconds), None, options, lit("raise"))
                    .dt()
                    .replace_time_zone(Some(zone), lit("null"), NonExistent::Null)
                    .dt()
                    .convert_time_zone(UTC)
            }
        }
    }
}

/// Whether a timestamp column can take the fast ISO 8601 parser: its
/// format is ISO 8601 (or unset) and values without an offset are UTC.
fn fast_timestamp(column: &crate::project::Column) -> bool {
    column.ty == ColumnType::Timestamp
        && column.timezone == "UTC"
        && matches!(
            column.format.as_deref(),
            None | Some(
                "%Y-%m-%dT%H:%M:%S%.fZ"
                    | "%Y-%m-%dT%H:%M:%SZ"
                    | "%Y-%m-%dT%H:%M:%S%.f%z"
                    | "%Y-%m-%dT%H:%M:%S%z"
                    | "%Y-%m-%dT%H:%M:%S%.f%:z"
                    | "%Y-%m-%dT%H:%M:%S%:z"
            )
        )
}

fn parse_iso_column(df: &DataFrame, text: &str) -> PolarsResult<Column> {
    let values = df.column(text)?.str()?.clone();
    let micros: Int64Chunked = values
        .iter()
        .map(|v| v.and_then(parse_iso_micros))
        .collect();
    micros
        .into_series()
        .cast(&DataType::Datetime(TimeUnit::Microseconds, Some(UTC)))
        .map(Column::from)
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` into
/// microseconds since the epoch, UTC (no offset means UTC).
pub fn parse_iso_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 6 {
                micros = micros * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let len = at - start;
        if len == 0 {
            return None;
        }
        for _ in len..6 {
            micros *= 10;
        }
    }
    let offset_seconds = match b.get(at) {
        None => 0,
        Some(b'Z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let rest = &b[at + 1..];
            let (h, m) = match rest.len() {
                5 if rest[2] == b':' => (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?),
                4 => (digits(at + 1..at + 3)?, digits(at + 3..at + 5)?),
                _ => return None,
            };
            let total = h * 3_600 + m * 60;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = i64::from(date.num_days_from_ce()) - 719_163;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_seconds;
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

fn any_of(flags: impl Iterator<Item = Expr>) -> Expr {
    flags.fold(lit(false), |acc, f| acc.or(f))
}

/// Counts each check's failures into `failures` (by `check:column`) and
/// returns the rows that failed a hard check (flagged `__hard`).
fn tally(
    df: &DataFrame,
    checks: &[CheckColumn],
    failures: &mut BTreeMap<String, usize>,
) -> PolarsResult<DataFrame> {
    for c in checks {
        let failed = df.column(&c.flag)?.bool()?.sum().unwrap_or(0) as usize;
        failures.insert(format!("{}:{}", c.rule, c.column), failed);
    }
    df.clone().lazy().filter(col("__hard")).collect()
}

fn count_true(df: &DataFrame, column: &str) -> Result<usize> {
    let c = df
        .column(column)
        .map_err(Error::polars(format!("counting {column}")))?;
    let b = c
        .bool()
        .map_err(Error::polars(format!("counting {column}")))?;
    Ok(b.sum().unwrap_or(0) as usize)
}

fn text_of(value: AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "null".to_string(),
        AnyValue::String(s) => format!("{s:?}"),
        AnyValue::StringOwned(s) => format!("{:?}", s.as_str()),
        other => other.to_string(),
    }
}

fn reason(check: &CheckColumn, source: &Source, frame: &DataFrame, row: usize) -> String {
    let get = |name: &str| {
        frame
            .column(name)
            .ok()
            .and_then(|c| c.get(row).ok())
            .map(|v| text_of(v.into_static()))
            .unwrap_or_else(|| "?".into())
    };
    let column = check.column.as_str();
    match (&check.check, check.rule.as_str()) {
        (None, "decode") => frame
            .column(STREAM_ERROR)
            .ok()
            .and_then(|c| c.str().ok()?.get(row).map(str::to_string))
            .unwrap_or_else(|| "the event could not be decoded".into()),
        (None, "type") => {
            let ty = source
                .column(column)
                .map(|c| match &c.ty {
                    ColumnType::Decimal { precision, scale } => {
                        format!("decimal({precision},{scale})")
                    }
                    other => format!("{other:?}").to_lowercase(),
                })
                .unwrap_or_default();
            let format = source
                .column(column)
                .and_then(|c| c.format.clone())
                .map(|f| format!(" with format {f:?}"))
                .unwrap_or_default();
            format!(
                "{column}: {} is not a valid {ty}{format}",
                get(&text_name(column))
            )
        }
        (None, "late") => format!(
            "{column}: {} arrived at {}, later than the declared lateness ({})",
            get(column),
            get(INGESTED_AT),
            source
                .kafka
                .as_ref()
                .map(|k| crate::project::format_duration(k.lateness))
                .unwrap_or_default()
        ),
        (None, _) if column == source.timestamp => {
            format!("{column}: null, and every row needs an event time")
        }
        (None, _) => format!("{column}: null, and the null strategy is drop"),
        (Some(Check::NotNull), _) => format!("{column}: null"),
        (Some(Check::Range { min, max }), _) => format!(
            "{column}: {} is outside [{}, {}]",
            get(column),
            min.map(|m| m.to_string()).unwrap_or_else(|| "-inf".into()),
            max.map(|m| m.to_string()).unwrap_or_else(|| "inf".into())
        ),
        (Some(Check::Regex(p)), _) => {
            format!("{column}: {} does not match /{p}/", get(column))
        }
        (Some(Check::Allowed(values)), _) => format!(
            "{column}: {} is not one of {}",
            get(column),
            values.join(", ")
        ),
        (Some(Check::Unique(columns)), _) => {
            format!(
                "{}: the value occurs more than once in the batch",
                columns.join("+")
            )
        }
        (Some(Check::Freshness(d)), _) => format!(
            "{column}: arrived more than {} after the event",
            crate::project::format_duration(*d)
        ),
    }
}

fn quarantine_frame(
    source: &Source,
    ctx: &BatchContext,
    parts: &[(&DataFrame, &Vec<CheckColumn>)],
) -> Result<DataFrame> {
    let mut files: Vec<Option<String>> = Vec::new();
    let mut rows: Vec<Option<i64>> = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut records: Vec<String> = Vec::new();
    for (frame, checks) in parts {
        let flags: Vec<(&CheckColumn, BooleanChunked)> = checks
            .iter()
            .filter(|c| c.severity == Severity::Hard)
            .filter_map(|c| {
                let column = frame.column(&c.flag).ok()?;
                Some((c, column.bool().ok()?.clone()))
            })
            .collect();
        let file_col = frame
            .column(SOURCE_FILE)
            .ok()
            .and_then(|c| c.str().ok().cloned());
        let row_col = frame
            .column(SOURCE_ROW)
            .ok()
            .and_then(|c| c.i64().ok().cloned());
        let raw_col = frame
            .column(STREAM_RAW)
            .ok()
            .and_then(|c| c.str().ok().cloned());
        for i in 0..frame.height() {
            let failed: Vec<&CheckColumn> = flags
                .iter()
                .filter(|(_, b)| b.get(i) == Some(true))
                .map(|(c, _)| *c)
                .collect();
            let mut record = serde_json::Map::new();
            for c in &source.columns {
                let value = match frame.column(&raw_name(&c.name)) {
                    Ok(raw) => raw.str().ok().and_then(|s| s.get(i).map(str::to_string)),
                    // Rows rejected after typing carry their typed values.
                    Err(_) => frame
                        .column(&c.name)
                        .ok()
                        .and_then(|col| col.get(i).ok())
                        .and_then(|v| match v {
                            AnyValue::Null => None,
                            AnyValue::String(s) => Some(s.to_string()),
                            other => Some(other.to_string()),
                        }),
                };
                record.insert(
                    c.name.clone(),
                    value
                        .map(serde_json::Value::String)
                        .unwrap_or(serde_json::Value::Null),
                );
            }
            files.push(file_col.as_ref().and_then(|f| f.get(i).map(str::to_string)));
            rows.push(row_col.as_ref().and_then(|r| r.get(i)));
            rules.push(
                failed
                    .iter()
                    .map(|c| format!("{}:{}", c.rule, c.column))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            reasons.push(
                failed
                    .iter()
                    .map(|c| reason(c, source, frame, i))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            // An event that did not decode is kept as it arrived.
            if let Some(raw) = raw_col.as_ref().and_then(|r| r.get(i)) {
                record.insert(
                    STREAM_RAW.to_string(),
                    serde_json::Value::String(raw.to_string()),
                );
            }
            records.push(serde_json::Value::Object(record).to_string());
        }
    }
    let df = df!(
        "source_file" => files,
        "source_row" => rows,
        "rule" => rules,
        "reason" => reasons,
        "record" => records,
    )
    .and_then(|df| with_batch_context(df, source, ctx, "quarantined_at"))
    .map_err(Error::polars("building quarantine rows"))?;
    Ok(df)
}

/// Puts the batch's identity (run, source, silver table, bronze version)
/// before a side table's own columns, and the run's clock after them as
/// `time_column`.
fn with_batch_context(
    df: DataFrame,
    source: &Source,
    ctx: &BatchContext,
    time_column: &str,
) -> PolarsResult<DataFrame> {
    let mut columns = vec![
        lit(ctx.run_id.clone()).alias("run_id"),
        lit(source.name.clone()).alias("source"),
        lit(source.silver_table.clone()).alias("silver_table"),
        lit(ctx.bronze_version as i64).alias("bronze_version"),
    ];
    columns.extend(df.get_column_names().into_iter().map(|c| col(c.clone())));
    columns.push(
        lit(ctx.now_micros)
            .cast(DataType::Datetime(TimeUnit::Microseconds, Some(UTC)))
            .alias(time_column),
    );
    df.lazy().select(columns).collect()
}

fn quality_frame(
    source: &Source,
    ctx: &BatchContext,
    failures: &BTreeMap<String, usize>,
    stage1: &[CheckColumn],
    stage2: &[CheckColumn],
    considered: usize,
    batch_score: f64,
) -> Result<DataFrame> {
    let mut columns: Vec<String> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    let mut severities: Vec<String> = Vec::new();
    let mut failed: Vec<i64> = Vec::new();
    let mut scores: Vec<f64> = Vec::new();
    let mut per_column: BTreeMap<String, usize> = BTreeMap::new();
    for c in stage1.iter().chain(stage2) {
        let n = failures
            .get(&format!("{}:{}", c.rule, c.column))
            .copied()
            .unwrap_or(0);
        *per_column.entry(c.column.clone()).or_default() += n;
        columns.push(c.column.clone());
        checks.push(c.rule.clone());
        severities.push(format!("{:?}", c.severity).to_lowercase());
        failed.push(n as i64);
        scores.push(1.0 - n as f64 / considered as f64);
    }
    for (column, n) in &per_column {
        columns.push(column.clone());
        checks.push("*".into());
        severities.push(String::new());
        failed.push(*n as i64);
        scores.push((1.0 - *n as f64 / considered as f64).max(0.0));
    }
    columns.push("*".into());
    checks.push("*".into());
    severities.push(String::new());
    failed.push(((1.0 - batch_score) * considered as f64).round() as i64);
    scores.push(batch_score);
    let n = columns.len();
    df!(
        "column" => columns,
        "check" => checks,
        "severity" => severities,
        "rows" => vec![considered as i64; n],
        "failed" => failed,
        "score" => scores,
    )
    .and_then(|df| with_batch_context(df, source, ctx, "measured_at"))
    .map_err(Error::polars("building quality rows"))
}

/// The quality rows of a batch's gate checks: `check` is `gate:<check>`,
/// `column` the view whose gate it is (`*`: the source's own), `severity`
/// `gate`, `failed` 1 when the batch did not meet it, `score` what the batch
/// measured.
pub(crate) fn gate_frame(
    source: &Source,
    ctx: &BatchContext,
    checks: &[super::gate::GateCheck],
    rows: usize,
) -> Result<DataFrame> {
    let n = checks.len();
    df!(
        "column" => checks.iter().map(|c| c.view.clone().unwrap_or_else(|| "*".into())).collect::<Vec<_>>(),
        "check" => checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "severity" => vec!["gate".to_string(); n],
        "rows" => vec![rows as i64; n],
        "failed" => checks.iter().map(|c| i64::from(!c.passed)).collect::<Vec<_>>(),
        "score" => checks.iter().map(|c| c.value).collect::<Vec<_>>(),
    )
    .and_then(|df| with_batch_context(df, source, ctx, "measured_at"))
    .map_err(Error::polars("building quality gate rows"))
}

/// Join arguments that keep the left frame's row order.
fn left_ordered(how: JoinType) -> JoinArgs {
    let mut args = JoinArgs::new(how);
    args.maintain_order = MaintainOrderJoin::Left;
    args
}

#[cfg(test)]
mod tests;
