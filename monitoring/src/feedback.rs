//! The `feedback` Delta table: true outcomes of served predictions, as
//! [`crate::Monitor::apply_outcomes`] appends them and the A/B analysis
//! reads them.
//!
//! Table columns, in this order: `request_id`, `row` (of the request),
//! `model`, `version`, `arm`, `prediction_time` (UTC µs), `prediction`
//! (the headline prediction, f32 as logged), `outcome`, `received_time`
//! (UTC µs). Existing tables are appended to, so the names, types and order
//! are a contract.

use delta::{CommitLineage, DeltaStore, WriteOptions};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::tables::{
    ARM, MODEL, PREDICTION, REQUEST_ID, ROW, VERSION, read_columns, utc_micros, versions,
};

/// The Delta table outcomes are appended to (beside the prediction log).
pub const TABLE: &str = "feedback";

const PREDICTION_TIME: &str = "prediction_time";
const OUTCOME: &str = "outcome";
const RECEIVED_TIME: &str = "received_time";

/// One row of the table: an outcome and the prediction it labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRow {
    /// The request that was answered.
    pub request_id: String,
    /// The row of that request.
    pub row: u32,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: u64,
    /// The arm (alias) that answered.
    pub arm: String,
    /// When the request arrived, in microseconds since the epoch (UTC).
    pub prediction_time_micros: i64,
    /// The headline prediction that was served.
    pub prediction: f32,
    /// The true outcome.
    pub outcome: f64,
    /// When the outcome arrived, in microseconds since the epoch (UTC).
    pub received_time_micros: i64,
}

/// One outcome read back for the A/B analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The arm (alias) that answered.
    pub arm: String,
    /// The version that answered.
    pub version: u64,
    /// The headline prediction that was served.
    pub prediction: f64,
    /// The true outcome.
    pub outcome: f64,
}

/// Appends `rows` to the [`TABLE`] of `store` in one commit.
pub(crate) async fn append(store: &DeltaStore, rows: &[FeedbackRow]) -> Result<()> {
    let frame = to_frame(rows)?;
    let lineage = CommitLineage {
        operation: "feedback".into(),
        ..CommitLineage::default()
    };
    store
        .write(TABLE, &frame, &WriteOptions::append(), &lineage)
        .await?;
    Ok(())
}

fn to_frame(rows: &[FeedbackRow]) -> PolarsResult<DataFrame> {
    DataFrame::new_infer_height(vec![
        Series::new(
            REQUEST_ID.into(),
            rows.iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
        )
        .into(),
        Series::new(
            ROW.into(),
            rows.iter().map(|r| i64::from(r.row)).collect::<Vec<_>>(),
        )
        .into(),
        Series::new(
            MODEL.into(),
            rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        )
        .into(),
        versions(rows.iter().map(|r| r.version)),
        Series::new(
            ARM.into(),
            rows.iter().map(|r| r.arm.as_str()).collect::<Vec<_>>(),
        )
        .into(),
        utc_micros(
            PREDICTION_TIME,
            rows.iter().map(|r| r.prediction_time_micros).collect(),
        )?,
        Series::new(
            PREDICTION.into(),
            rows.iter().map(|r| r.prediction).collect::<Vec<_>>(),
        )
        .into(),
        Series::new(
            OUTCOME.into(),
            rows.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        )
        .into(),
        utc_micros(
            RECEIVED_TIME,
            rows.iter().map(|r| r.received_time_micros).collect(),
        )?,
    ])
}

/// The outcomes of `model` in the [`TABLE`] of `store` (rows with a
/// missing value are left out); `Ok(None)` when the table does not exist.
///
/// # Errors
///
/// [`Error::Delta`] or [`Error::Polars`] when the table cannot be read.
pub async fn read_outcomes(store: &DeltaStore, model: &str) -> Result<Option<Vec<Outcome>>> {
    let columns = [MODEL, ARM, VERSION, PREDICTION, OUTCOME];
    let Some(df) = read_columns(store, TABLE, &columns).await? else {
        return Ok(None);
    };
    let model = model.to_string();
    tokio::task::spawn_blocking(move || outcomes_of(df, model).map(Some))
        .await
        .map_err(|e| Error::Stopped {
            what: "reading the feedback table",
            message: e.to_string(),
        })?
}

fn outcomes_of(df: DataFrame, model: String) -> Result<Vec<Outcome>> {
    let df = df.lazy().filter(col(MODEL).eq(lit(model))).collect()?;
    let arms = df.column(ARM)?.str()?.clone();
    let versions = df.column(VERSION)?.i64()?.clone();
    let predictions = df.column(PREDICTION)?.cast(&DataType::Float64)?;
    let predictions = predictions.f64()?.clone();
    let outcomes = df.column(OUTCOME)?.f64()?.clone();
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let (Some(arm), Some(version), Some(prediction), Some(outcome)) = (
            arms.get(i),
            versions.get(i),
            predictions.get(i),
            outcomes.get(i),
        ) else {
            continue;
        };
        let Ok(version) = u64::try_from(version) else {
            continue;
        };
        out.push(Outcome {
            arm: arm.to_string(),
            version,
            prediction,
            outcome,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use feature_store::testing::column_names;

    use super::*;

    fn row(id: &str, model: &str, outcome: f64) -> FeedbackRow {
        FeedbackRow {
            request_id: id.into(),
            row: 0,
            model: model.into(),
            version: 2,
            arm: "challenger".into(),
            prediction_time_micros: 1_700_000_000_000_000,
            prediction: 0.75,
            outcome,
            received_time_micros: 1_700_000_000_100_000,
        }
    }

    #[test]
    fn the_frame_keeps_the_table_schema() {
        let df = to_frame(&[row("a", "m", 1.0)]).unwrap();
        assert_eq!(
            column_names(&df),
            [
                "request_id",
                "row",
                "model",
                "version",
                "arm",
                "prediction_time",
                "prediction",
                "outcome",
                "received_time"
            ]
        );
        assert_eq!(df.column("prediction").unwrap().dtype(), &DataType::Float32);
        assert_eq!(df.column("outcome").unwrap().dtype(), &DataType::Float64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn appended_outcomes_read_back_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeltaStore::new(dir.path());
        assert_eq!(read_outcomes(&store, "m").await.unwrap(), None);
        append(&store, &[row("a", "m", 1.0), row("b", "other", 0.0)])
            .await
            .unwrap();
        let outcomes = read_outcomes(&store, "m").await.unwrap().unwrap();
        assert_eq!(
            outcomes,
            [Outcome {
                arm: "challenger".into(),
                version: 2,
                prediction: 0.75,
                outcome: 1.0,
            }]
        );
    }
}
