//! The `predictions` Delta table: its schema, the frame the log's writer
//! commits, and a typed reader of one version's live predictions.
//!
//! Table columns, in this order: `request_id`, `row` (of the request),
//! `time` (UTC µs), `model`, `version`, `arm`, `shadow`, `entity`
//! (`key=value` pairs), `feature_names`, `features` (the values as
//! assembled, null where missing before imputation), `outputs` (the model's
//! first output for the row), `prediction`, `latency_us` (request start to
//! inference end). Existing tables are appended to and read by other tools,
//! so the names, types and order are a contract.

use std::sync::Arc;

use delta::DeltaStore;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::record::{PredictionRecord, headline};
use crate::tables::{
    ARM, MODEL, PREDICTION, REQUEST_ID, ROW, VERSION, read_columns, utc_micros, versions,
};

/// The default table name, under the directory given to
/// [`crate::PredictionLog::start`].
pub const TABLE: &str = "predictions";

const TIME: &str = "time";
const SHADOW: &str = "shadow";
const ENTITY: &str = "entity";
const FEATURE_NAMES: &str = "feature_names";
const FEATURES: &str = "features";
const OUTPUTS: &str = "outputs";
const LATENCY: &str = "latency_us";

/// The records as the table's columns.
pub(crate) fn to_frame(records: &[PredictionRecord]) -> PolarsResult<DataFrame> {
    let strings = |f: fn(&PredictionRecord) -> &str, name: &str| -> Column {
        Series::new(name.into(), records.iter().map(f).collect::<Vec<&str>>()).into()
    };
    // List columns built in place (one values buffer each), not from a
    // Series per row: the log's writer must stay cheap beside the server.
    let list = |name: &str, pick: fn(&PredictionRecord) -> &[f32], nan_is_null: bool| {
        let values: usize = records.iter().map(|r| pick(r).len()).sum();
        let mut builder = ListPrimitiveChunkedBuilder::<Float32Type>::new(
            name.into(),
            records.len(),
            values,
            DataType::Float32,
        );
        for record in records {
            builder.append_iter(
                pick(record)
                    .iter()
                    .map(|v| (!(nan_is_null && v.is_nan())).then_some(*v)),
            );
        }
        builder.finish().into_series()
    };
    let features = list(FEATURES, |r| &r.features, true);
    let outputs = list(OUTPUTS, |r| &r.outputs, false);
    // One string per row (Parquet dictionary-encodes the repeats).
    let mut names: Vec<Arc<str>> = Vec::with_capacity(records.len());
    let mut last: Option<(&Arc<[String]>, Arc<str>)> = None;
    for record in records {
        let joined = match &last {
            Some((list, joined)) if Arc::ptr_eq(list, &record.feature_names) => joined.clone(),
            _ => Arc::from(record.feature_names.join(",")),
        };
        last = Some((&record.feature_names, joined.clone()));
        names.push(joined);
    }
    let names: Vec<&str> = names.iter().map(|n| &**n).collect();
    let time = utc_micros(TIME, records.iter().map(|r| r.time_micros).collect())?;
    DataFrame::new_infer_height(vec![
        strings(|r| &r.request_id, REQUEST_ID),
        Series::new(
            ROW.into(),
            records.iter().map(|r| i64::from(r.row)).collect::<Vec<_>>(),
        )
        .into(),
        time,
        strings(|r| &r.model, MODEL),
        versions(records.iter().map(|r| r.version)),
        strings(|r| &r.arm, ARM),
        Series::new(
            SHADOW.into(),
            records.iter().map(|r| r.shadow).collect::<Vec<_>>(),
        )
        .into(),
        strings(|r| &r.entity, ENTITY),
        Series::new(FEATURE_NAMES.into(), names).into(),
        features.into(),
        outputs.into(),
        Series::new(
            PREDICTION.into(),
            records
                .iter()
                .map(|r| (!r.outputs.is_empty()).then(|| headline(&r.outputs)))
                .collect::<Vec<_>>(),
        )
        .into(),
        Series::new(
            LATENCY.into(),
            records
                .iter()
                .map(|r| i64::try_from(r.latency_micros).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        )
        .into(),
    ])
}

/// Which logged predictions [`read_window`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionQuery {
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: u64,
    /// The earliest request time kept, in microseconds since the epoch
    /// (inclusive); `None` for no lower bound.
    pub from_micros: Option<i64>,
    /// The request time from which rows are left out, in microseconds since
    /// the epoch (exclusive); `None` for no upper bound.
    pub to_micros: Option<i64>,
}

/// The live predictions of one version read from the log, column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedWindow {
    /// Rows read.
    pub rows: usize,
    /// The model's input names, from the first row read.
    pub feature_names: Vec<String>,
    /// Per input (in `feature_names` order), its values; NaN where a value
    /// was missing.
    pub features: Vec<Vec<f64>>,
    /// The headline prediction of each row; NaN where there was none.
    pub predictions: Vec<f64>,
}

impl LoggedWindow {
    /// The window as drift columns: one per input, and the `prediction`
    /// column.
    pub fn into_columns(self) -> (Vec<drift::Column>, drift::Column) {
        let columns = self
            .feature_names
            .into_iter()
            .zip(self.features)
            .map(|(name, values)| drift::Column {
                name,
                values: drift::Values::Numeric(values),
            })
            .collect();
        let prediction = drift::Column {
            name: PREDICTION.into(),
            values: drift::Values::Numeric(self.predictions),
        };
        (columns, prediction)
    }
}

