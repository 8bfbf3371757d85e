//! Feast's remote offline store, answered by aurum's Flight service, so a
//! Feast SDK configured with `offline_store: {type: remote}` works against
//! `aurum serve` unchanged.
//!
//! Feast's client sends a JSON command with an `api` field naming the
//! offline-store method, the method's parameters beside it, and a table
//! (the entity dataframe, or a one-column placeholder): read methods over
//! `DoExchange` (the answer comes back on the same stream), the others over
//! `DoPut`. Served:
//!
//! - `get_historical_features` (`DoExchange`): aurum's point-in-time join of
//!   `feature_refs` onto the entity dataframe, whose event time is its
//!   `event_timestamp` column (or its only timestamp column). Every entity
//!   row comes back, in order; a feature older than its view's TTL is null.
//! - `pull_latest_from_table_or_query` / `pull_all_from_table_or_query`
//!   (`DoExchange`): a view's gold rows (the data source is named after its
//!   view) with event times in `[start_date, end_date]`, all of them or each
//!   entity's latest.
//! - `get_table_column_names_and_types_from_data_source` (`DoExchange`): the
//!   gold table's columns and Arrow types.
//! - `validate_data_source` (`DoPut`): the data source must name a view with
//!   a gold table.
//!
//! Feast's writes (`offline_write_batch`, `write_logged_features`,
//! `persist`) and SQL entity dataframes are refused, naming what was asked.

use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::Value;
use tonic::Status;

use delta::interop;
use feature_store::retrieval::pull::{PullRequest, pull};
use feature_store::retrieval::training_set::TrainingSetRequest;

use crate::encode::*;
use crate::server::*;
use crate::service::spine_batches;
use crate::status::*;

/// The APIs answered over `DoExchange`.
const EXCHANGE_APIS: [&str; 4] = [
    "get_historical_features",
    "pull_latest_from_table_or_query",
    "pull_all_from_table_or_query",
    "get_table_column_names_and_types_from_data_source",
];

/// The APIs answered over `DoPut`.
const PUT_APIS: [&str; 1] = ["validate_data_source"];

/// The entity dataframe's event-time column when Feast's client sends one
/// by that name.
const FEAST_TIMESTAMP: &str = "event_timestamp";

/// A Feast offline-store command: the method and its parameters.
#[derive(Debug, Clone)]
pub struct FeastCommand {
    /// The offline-store method (`get_historical_features`, …).
    pub api: String,
    /// The whole command, parameters included.
    pub parameters: Value,
}

impl FeastCommand {
    /// The Feast command in `json`, if it is one (an object with `api`).
    pub(crate) fn from_json(json: &[u8]) -> Option<FeastCommand> {
        let parameters: Value = serde_json::from_slice(json).ok()?;
        let api = parameters.get("api")?.as_str()?.to_string();
        Some(FeastCommand { api, parameters })
    }

    fn parameters<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Status> {
        serde_json::from_value(self.parameters.clone())
            .map_err(|e| Status::invalid_argument(format!("Feast's {} command: {e}", self.api)))
    }

    fn unsupported(&self, call: &str) -> Status {
        Status::unimplemented(format!(
            "aurum does not answer Feast's {:?} over {call}; it answers {} over DoExchange and {} \
             over DoPut",
            self.api,
            EXCHANGE_APIS.join(", "),
            PUT_APIS.join(", ")
        ))
    }
}

#[derive(Deserialize)]
struct HistoricalFeatures {
    feature_refs: Vec<String>,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default)]
    name_aliases: Vec<Option<String>>,
    #[serde(default)]
    entity_df_sql: Option<String>,
}

#[derive(Deserialize)]
struct Pull {
    data_source_name: String,
    join_key_columns: Vec<String>,
    feature_name_columns: Vec<String>,
    timestamp_field: String,
    #[serde(default)]
    created_timestamp_column: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
}

#[derive(Deserialize)]
struct DataSourceCommand {
    data_source_proto: String,
}

