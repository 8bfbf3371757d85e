//! The gold processor: a feature view's windowed aggregations and derived
//! features over its silver source, one output row per source row, valued
//! as of that row's event time (so that point-in-time joins can use them).
//!
//! Every window is `(t - w, t]`: it includes the row's own event. Rows are
//! stamped with the run's `created_timestamp`; a later run that recomputes
//! a row (because late data changed its window) appends it again with a
//! newer `created_timestamp`, and readers take the newest — the gold table
//! is append-only and its history is the audit trail.

use std::collections::HashMap;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::project::{Aggregation, Source, ViewSpec};

// The gold table's time columns, named where every layer can see them.
pub use crate::schema::{CREATED_TIMESTAMP, EVENT_TIMESTAMP};
/// The column of [`compute`]'s `output_from` frame holding, per entity, the
/// first event time whose features must be (re)computed, in microseconds.
pub const OUTPUT_FROM: &str = "__output_from";

const UTC: TimeZone = TimeZone::UTC;

/// The silver columns a view reads.
pub fn input_columns(view: &ViewSpec, source: &Source) -> Vec<String> {
    let mut columns: Vec<String> = view.entity.join_keys.clone();
    columns.push(source.timestamp.clone());
    for f in &view.windowed {
        if !columns.contains(&f.column) {
            columns.push(f.column.clone());
        }
    }
    for d in &view.derived {
        for name in source_names(&d.expr) {
            if (source.column(&name).is_some()
                || source.enrich.iter().any(|e| e.columns.contains(&name)))
                && !columns.contains(&name)
            {
                columns.push(name);
            }
        }
    }
    columns
}

/// Computes the view over `context` (silver rows, any order). When
/// `output_from` is given (entity keys + [`OUTPUT_FROM`]), only rows of
/// those entities at or after their `OUTPUT_FROM` time are returned; the
/// context must then hold each such entity's rows back to
/// `OUTPUT_FROM - max window`.
pub fn compute(
    view: &ViewSpec,
    source: &Source,
    context: &DataFrame,
    output_from: Option<&DataFrame>,
    created_micros: i64,
) -> Result<DataFrame> {
    let failed = |what: &str| Error::polars(format!("gold {} ({what})", view.name));
    let keys = key_exprs(view);
    let ts = || col(source.timestamp.as_str());
    let mut df = sorted_by_entity(view, source, context)?;
    // Fast path: one rolling pass over the whole frame on an index that puts
    // each entity's events in its own segment, further apart than the
    // longest window, so no window crosses entities. Per-entity `over`
    // windows are the fallback when the index would overflow.
    let reach = i64::try_from(view.max_window().as_micros()).unwrap_or(i64::MAX);
    let timeline = Timeline::of(&df, &view.entity.join_keys, &source.timestamp)?;
    let segmented = segment_index(&timeline, reach);
    let by = match segmented {
        Some(index) => {
            df.with_column(Column::new("__index".into(), index))
                .map_err(failed("index"))?;
            Some(col("__index"))
        }
        None => None,
    };
    let features = rolling_features(view, by, ts(), &keys)?;
    let mut df = df
        .lazy()
        .with_columns(features)
        .collect()
        .map_err(failed("windows"))?;

    for f in view
        .windowed
        .iter()
        .filter(|f| f.function == Aggregation::DistinctCount)
    {
        let window = f.window.map(|w| w.as_micros() as i64).unwrap_or(i64::MAX);
        let counts = distinct_counts(&df, &timeline, &f.column, window)?;
        df.with_column(Column::new(f.name.as_str().into(), counts))
            .map_err(failed("distinct counts"))?;
    }

    let mut lf = with_derived(df.lazy(), view, source)?;
    if let Some(from) = output_from {
        lf = lf
            .join(
                from.clone().lazy(),
                keys.clone(),
                keys.clone(),
                left_ordered(JoinType::Inner),
            )
            .filter(ts().cast(DataType::Int64).gt_eq(col(OUTPUT_FROM)));
    }
    // Rows stay in entity, then event-time order: files are clustered by
    // entity, which is how the online store and point-in-time joins read.
    lf.select(output_columns(view, keys, ts(), created_micros))
        .collect()
        .map_err(failed("output"))
}

/// The view's entity key columns.
pub(crate) fn key_exprs(view: &ViewSpec) -> Vec<Expr> {
    view.entity
        .join_keys
        .iter()
        .map(|k| col(k.as_str()))
        .collect()
}