/// The live (not shadow) predictions of `query.model` at `query.version`
/// with `from <= time < to`, read from the [`TABLE`] of `store`; `Ok(None)`
/// when the table does not exist.
///
/// # Errors
///
/// [`Error::Malformed`] when a row has no feature list or one of another
/// length than the names; [`Error::Delta`] or [`Error::Polars`] when the
/// table cannot be read.
pub async fn read_window(
    store: &DeltaStore,
    query: &PredictionQuery,
) -> Result<Option<LoggedWindow>> {
    let columns = [
        TIME,
        MODEL,
        VERSION,
        SHADOW,
        FEATURE_NAMES,
        FEATURES,
        PREDICTION,
    ];
    let Some(df) = read_columns(store, TABLE, &columns).await? else {
        return Ok(None);
    };
    let query = query.clone();
    tokio::task::spawn_blocking(move || window_of(df, &query).map(Some))
        .await
        .map_err(|e| Error::Stopped {
            what: "reading the prediction log",
            message: e.to_string(),
        })?
}

fn window_of(df: DataFrame, query: &PredictionQuery) -> Result<LoggedWindow> {
    let version = i64::try_from(query.version).unwrap_or(i64::MAX);
    let micros = col(TIME).cast(DataType::Int64);
    let mut keep = col(MODEL)
        .eq(lit(query.model.clone()))
        .and(col(VERSION).eq(lit(version)))
        .and(col(SHADOW).not());
    if let Some(from) = query.from_micros {
        keep = keep.and(micros.clone().gt_eq(lit(from)));
    }
    if let Some(to) = query.to_micros {
        keep = keep.and(micros.lt(lit(to)));
    }
    let df = df.lazy().filter(keep).collect()?;
    let rows = df.height();
    let names: Vec<String> = match df.column(FEATURE_NAMES)?.str()?.get(0) {
        Some(joined) if !joined.is_empty() => joined.split(',').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let width = names.len();
    let mut values = vec![Vec::with_capacity(rows); width];
    let lists = df.column(FEATURES)?.list()?.clone();
    for (row, list) in lists.amortized_iter().enumerate() {
        let Some(list) = list else {
            return Err(Error::Malformed(format!(
                "prediction log row {row} has no features"
            )));
        };
        let cast = list.as_ref().cast(&DataType::Float64)?;
        let ca = cast.f64()?;
        if ca.len() != width {
            return Err(Error::Malformed(format!(
                "prediction log row {row} has {} features where {width} are named",
                ca.len()
            )));
        }
        for (j, v) in ca.iter().enumerate() {
            values[j].push(v.unwrap_or(f64::NAN));
        }
    }
    let predictions = df
        .column(PREDICTION)?
        .cast(&DataType::Float64)?
        .f64()?
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    Ok(LoggedWindow {
        rows,
        feature_names: names,
        features: values,
        predictions,
    })
}

#[cfg(test)]
mod tests {
    use feature_store::testing::column_names;

    use super::*;

    fn record(i: usize, version: u64, shadow: bool, names: &Arc<[String]>) -> PredictionRecord {
        PredictionRecord {
            request_id: Arc::from(format!("r{i}")),
            row: 0,
            time_micros: 1_700_000_000_000_000 + i as i64,
            model: Arc::from("m"),
            version,
            arm: Arc::from("champion"),
            shadow,
            entity: String::new(),
            feature_names: names.clone(),
            features: vec![i as f32, f32::NAN],
            outputs: vec![0.1, 0.9],
            latency_micros: 10,
        }
    }

    #[test]
    fn the_frame_keeps_the_table_schema() {
        let names: Arc<[String]> = Arc::from(vec!["v:a".to_string(), "v:b".to_string()]);
        let df = to_frame(&[record(0, 1, false, &names)]).unwrap();
        assert_eq!(
            column_names(&df),
            [
                "request_id",
                "row",
                "time",
                "model",
                "version",
                "arm",
                "shadow",
                "entity",
                "feature_names",
                "features",
                "outputs",
                "prediction",
                "latency_us"
            ]
        );
        assert_eq!(df.column("prediction").unwrap().dtype(), &DataType::Float32);
        assert_eq!(
            df.column("time").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_committed_frame_reads_back_as_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeltaStore::new(dir.path());
        let query = PredictionQuery {
            model: "m".into(),
            version: 1,
            from_micros: Some(1_700_000_000_000_001),
            to_micros: Some(1_700_000_000_000_004),
        };
        assert_eq!(read_window(&store, &query).await.unwrap(), None);
        let names: Arc<[String]> = Arc::from(vec!["v:a".to_string(), "v:b".to_string()]);
        let records: Vec<PredictionRecord> = (0..6)
            .map(|i| record(i, if i == 5 { 2 } else { 1 }, i == 2, &names))
            .collect();
        let df = to_frame(&records).unwrap();
        store
            .write(
                TABLE,
                &df,
                &delta::WriteOptions::append(),
                &delta::CommitLineage::default(),
            )
            .await
            .unwrap();
        let window = read_window(&store, &query).await.unwrap().unwrap();
        // Rows 1 and 3: row 2 is a shadow, row 4 is past the end, row 5 is
        // another version.
        assert_eq!(window.rows, 2);
        assert_eq!(window.feature_names, ["v:a", "v:b"]);
        let mut a = window.features[0].clone();
        a.sort_by(f64::total_cmp);
        assert_eq!(a, [1.0, 3.0]);
        assert!(window.features[1].iter().all(|v| v.is_nan()));
        assert!(window.predictions.iter().all(|p| (*p - 0.9).abs() < 1e-6));
        let (columns, prediction) = window.into_columns();
        assert_eq!(columns.len(), 2);
        assert_eq!(prediction.name, "prediction");
    }
}