impl FlightServer {
    /// Answers a Feast command sent with `DoExchange`.
    pub(crate) async fn feast_exchange(
        &self,
        command: FeastCommand,
        mut upload: FlightRecordBatchStream,
    ) -> Result<BoxStream<'static, Result<arrow_flight::FlightData, Status>>, Status> {
        match command.api.as_str() {
            "get_historical_features" => {
                let parameters: HistoricalFeatures = command.parameters()?;
                if parameters.entity_df_sql.is_some() {
                    return Err(Status::invalid_argument(
                        "aurum takes the entity dataframe itself, not SQL (entity_df_sql)",
                    ));
                }
                if let Some(alias) = parameters.name_aliases.iter().flatten().next() {
                    return Err(Status::invalid_argument(format!(
                        "feature view aliases (with_name({alias:?})) are not supported by aurum"
                    )));
                }
                let (schema, batches) =
                    spine_batches(&mut upload, self.limits.max_upload_bytes).await?;
                let timestamp_column = entity_timestamp(&schema)?;
                let request = TrainingSetRequest {
                    features: parameters.feature_refs,
                    timestamp_column,
                    as_of_versions: Default::default(),
                    full_feature_names: parameters.full_feature_names,
                };
                self.training_set_answer(request, schema, batches).await
            }
            "pull_latest_from_table_or_query" | "pull_all_from_table_or_query" => {
                drain(&mut upload).await?;
                let parameters: Pull = command.parameters()?;
                let view = self.view(&parameters.data_source_name)?;
                if parameters.timestamp_field != view.timestamp_column {
                    return Err(Status::invalid_argument(format!(
                        "the event timestamp of {} is {:?}, not {:?}",
                        view.name, view.timestamp_column, parameters.timestamp_field
                    )));
                }
                let mut columns = parameters.join_key_columns;
                columns.extend(parameters.feature_name_columns);
                columns.push(parameters.timestamp_field);
                columns.extend(parameters.created_timestamp_column);
                let request = PullRequest {
                    columns,
                    start_micros: time_parameter("start_date", &parameters.start_date)?,
                    end_micros: time_parameter("end_date", &parameters.end_date)?,
                    latest_only: command.api == "pull_latest_from_table_or_query",
                };
                let frame = pull(self.store()?, &view, &request).await.map_err(status)?;
                let (schema, batches) = interop::frame_to_batches(&frame).map_err(delta_status)?;
                Ok(encode(schema, batches))
            }
            "get_table_column_names_and_types_from_data_source" => {
                drain(&mut upload).await?;
                let parameters: DataSourceCommand = command.parameters()?;
                let name = data_source_name(&parameters.data_source_proto)?;
                let schema = self.table_schema(&name, None).await?;
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let types: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| pyarrow_type(f.data_type()))
                    .collect();
                let answer = Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("type", DataType::Utf8, false),
                ]));
                let batch = RecordBatch::try_new(
                    answer.clone(),
                    vec![
                        Arc::new(StringArray::from(names)),
                        Arc::new(StringArray::from(types)),
                    ],
                )
                .map_err(|e| Status::internal(e.to_string()))?;
                Ok(encode(answer, vec![batch]))
            }
            _ => Err(command.unsupported("DoExchange")),
        }
    }

    /// Answers a Feast command sent with `DoPut` (nothing is stored).
    pub(crate) async fn feast_put(
        &self,
        command: FeastCommand,
        mut upload: FlightRecordBatchStream,
    ) -> Result<(), Status> {
        drain(&mut upload).await?;
        match command.api.as_str() {
            "validate_data_source" => {
                let parameters: DataSourceCommand = command.parameters()?;
                let name = data_source_name(&parameters.data_source_proto)?;
                self.table_schema(&name, None).await?;
                Ok(())
            }
            _ => Err(command.unsupported("DoPut")),
        }
    }
}

/// Reads and drops what the client uploaded (Feast's placeholder table).
async fn drain(upload: &mut FlightRecordBatchStream) -> Result<(), Status> {
    while let Some(batch) = upload.next().await {
        batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(())
}

/// The entity dataframe's event-time column: `event_timestamp`, or its
/// only timestamp column (as Feast infers it).
fn entity_timestamp(schema: &Schema) -> Result<String, Status> {
    if schema.column_with_name(FEAST_TIMESTAMP).is_some() {
        return Ok(FEAST_TIMESTAMP.to_string());
    }
    if schema.fields().len() == 1 && schema.field(0).name() == "key" {
        return Err(Status::invalid_argument(
            "get_historical_features needs an entity dataframe; none was sent",
        ));
    }
    let stamps: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(..)))
        .map(|f| f.name().as_str())
        .collect();
    match stamps.as_slice() {
        [only] => Ok(only.to_string()),
        _ => Err(Status::invalid_argument(format!(
            "the entity dataframe needs an {FEAST_TIMESTAMP:?} column (or exactly one timestamp \
             column); its timestamp columns: {stamps:?}"
        ))),
    }
}