/// `context` sorted by entity, then event time (ties kept in order), with
/// the constant column `__one` that counts are summed from.
fn sorted_by_entity(view: &ViewSpec, source: &Source, context: &DataFrame) -> Result<DataFrame> {
    let mut sort_by: Vec<String> = view.entity.join_keys.clone();
    sort_by.push(source.timestamp.clone());
    context
        .clone()
        .lazy()
        .sort(
            sort_by.iter().map(String::as_str).collect::<Vec<_>>(),
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .with_column(lit(1.0f64).alias("__one"))
        .collect()
        .map_err(Error::polars(format!("gold {} (sorting)", view.name)))
}

/// The windowed aggregations other than distinct counts, as rolling
/// expressions: over the segmented index `by` when there is one (windows in
/// index units, microseconds), else over the event time `ts` per entity.
fn rolling_features(
    view: &ViewSpec,
    by: Option<Expr>,
    ts: Expr,
    keys: &[Expr],
) -> Result<Vec<Expr>> {
    let mut features: Vec<Expr> = Vec::new();
    for f in &view.windowed {
        let value = col(f.column.as_str()).cast(DataType::Float64);
        let options = f.window.map(|w| RollingOptionsDynamicWindow {
            window_size: match by {
                Some(_) => polars::prelude::Duration::parse(&format!("{}i", w.as_micros())),
                None => polars::prelude::Duration::parse(&format!("{}s", w.as_secs())),
            },
            min_periods: 1,
            closed_window: ClosedWindow::Right,
            fn_params: None,
        });
        let index = || by.clone().unwrap_or_else(|| ts.clone());
        let expr = match (f.function, options) {
            (Aggregation::Last, _) => col(f.column.as_str()),
            (Aggregation::DistinctCount, _) => continue,
            (_, None) => continue,
            (Aggregation::Count, Some(o)) => col("__one").rolling_sum_by(index(), o),
            (Aggregation::Sum, Some(o)) => value.rolling_sum_by(index(), o),
            (Aggregation::Mean, Some(o)) => value.rolling_mean_by(index(), o),
            (Aggregation::Min, Some(o)) => value.rolling_min_by(index(), o),
            (Aggregation::Max, Some(o)) => value.rolling_max_by(index(), o),
            (Aggregation::Stddev, Some(o)) => value.rolling_std_by(index(), o),
        };
        let expr = if f.function == Aggregation::Last || by.is_some() {
            expr
        } else {
            expr.over(keys)
                .map_err(Error::polars(format!("gold {} (windows)", view.name)))?
        };
        features.push(expr.alias(f.name.as_str()));
    }
    Ok(features)
}

/// `lf` with the view's derived features, each an expression over the
/// windowed features and the input columns.
fn with_derived(mut lf: LazyFrame, view: &ViewSpec, source: &Source) -> Result<LazyFrame> {
    for d in &view.derived {
        let known: Vec<String> = view
            .feature_names()
            .into_iter()
            .chain(input_columns(view, source))
            .collect();
        let node = crate::expr::parse(&d.expr, &known).map_err(|message| Error::Schema {
            view: view.name.clone(),
            message,
        })?;
        lf = lf.with_column(crate::expr::to_polars(&node).alias(d.name.as_str()));
    }
    Ok(lf)
}

/// The gold table's columns: entity keys, event time (from `ts`), created
/// time, windowed features (aggregates as `float64`, `last` as is), derived
/// features.
fn output_columns(view: &ViewSpec, keys: Vec<Expr>, ts: Expr, created_micros: i64) -> Vec<Expr> {
    let mut out: Vec<Expr> = keys;
    out.push(ts.alias(EVENT_TIMESTAMP));
    out.push(
        lit(created_micros)
            .cast(DataType::Datetime(TimeUnit::Microseconds, Some(UTC)))
            .alias(CREATED_TIMESTAMP),
    );
    for f in &view.windowed {
        let e = col(f.name.as_str());
        out.push(if f.function == Aggregation::Last {
            e
        } else {
            e.cast(DataType::Float64)
        });
    }
    out.extend(view.derived.iter().map(|d| col(d.name.as_str())));
    out
}

/// The segmented rolling index of a frame sorted by entity keys then event
/// time: `entity number × stride + (t − earliest)`, with a stride longer than
/// the time span plus the longest window. `None` when it would overflow.
fn segment_index(timeline: &Timeline, reach: i64) -> Option<Vec<i64>> {
    let times = &timeline.times;
    if times.is_empty() {
        return Some(Vec::new());
    }
    let (low, high) = (times.min()?, times.max()?);
    let stride = high.checked_sub(low)?.checked_add(reach)?.checked_add(1)?;
    let entities = timeline.starts.iter().filter(|&&b| b).count() as i64;
    entities.checked_mul(stride)?;
    let mut segment = -1i64;
    let index = times
        .into_no_null_iter()
        .zip(&timeline.starts)
        .map(|(t, &start)| {
            if start {
                segment += 1;
            }
            segment * stride + (t - low)
        })
        .collect();
    Some(index)
}

/// The event times (microseconds) of a frame sorted by entity keys then
/// event time, and where each entity's rows start: read once, used by the
/// rolling index and the distinct counts.
struct Timeline {
    times: Int64Chunked,
    starts: Vec<bool>,
}

impl Timeline {
    fn of(df: &DataFrame, keys: &[String], ts: &str) -> Result<Timeline> {
        let times = micros(df, ts)?;
        if times.null_count() > 0 {
            return Err(Error::Schema {
                view: ts.to_string(),
                message: "event times must not be null".into(),
            });
        }
        Ok(Timeline {
            times,
            starts: entity_starts(df, keys)?,
        })
    }
}

/// Whether each row of a frame sorted by `keys` starts a new entity.
fn entity_starts(df: &DataFrame, keys: &[String]) -> Result<Vec<bool>> {
    let failed = |what: &str| Error::polars(format!("entity boundaries ({what})"));
    let n = df.height();
    let mut starts = vec![false; n];
    if n > 0 {
        starts[0] = true;
    }
    for key in keys {
        let column = df.column(key).map_err(failed("key"))?;
        if let Ok(ints) = column.i64() {
            let values: Vec<Option<i64>> = ints.iter().collect();
            for i in 1..n {
                starts[i] |= values[i] != values[i - 1];
            }
        } else {
            let text = column.cast(&DataType::String).map_err(failed("key"))?;
            let text = text.str().map_err(failed("key"))?;
            let values: Vec<Option<&str>> = text.iter().collect();
            for i in 1..n {
                starts[i] |= values[i] != values[i - 1];
            }
        }
    }
    Ok(starts)
}

/// Distinct values of `column` in `(t - window, t]` per entity, over a frame
/// sorted by entity keys then event time.
fn distinct_counts(
    df: &DataFrame,
    timeline: &Timeline,
    column: &str,
    window: i64,
) -> Result<Vec<f64>> {
    let failed = |what: &str| Error::polars(format!("distinct count of {column} ({what})"));
    let as_text = |name: &str| -> Result<StringChunked> {
        let c = df
            .column(name)
            .map_err(failed("column"))?
            .cast(&DataType::String)
            .map_err(failed("cast"))?;
        Ok(c.str().map_err(failed("cast"))?.clone())
    };
    let values = as_text(column)?;
    let (times, starts) = (&timeline.times, &timeline.starts);
    let mut out = vec![0.0; df.height()];
    let mut start = 0usize;
    let mut counts: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, slot) in out.iter_mut().enumerate() {
        if starts[i] {
            counts.clear();
            start = i;
        }
        let t = times.get(i).unwrap_or(i64::MIN);
        *counts.entry(values.get(i)).or_default() += 1;
        while start < i && times.get(start).unwrap_or(i64::MIN) <= t.saturating_sub(window) {
            let v = values.get(start);
            if let Some(c) = counts.get_mut(&v) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&v);
                }
            }
            start += 1;
        }
        *slot = counts.keys().filter(|k| k.is_some()).count() as f64;
    }
    Ok(out)
}

/// A timestamp column as microseconds.
fn micros(df: &DataFrame, ts: &str) -> Result<Int64Chunked> {
    let failed = |what: &str| Error::polars(format!("event time {ts} ({what})"));
    let column = df
        .column(ts)
        .map_err(failed("column"))?
        .cast(&DataType::Int64)
        .map_err(failed("cast"))?;
    Ok(column.i64().map_err(failed("cast"))?.clone())
}

fn source_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty() && !t.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// Join arguments that keep the left frame's row order.
fn left_ordered(how: JoinType) -> JoinArgs {
    let mut args = JoinArgs::new(how);
    args.maintain_order = MaintainOrderJoin::Left;
    args
}
