//! The Arrow Flight service (default 127.0.0.1:8815), started by
//! `aurum serve` beside the HTTP server.
//!
//! Commands are JSON documents in a `FlightDescriptor`'s `cmd` (or, for a
//! push, simply the feature view's name as its path). Served so far:
//!
//! - `DoPut` — push ingestion, the Arrow twin of `POST /push`: the
//!   descriptor is `{"command": "push", "feature_view": "...", "to":
//!   "online" | "offline" | "online_and_offline", "allow_partial": false}`
//!   and the stream carries record batches with the view's join keys, event
//!   timestamp, optional created timestamp and every feature. Each record
//!   batch is one push: validated against the view's schema and applied
//!   whole, or refused whole with the stream row and column named (with
//!   `allow_partial`, its good rows are applied and the bad ones reported).
//!   One `PutResult` per batch answers with the push's outcome as JSON in
//!   `app_metadata`.
//!
//! The service keeps no state between calls, so any replica can answer.

use std::future::Future;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::{DataType, TimeUnit};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tonic::{Request, Response, Status, Streaming};

use crate::definitions::FeatureView;
use crate::error::Error;
use crate::online::{FeatureValue, OnlineStore};
use crate::push::{
    KeyValue, MAX_PUSH_ROWS, PushRow, PushTo, Pusher, RejectedRow, check_columns, coerce,
};

/// The Flight service over an online store and its pusher.
#[derive(Debug, Clone)]
pub struct FlightServer {
    online: Arc<OnlineStore>,
    pusher: Arc<Pusher>,
}

impl FlightServer {
    /// A service answering from `online` and pushing through `pusher`.
    pub fn new(online: Arc<OnlineStore>, pusher: Arc<Pusher>) -> Self {
        FlightServer { online, pusher }
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(
                FlightServiceServer::new(self)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }

    fn view(&self, name: &str) -> Result<FeatureView, Status> {
        self.online
            .view(name)
            .ok_or_else(|| Status::not_found(format!("no feature view {name:?} to push to")))
    }
}

/// A Flight command (a descriptor's `cmd`), as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Push rows into a feature view (`DoPut`).
    Push {
        /// The feature view.
        feature_view: String,
        /// Where the rows go (default: online).
        #[serde(default)]
        to: PushTo,
        /// Apply a batch's good rows and report the bad ones instead of
        /// refusing the batch.
        #[serde(default)]
        allow_partial: bool,
    },
}

impl Command {
    /// Reads a descriptor: a JSON command, or a one-element path naming a
    /// feature view (an online push).
    pub fn from_descriptor(descriptor: &FlightDescriptor) -> Result<Command, Status> {
        if descriptor.r#type == DescriptorType::Path as i32 {
            return match descriptor.path.as_slice() {
                [view] => Ok(Command::Push {
                    feature_view: view.clone(),
                    to: PushTo::Online,
                    allow_partial: false,
                }),
                other => Err(Status::invalid_argument(format!(
                    "a descriptor path names one feature view; got {other:?}"
                ))),
            };
        }
        serde_json::from_slice(&descriptor.cmd).map_err(|e| {
            Status::invalid_argument(format!(
                "the descriptor's cmd is not a valid aurum command ({e}); expected JSON such as \
                 {{\"command\": \"push\", \"feature_view\": \"customer_features\", \"to\": \"online\"}}"
            ))
        })
    }
}

/// Maps a feature-store error to a gRPC status.
fn status(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::InvalidPush { .. }
        | Error::Schema { .. }
        | Error::SchemaChange { .. }
        | Error::InvalidSpine { .. }
        | Error::InvalidRequest(_) => Status::invalid_argument(message),
        Error::UnknownFeature(_) | Error::TableMissing(_) | Error::NoOfflineStore { .. } => {
            Status::not_found(message)
        }
        Error::OfflineWrite { .. } => Status::failed_precondition(message),
        Error::Polars { .. }
        | Error::Delta { .. }
        | Error::Arrow { .. }
        | Error::Project { .. }
        | Error::ProjectMissing(_)
        | Error::Parse { .. }
        | Error::Internal(_)
        | Error::Io { .. } => Status::internal(message),
    }
}

fn not_served(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not served by aurum's Flight service yet; DoPut (push) is"
    ))
}

