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

/// The gold table's event-time column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";
/// The gold table's processing-time column, which breaks ties.
pub const CREATED_TIMESTAMP: &str = "created_timestamp";
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
    let keys: Vec<Expr> = view
        .entity
        .join_keys
        .iter()
        .map(|k| col(k.as_str()))
        .collect();
    let mut sort_by: Vec<String> = view.entity.join_keys.clone();
    sort_by.push(source.timestamp.clone());
    let ts = || col(source.timestamp.as_str());
    let mut features: Vec<Expr> = Vec::new();
    for f in &view.windowed {
        let value = col(f.column.as_str()).cast(DataType::Float64);
        let options = f.window.map(|w| RollingOptionsDynamicWindow {
            window_size: polars::prelude::Duration::parse(&format!("{}s", w.as_secs())),
            min_periods: 1,
            closed_window: ClosedWindow::Right,
            fn_params: None,
        });
        let expr = match (f.function, options) {
            (Aggregation::Last, _) => col(f.column.as_str()),
            (Aggregation::DistinctCount, _) => continue,
            (_, None) => continue,
            (Aggregation::Count, Some(o)) => col("__one").rolling_sum_by(ts(), o),
            (Aggregation::Sum, Some(o)) => value.rolling_sum_by(ts(), o),
            (Aggregation::Mean, Some(o)) => value.rolling_mean_by(ts(), o),
            (Aggregation::Min, Some(o)) => value.rolling_min_by(ts(), o),
            (Aggregation::Max, Some(o)) => value.rolling_max_by(ts(), o),
            (Aggregation::Stddev, Some(o)) => value.rolling_std_by(ts(), o),
        };
        let expr = if f.function == Aggregation::Last {
            expr
        } else {
            expr.over(keys.clone()).map_err(failed("windows"))?
        };
        features.push(expr.alias(f.name.as_str()));
    }
    let mut df = context
        .clone()
        .lazy()
        .sort(
            sort_by.iter().map(String::as_str).collect::<Vec<_>>(),
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .with_column(lit(1.0f64).alias("__one"))
        .with_columns(features)
        .collect()
        .map_err(failed("windows"))?;

    for f in view
        .windowed
        .iter()
        .filter(|f| f.function == Aggregation::DistinctCount)
    {
        let window = f.window.map(|w| w.as_micros() as i64).unwrap_or(i64::MAX);
        let counts = distinct_counts(
            &df,
            &view.entity.join_keys,
            &source.timestamp,
            &f.column,
            window,
        )?;
        df.with_column(Column::new(f.name.as_str().into(), counts))
            .map_err(failed("distinct counts"))?;
    }

    let mut lf = df.lazy();
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
    let mut out: Vec<Expr> = keys;
    out.push(ts().alias(EVENT_TIMESTAMP));
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
    lf.select(out)
        .sort(
            [EVENT_TIMESTAMP],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()
        .map_err(failed("output"))
}

/// Distinct values of `column` in `(t - window, t]` per entity, over a frame
/// sorted by entity keys then event time.
fn distinct_counts(
    df: &DataFrame,
    keys: &[String],
    ts: &str,
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
    let key_text: Vec<StringChunked> = keys.iter().map(|k| as_text(k)).collect::<Result<_>>()?;
    let values = as_text(column)?;
    let times = df
        .column(ts)
        .map_err(failed("time"))?
        .cast(&DataType::Int64)
        .map_err(failed("time"))?;
    let times = times.i64().map_err(failed("time"))?;
    let n = df.height();
    let mut out = vec![0.0; n];
    let same_entity = |a: usize, b: usize| key_text.iter().all(|k| k.get(a) == k.get(b));
    let mut start = 0usize;
    let mut counts: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, slot) in out.iter_mut().enumerate() {
        if i > 0 && !same_entity(i - 1, i) {
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
