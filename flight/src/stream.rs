//! The data of `DoGet`: gold tables read file by file, online features
//! as batches.

use std::sync::Arc;

use std::collections::BTreeMap;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::Status;

use feature_store::online::{EntityKeyError, FeatureStatus, FeatureValue, LookupKeys, lookup_keys};
use feature_store::schema::split_ref;

use crate::encode::*;
use crate::server::*;
use crate::status::*;

impl FlightServer {
    /// A view's gold table as a stream of batches, read file by file while
    /// earlier batches are sent; with `start`/`end`, only event times in
    /// `[start, end)`.
    pub(crate) async fn feature_view_stream(
        &self,
        name: &str,
        version: Option<u64>,
        start: Option<String>,
        end: Option<String>,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let view = self
            .online
            .view(name)
            .ok_or_else(|| Status::not_found(format!("no feature view {name:?}")))?;
        let micros = |field: &str, text: &Option<String>| -> Result<Option<i64>, Status> {
            text.as_deref()
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| t.timestamp_micros())
                        .map_err(|_| {
                            Status::invalid_argument(format!(
                                "{field}: {t:?} is not an RFC 3339 timestamp"
                            ))
                        })
                })
                .transpose()
        };
        let (start, end) = (micros("start", &start)?, micros("end", &end)?);
        let (schema, receiver) = self
            .store()?
            .stream_batches(name, version, 8)
            .await
            .map_err(delta_status)?;
        let time_column = schema
            .index_of(&view.timestamp_column)
            .map_err(|_| Status::internal(format!("{name} has no {}", view.timestamp_column)))?;
        let batches = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        })
        .map(move |batch| {
            let batch = batch.map_err(|e| FlightError::ExternalError(Box::new(e)))?;
            if start.is_none() && end.is_none() {
                return Ok(batch);
            }
            within(&batch, time_column, start, end).map_err(FlightError::Arrow)
        });
        Ok(FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(MAX_MESSAGE_BYTES)
            .with_schema(schema)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()))
            .boxed())
    }

    pub(crate) async fn online_batches(
        &self,
        features: &[String],
        entities: &BTreeMap<String, Vec<serde_json::Value>>,
        full_feature_names: bool,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
        let set = self
            .online
            .resolve(features)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let LookupKeys {
            join_keys,
            columns: key_columns,
            keys,
        } = lookup_keys(&set, entities).map_err(|e| match e {
            EntityKeyError::TooMany(_) => Status::resource_exhausted(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        let batch = self
            .online
            .fetch(&set, &keys, feature_store::online::push::now_micros())
            .await
            .map_err(status)?;

        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (key, column) in join_keys.iter().zip(&key_columns) {
            let (field, array) = key_array(key, column);
            fields.push(field);
            arrays.push(array);
        }
        for (i, reference) in features.iter().enumerate() {
            let (view_name, feature) = split_ref(reference).unwrap_or(("", reference));
            let name = if full_feature_names {
                format!("{view_name}__{feature}")
            } else {
                feature.to_string()
            };
            let present = |row: &Vec<(FeatureValue, FeatureStatus)>| match &row[i] {
                (value, FeatureStatus::Present) => Some(value.clone()),
                _ => None,
            };
            let values: Vec<Option<FeatureValue>> = batch.rows.iter().map(present).collect();
            let (dtype, array) = feature_array(&values, &self.declared_type(view_name, feature));
            fields.push(Field::new(name, dtype, true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| Status::internal(format!("building the answer: {e}")))?;
        Ok((schema, vec![batch]))
    }
}

impl FlightServer {
    /// The declared value type of `view`'s `feature` (`float64`, `int64`,
    /// …); empty when the view does not declare it.
    fn declared_type(&self, view: &str, feature: &str) -> String {
        self.online
            .view(view)
            .and_then(|v| {
                v.features
                    .iter()
                    .position(|f| f == feature)
                    .and_then(|i| v.feature_types.get(i).cloned())
            })
            .unwrap_or_default()
    }
}

/// A join key column of the answer: integers when every key is one, else
/// text.
fn key_array(key: &str, column: &[serde_json::Value]) -> (Field, ArrayRef) {
    if column.iter().all(serde_json::Value::is_i64) {
        (
            Field::new(key, DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(
                column.iter().filter_map(serde_json::Value::as_i64),
            )),
        )
    } else {
        (
            Field::new(key, DataType::Utf8, false),
            Arc::new(StringArray::from_iter_values(column.iter().map(|v| {
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            }))),
        )
    }
}

/// A feature column of the answer (null where the value is not present).
/// The `declared` type decides the column type; undeclared, the values do.
fn feature_array(values: &[Option<FeatureValue>], declared: &str) -> (DataType, ArrayRef) {
    let any = values.iter().flatten().next().is_some();
    let all = |f: fn(&FeatureValue) -> bool| any && values.iter().flatten().all(f);
    let int =
        declared == "int64" || (declared.is_empty() && all(|v| matches!(v, FeatureValue::Int(_))));
    let text = matches!(declared, "string" | "categorical")
        || (declared.is_empty()
            && values
                .iter()
                .flatten()
                .any(|v| matches!(v, FeatureValue::Str(_))));
    let boolean =
        declared == "bool" || (declared.is_empty() && all(|v| matches!(v, FeatureValue::Bool(_))));
    if int {
        (
            DataType::Int64,
            Arc::new(Int64Array::from_iter(values.iter().map(|v| match v {
                Some(FeatureValue::Int(x)) => Some(*x),
                _ => None,
            }))),
        )
    } else if text {
        (
            DataType::Utf8,
            Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
                Some(FeatureValue::Str(s)) => Some(s.to_string()),
                _ => None,
            }))),
        )
    } else if boolean {
        (
            DataType::Boolean,
            Arc::new(BooleanArray::from_iter(values.iter().map(|v| match v {
                Some(FeatureValue::Bool(b)) => Some(*b),
                _ => None,
            }))),
        )
    } else {
        (
            DataType::Float64,
            Arc::new(Float64Array::from_iter(
                values
                    .iter()
                    .map(|v| v.as_ref().and_then(FeatureValue::as_f64)),
            )),
        )
    }
}