#[tonic::async_trait]
impl FlightService for FlightServer {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // No authentication: the service listens on loopback by default.
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(not_served("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(not_served("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(not_served("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(not_served("GetSchema"))
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        Err(not_served("DoGet"))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("DoPut sent no data"))?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Status::invalid_argument("DoPut's first message carries no flight descriptor")
        })?;
        let Command::Push {
            feature_view,
            to,
            allow_partial,
        } = Command::from_descriptor(&descriptor)?;
        let view = self.view(&feature_view)?;
        let data = futures::stream::once(async { Ok(first) })
            .chain(stream)
            .map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let pusher = self.pusher.clone();
        let results = async_stream(move |sender| async move {
            let mut stream_row = 0usize;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
                let first_row = stream_row;
                stream_row += batch.num_rows();
                let (rows, rejected) = match batch_rows(&view, &batch, first_row, allow_partial) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        pusher.count_rejected(1);
                        return Err(status(e));
                    }
                };
                let outcome = pusher
                    .apply(&view, rows, rejected, to)
                    .await
                    .map_err(status)?;
                let metadata = serde_json::to_vec(&outcome)
                    .map_err(|e| Status::internal(format!("encoding the push outcome: {e}")))?;
                if sender
                    .send(Ok(PutResult {
                        app_metadata: metadata.into(),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        Ok(Response::new(results))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(not_served("DoExchange"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(not_served("DoAction"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(futures::stream::empty().boxed()))
    }
}

/// Runs `produce` as a task feeding a stream: what it sends is streamed,
/// and an error it returns ends the stream with that status.
fn async_stream<T, F, Fut>(produce: F) -> BoxStream<'static, Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let errors = sender.clone();
    let work = produce(sender);
    tokio::spawn(async move {
        if let Err(status) = work.await {
            let _ = errors.send(Err(status)).await;
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

/// A column of a pushed batch, converted to one of the types rows are read
/// from.
enum Cells {
    Int(ArrayRef),
    Float(ArrayRef),
    Bool(ArrayRef),
    Str(ArrayRef),
    /// Microseconds since the epoch (UTC).
    Micros(ArrayRef),
}

impl Cells {
    /// Reads column `name` of `batch` for a `role` ("join key", "timestamp"
    /// or "feature").
    fn read(batch: &RecordBatch, name: &str, role: Role) -> Result<Option<Cells>, String> {
        let Some(column) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let cast = |to: &DataType| {
            arrow_cast::cast(column, to).map_err(|e| format!("column {name:?}: {e}"))
        };
        let dtype = column.data_type();
        let unsupported = || {
            format!(
                "column {name:?} is {dtype}; a {} must be {}",
                role.name(),
                role.expected()
            )
        };
        let text = matches!(
            dtype,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
        );
        Ok(Some(match role {
            Role::Key if dtype.is_integer() => Cells::Int(cast(&DataType::Int64)?),
            Role::Key if text => Cells::Str(cast(&DataType::Utf8)?),
            Role::Timestamp => match dtype {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                    // To UTC keeps a zoned timestamp's instant; a naive one
                    // is read as UTC.
                    Cells::Micros(cast(&DataType::Timestamp(
                        TimeUnit::Microsecond,
                        Some("UTC".into()),
                    ))?)
                }
                _ if text => Cells::Str(cast(&DataType::Utf8)?),
                _ => return Err(unsupported()),
            },
            Role::Feature if dtype.is_integer() => Cells::Int(cast(&DataType::Int64)?),
            Role::Feature if dtype.is_floating() || matches!(dtype, DataType::Decimal128(..)) => {
                Cells::Float(cast(&DataType::Float64)?)
            }
            Role::Feature if *dtype == DataType::Boolean => Cells::Bool(column.clone()),
            Role::Feature if text => Cells::Str(cast(&DataType::Utf8)?),
            Role::Feature if *dtype == DataType::Null => Cells::Float(cast(&DataType::Float64)?),
            _ => return Err(unsupported()),
        }))
    }

    fn value(&self, row: usize) -> FeatureValue {
        let array: &ArrayRef = match self {
            Cells::Int(a) | Cells::Float(a) | Cells::Bool(a) | Cells::Str(a) | Cells::Micros(a) => {
                a
            }
        };
        if array.is_null(row) {
            return FeatureValue::Null;
        }
        match self {
            Cells::Int(a) => FeatureValue::Int(a.as_primitive::<Int64Type>().value(row)),
            Cells::Float(a) => FeatureValue::Float(a.as_primitive::<Float64Type>().value(row)),
            Cells::Bool(a) => FeatureValue::Bool(a.as_boolean().value(row)),
            Cells::Str(a) => FeatureValue::Str(a.as_string::<i32>().value(row).into()),
            Cells::Micros(a) => {
                FeatureValue::Int(a.as_primitive::<TimestampMicrosecondType>().value(row))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Key,
    Timestamp,
    Feature,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Key => "join key",
            Role::Timestamp => "timestamp",
            Role::Feature => "feature",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Role::Key => "an integer or a string",
            Role::Timestamp => "a timestamp, a date or an RFC 3339 string",
            Role::Feature => "a number, a boolean or a string",
        }
    }
}

/// Validates the rows of `batch` (whose first row is row `first_row` of the
/// stream) against `view`.
fn batch_rows(
    view: &FeatureView,
    batch: &RecordBatch,
    first_row: usize,
    allow_partial: bool,
) -> Result<(Vec<PushRow>, Vec<RejectedRow>), Error> {
    let invalid = |message: String| Error::InvalidPush {
        view: view.name.clone(),
        message,
    };
    let schema = batch.schema();
    check_columns(view, schema.fields().iter().map(|f| f.name().as_str()))?;
    if batch.num_rows() > MAX_PUSH_ROWS {
        return Err(invalid(format!(
            "{} rows in one record batch; the limit is {MAX_PUSH_ROWS}",
            batch.num_rows()
        )));
    }
    let read = |name: &str, role| Cells::read(batch, name, role).map_err(invalid);
    let keys = view
        .entity
        .join_keys
        .iter()
        .map(|k| {
            Ok((
                k,
                read(k, Role::Key)?.ok_or_else(|| invalid(format!("no column {k:?}")))?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let event = read(&view.timestamp_column, Role::Timestamp)?
        .ok_or_else(|| invalid(format!("no column {:?}", view.timestamp_column)))?;
    let created = read(&view.created_column, Role::Timestamp)?;
    let features = view
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let cells =
                read(f, Role::Feature)?.ok_or_else(|| invalid(format!("no column {f:?}")))?;
            let declared = view.feature_types.get(i).cloned().unwrap_or_default();
            Ok((f, declared, cells))
        })
        .collect::<Result<Vec<_>, Error>>()?;

    let now = crate::push::now_micros();
    let parse_row = |row: usize| -> Result<PushRow, String> {
        let mut key_values = Vec::with_capacity(keys.len());
        for (name, cells) in &keys {
            key_values.push(match cells.value(row) {
                FeatureValue::Int(v) => KeyValue::Int(v),
                FeatureValue::Str(s) => KeyValue::Str(s.to_string()),
                _ => return Err(format!("{name}: a join key cannot be null")),
            });
        }
        let time = |name: &str, cells: &Cells| -> Result<Option<i64>, String> {
            match cells.value(row) {
                FeatureValue::Null => Ok(None),
                FeatureValue::Int(micros) => Ok(Some(micros)),
                FeatureValue::Str(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| Some(t.timestamp_micros()))
                    .map_err(|_| format!("{name}: {s:?} is not an RFC 3339 timestamp")),
                _ => Err(format!("{name}: not a timestamp")),
            }
        };
        let event_micros = time(&view.timestamp_column, &event)?.ok_or_else(|| {
            format!(
                "{}: the event timestamp cannot be null",
                view.timestamp_column
            )
        })?;
        let created_micros = match &created {
            Some(cells) => time(&view.created_column, cells)?.unwrap_or(now),
            None => now,
        };
        let mut values = Vec::with_capacity(features.len());
        for (name, declared, cells) in &features {
            values.push(coerce(name, declared, cells.value(row))?);
        }
        Ok(PushRow {
            keys: key_values,
            event_micros,
            created_micros,
            values,
        })
    };

    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut rejected = Vec::new();
    for row in 0..batch.num_rows() {
        match parse_row(row) {
            Ok(parsed) => rows.push(parsed),
            Err(reason) if allow_partial => rejected.push(RejectedRow {
                row: first_row + row,
                reason,
            }),
            Err(reason) => return Err(invalid(format!("row {}: {reason}", first_row + row))),
        }
    }
    Ok((rows, rejected))
}