/// The name in a data source's JSON (what Feast's client sends as
/// `data_source_proto`).
fn data_source_name(proto: &str) -> Result<String, Status> {
    let source: Value = serde_json::from_str(proto).map_err(|e| {
        Status::invalid_argument(format!("Feast's data_source_proto is not JSON: {e}"))
    })?;
    source
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Status::invalid_argument("Feast's data source has no name"))
}

/// A date parameter: ISO 8601 with an offset, or without one (UTC), as
/// Python's `isoformat()` writes them.
fn time_parameter(name: &str, text: &Option<String>) -> Result<Option<i64>, Status> {
    let Some(text) = text else {
        return Ok(None);
    };
    feature_store::online::push::parse_time(text)
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!("{name}: {text:?} is not an ISO 8601 time"))
        })
}

/// An Arrow type as pyarrow names it (what Feast's file sources report).
fn pyarrow_type(dtype: &DataType) -> String {
    match dtype {
        DataType::Float64 => "double".to_string(),
        DataType::Float32 => "float".to_string(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".to_string(),
        DataType::Boolean => "bool".to_string(),
        DataType::Timestamp(unit, zone) => {
            let unit = match unit {
                arrow_schema::TimeUnit::Second => "s",
                arrow_schema::TimeUnit::Millisecond => "ms",
                arrow_schema::TimeUnit::Microsecond => "us",
                arrow_schema::TimeUnit::Nanosecond => "ns",
            };
            match zone {
                Some(zone) => format!("timestamp[{unit}, tz={zone}]"),
                None => format!("timestamp[{unit}]"),
            }
        }
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feast_commands_are_told_apart_from_aurums() {
        let feast = br#"{"command_id": "x", "api": "get_historical_features", "feature_refs": []}"#;
        assert_eq!(
            FeastCommand::from_json(feast).unwrap().api,
            "get_historical_features"
        );
        assert!(FeastCommand::from_json(br#"{"command": "training_set"}"#).is_none());
        assert!(FeastCommand::from_json(b"not json").is_none());
    }

    #[test]
    fn unsupported_apis_are_named_with_the_served_ones() {
        let command = FeastCommand::from_json(br#"{"api": "persist"}"#).unwrap();
        let message = command.unsupported("DoPut").message().to_string();
        assert!(message.contains("\"persist\""), "{message}");
        assert!(message.contains("get_historical_features"), "{message}");
        assert!(message.contains("validate_data_source"), "{message}");
    }

    #[test]
    fn the_entity_timestamp_is_found_as_feast_finds_it() {
        let stamp = DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, Some("UTC".into()));
        let named = Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("event_timestamp", stamp.clone(), false),
        ]);
        assert_eq!(entity_timestamp(&named).unwrap(), "event_timestamp");
        let other = Schema::new(vec![Field::new("ts", stamp.clone(), false)]);
        assert_eq!(entity_timestamp(&other).unwrap(), "ts");
        let two = Schema::new(vec![
            Field::new("a", stamp.clone(), false),
            Field::new("b", stamp, false),
        ]);
        assert!(entity_timestamp(&two).is_err());
        let placeholder = Schema::new(vec![Field::new("key", DataType::Utf8, false)]);
        assert!(entity_timestamp(&placeholder).is_err());
    }

    #[test]
    fn times_come_with_or_without_an_offset() {
        let with = time_parameter("t", &Some("2026-12-04T05:00:00+00:00".into())).unwrap();
        let without = time_parameter("t", &Some("2026-12-04T05:00:00".into())).unwrap();
        assert_eq!(with, without);
        assert!(time_parameter("t", &Some("yesterday".into())).is_err());
        assert_eq!(time_parameter("t", &None).unwrap(), None);
    }
}
