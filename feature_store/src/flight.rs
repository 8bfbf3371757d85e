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

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming};

use crate::definitions::{FeatureView, split_ref};
use crate::error::Error;
use crate::interop;
use crate::offline::DeltaStore;
use crate::online::{
    EntityKeyError, FeatureStatus, FeatureValue, LookupKeys, OnlineStore, lookup_keys,
};
use crate::push::{
    KeyValue, MAX_PUSH_ROWS, PushRow, PushTo, Pusher, RejectedRow, check_columns, coerce,
};
use crate::training_set::{self, TrainingSetRequest};

/// The Flight service over an online store and its pusher.
#[derive(Debug, Clone)]
pub struct FlightServer {
    online: Arc<OnlineStore>,
    pusher: Arc<Pusher>,
    store: Option<DeltaStore>,
}

impl FlightServer {
    /// A service answering online lookups from `online` and pushing through
    /// `pusher` (offline reads are refused until [`FlightServer::with_store`]).
    pub fn new(online: Arc<OnlineStore>, pusher: Arc<Pusher>) -> Self {
        FlightServer {
            online,
            pusher,
            store: None,
        }
    }

    /// The same service, serving feature views and training sets from the
    /// gold tables of `store`.
    pub fn with_store(mut self, store: DeltaStore) -> Self {
        self.store = Some(store);
        self
    }

    fn store(&self) -> Result<&DeltaStore, Status> {
        self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("this server was started without gold tables")
        })
    }

    /// Expands a feature list or a feature service's name.
    fn features(
        &self,
        features: &Option<Vec<String>>,
        service: &Option<String>,
    ) -> Result<Vec<String>, Status> {
        match (features, service) {
            (Some(features), None) => Ok(features.clone()),
            (None, Some(name)) => self
                .online
                .service(name)
                .map(|f| f.to_vec())
                .ok_or_else(|| Status::not_found(format!("no feature service {name:?}"))),
            _ => Err(Status::invalid_argument(
                "give either \"features\" or \"feature_service\"",
            )),
        }
    }

    /// The Arrow schema of view `name`'s gold table at `version`.
    async fn table_schema(&self, name: &str, version: Option<u64>) -> Result<Schema, Status> {
        if self.online.view(name).is_none() {
            return Err(Status::not_found(format!("no feature view {name:?}")));
        }
        let (schema, _) = self
            .store()?
            .arrow_schema(name, version)
            .await
            .map_err(status)?;
        Ok(schema)
    }

    /// The columns `features` add to a result: name and Arrow field.
    async fn feature_fields(
        &self,
        features: &[String],
        full_feature_names: bool,
    ) -> Result<Vec<Field>, Status> {
        let views = self.online.views();
        let plan = training_set::plan(&views, features).map_err(status)?;
        let mut fields = Vec::new();
        for (view, wanted) in plan {
            let schema = self.table_schema(&view.name, None).await?;
            for feature in wanted {
                let field = schema
                    .field_with_name(&feature)
                    .map_err(|_| Status::not_found(format!("{}:{feature}", view.name)))?;
                let name = if full_feature_names {
                    format!("{}__{feature}", view.name)
                } else {
                    feature.clone()
                };
                fields.push(Field::new(name, field.data_type().clone(), true));
            }
        }
        Ok(fields)
    }

    /// The result schema of `command`, before any data moves.
    async fn schema_of(&self, command: &Command) -> Result<Schema, Status> {
        match command {
            Command::FeatureView { name, version, .. } => self.table_schema(name, *version).await,
            Command::TrainingSet {
                features,
                feature_service,
                full_feature_names,
                ..
            } => {
                let features = self.features(features, feature_service)?;
                Ok(Schema::new(
                    self.feature_fields(&features, *full_feature_names).await?,
                ))
            }
            Command::OnlineFeatures {
                features,
                feature_service,
                full_feature_names,
                ..
            } => {
                let features = self.features(features, feature_service)?;
                let views = self.online.views();
                let plan = training_set::plan(&views, &features).map_err(status)?;
                let mut fields = Vec::new();
                if let Some((view, _)) = plan.first() {
                    let schema = self.table_schema(&view.name, None).await?;
                    for key in &view.entity.join_keys {
                        let dtype = schema
                            .field_with_name(key)
                            .map(|f| f.data_type().clone())
                            .unwrap_or(DataType::Utf8);
                        fields.push(Field::new(key, dtype, false));
                    }
                }
                fields.extend(self.feature_fields(&features, *full_feature_names).await?);
                Ok(Schema::new(fields))
            }
            Command::Push { feature_view, .. } => self.table_schema(feature_view, None).await,
        }
    }

    fn info(&self, command: &Command, schema: &Schema) -> Result<FlightInfo, Status> {
        let json = serde_json::to_vec(command)
            .map_err(|e| Status::internal(format!("encoding a command: {e}")))?;
        FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding a schema: {e}")))
            .map(|info| {
                info.with_descriptor(FlightDescriptor::new_cmd(json.clone()))
                    // The ticket is the command itself: any replica can
                    // answer it, nothing is kept between calls.
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(json)))
            })
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A feature view's gold table (`DoGet`), at a version (default: the
    /// latest) and optionally only rows with event times in
    /// `[start, end)` (RFC 3339).
    FeatureView {
        /// The feature view.
        name: String,
        /// The table version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// Earliest event time included.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        /// Event times before this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
    },
    /// Online feature values for a list of entities (`DoGet`): the join
    /// keys, then one column per feature (null when missing, null or older
    /// than the view's TTL).
    OnlineFeatures {
        /// `view:feature` references (or `feature_service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
        /// A feature service's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_service: Option<String>,
        /// Join key → one value per entity.
        #[serde(default)]
        entities: BTreeMap<String, Vec<serde_json::Value>>,
        /// Name features `view__feature`.
        #[serde(default)]
        full_feature_names: bool,
    },
    /// A point-in-time training set (`DoExchange`): the client streams the
    /// spine, the answer is the spine's columns followed by the features.
    TrainingSet {
        /// `view:feature` references (or `feature_service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
        /// A feature service's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_service: Option<String>,
        /// The spine's event-time column.
        #[serde(default = "default_timestamp_column")]
        timestamp_column: String,
        /// Gold table versions to read, by view (default: the latest).
        #[serde(default)]
        as_of_versions: BTreeMap<String, u64>,
        /// Name features `view__feature`.
        #[serde(default)]
        full_feature_names: bool,
    },
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

fn default_timestamp_column() -> String {
    crate::gold::EVENT_TIMESTAMP.to_string()
}

impl Command {
    /// Reads a ticket: a JSON command.
    pub fn from_ticket(ticket: &Ticket) -> Result<Command, Status> {
        Command::from_json(&ticket.ticket)
    }

    fn from_json(bytes: &[u8]) -> Result<Command, Status> {
        serde_json::from_slice(bytes).map_err(|e| {
            Status::invalid_argument(format!(
                "not a valid aurum command ({e}); expected JSON such as \
                 {{\"command\": \"feature_view\", \"name\": \"customer_features\"}}"
            ))
        })
    }

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
        Command::from_json(&descriptor.cmd)
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
        let mut infos = Vec::new();
        for view in self.online.views() {
            // Views without a gold table (or a server without gold tables)
            // have no schema to list yet.
            if !self.store.as_ref().is_some_and(|s| s.exists(&view.name)) {
                continue;
            }
            let command = Command::FeatureView {
                name: view.name.clone(),
                version: None,
                start: None,
                end: None,
            };
            let schema = self.schema_of(&command).await?;
            infos.push(Ok(self.info(&command, &schema)?));
        }
        for service in self.online.services() {
            let command = Command::TrainingSet {
                features: None,
                feature_service: Some(service.name.clone()),
                timestamp_column: default_timestamp_column(),
                as_of_versions: BTreeMap::new(),
                full_feature_names: false,
            };
            // A service over views without gold tables yet is not listed.
            if let Ok(schema) = self.schema_of(&command).await {
                infos.push(Ok(self.info(&command, &schema)?));
            }
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = Command::from_descriptor(request.get_ref())?;
        let schema = self.schema_of(&command).await?;
        Ok(Response::new(self.info(&command, &schema)?))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not served: every command answers at once through GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let command = Command::from_descriptor(request.get_ref())?;
        let schema = self.schema_of(&command).await?;
        let result = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let command = Command::from_ticket(request.get_ref())?;
        let (schema, batches) = match command {
            Command::FeatureView {
                name,
                version,
                start,
                end,
            } => {
                return Ok(Response::new(
                    self.feature_view_stream(&name, version, start, end).await?,
                ));
            }
            Command::OnlineFeatures {
                features,
                feature_service,
                entities,
                full_feature_names,
            } => {
                let features = self.features(&features, &feature_service)?;
                self.online_batches(&features, &entities, full_feature_names)?
            }
            Command::TrainingSet { .. } => {
                return Err(Status::invalid_argument(
                    "a training set needs the spine: send it with DoExchange",
                ));
            }
            Command::Push { .. } => {
                return Err(Status::invalid_argument("a push sends rows: use DoPut"));
            }
        };
        Ok(Response::new(encode(schema, batches)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let (command, mut batches) = command_and_batches("DoPut", request.into_inner()).await?;
        let Command::Push {
            feature_view,
            to,
            allow_partial,
        } = command
        else {
            return Err(Status::invalid_argument(
                "DoPut takes a push command: {\"command\": \"push\", \"feature_view\": ...}",
            ));
        };
        let view = self.view(&feature_view)?;
        let pusher = self.pusher.clone();
        // Results are small and a client may read them only after writing
        // every batch: their queue must never stop ingestion.
        let results = async_stream(PUT_RESULTS_CAPACITY, move |sender| async move {
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
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let (command, mut spine_stream) =
            command_and_batches("DoExchange", request.into_inner()).await?;
        let Command::TrainingSet {
            features,
            feature_service,
            timestamp_column,
            as_of_versions,
            full_feature_names,
        } = command
        else {
            return Err(Status::invalid_argument(
                "DoExchange takes a training_set command: {\"command\": \"training_set\", ...}",
            ));
        };
        let request = TrainingSetRequest {
            features: self.features(&features, &feature_service)?,
            timestamp_column,
            as_of_versions,
            full_feature_names,
        };
        let views = self.online.views();
        // Check the request before any table is read.
        let plan = training_set::plan(&views, &request.features).map_err(status)?;
        let store = self.store()?.clone();

        // The spine is held once (as Arrow batches, then as a frame); the
        // answer is joined and streamed in chunks, so it is never held
        // whole beside the spine.
        let mut spine_batches = Vec::new();
        while let Some(batch) = spine_stream.next().await {
            spine_batches.push(batch.map_err(|e| Status::invalid_argument(e.to_string()))?);
        }
        let spine_schema = spine_stream
            .schema()
            .cloned()
            .or_else(|| spine_batches.first().map(|b| b.schema()))
            .ok_or_else(|| Status::invalid_argument("DoExchange sent no spine schema"))?;
        let spine = interop::batches_to_frame(&spine_schema, &spine_batches).map_err(status)?;
        drop(spine_batches);
        training_set::check_spine(spine.schema(), &plan, &request.timestamp_column)
            .map_err(status)?;
        let loaded = Arc::new(
            training_set::load(&store, &views, &request)
                .await
                .map_err(status)?,
        );
        let versions = serde_json::to_string(&loaded.versions)
            .map_err(|e| Status::internal(format!("encoding versions: {e}")))?;
        let results = async_stream(16, move |sender| async move {
            let height = spine.height();
            let mut offset = 0;
            let mut schema_sent = false;
            while offset < height || !schema_sent {
                let len = EXCHANGE_CHUNK_ROWS.min(height - offset);
                let chunk = spine.slice(offset as i64, len);
                offset += len;
                let features = loaded.clone();
                let joined = tokio::task::spawn_blocking(move || features.join(chunk))
                    .await
                    .map_err(|e| Status::internal(format!("the join stopped: {e}")))?
                    .map_err(status)?;
                let (schema, batches) = interop::frame_to_batches(&joined).map_err(status)?;
                // The versions read ride in the schema's metadata, so a
                // client can pin them to reproduce the set.
                let schema = Arc::new(Schema::new_with_metadata(
                    schema.fields().clone(),
                    [(VERSIONS_METADATA.to_string(), versions.clone())].into(),
                ));
                let batches = batches
                    .into_iter()
                    .map(|b| b.with_schema(schema.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Status::internal(format!("re-labelling batches: {e}")))?;
                let mut encoded = FlightDataEncoderBuilder::new()
                    .with_max_flight_data_size(MAX_MESSAGE_BYTES)
                    .with_schema(schema)
                    .build(futures::stream::iter(batches.into_iter().map(Ok)));
                let mut first_message = true;
                while let Some(data) = encoded.next().await {
                    let data = data.map_err(|e| Status::internal(e.to_string()))?;
                    // Only the first chunk sends the schema.
                    if schema_sent && first_message && data.data_body.is_empty() {
                        first_message = false;
                        continue;
                    }
                    first_message = false;
                    if sender.send(Ok(data)).await.is_err() {
                        return Ok(());
                    }
                }
                schema_sent = true;
                if height == 0 {
                    break;
                }
            }
            Ok(())
        });
        Ok(Response::new(results))
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

/// The schema-metadata key of a training set's table versions (JSON, view →
/// version).
pub const VERSIONS_METADATA: &str = "aurum.versions";

/// The size Flight data messages are cut to: as large as fits, with room
/// for headers, under the 4 MiB that gRPC clients (Rust, Go, Java) accept by
/// default (fewer, larger messages cost less on both sides; arrow-flight's
/// default is 2 MiB).
const MAX_MESSAGE_BYTES: usize = 3 << 20;

/// `PutResult`s that may wait for a client that reads them only at the end
/// (each is a short JSON document).
const PUT_RESULTS_CAPACITY: usize = 1 << 20;

/// Spine rows joined and streamed per chunk by `DoExchange`. The gold side
/// is indexed once per call, so a chunk costs only its own rows: chunks are
/// small enough that joining the next one overlaps sending this one, and
/// that the answer held at once stays small.
const EXCHANGE_CHUNK_ROWS: usize = 1 << 17;

/// The rows of `batch` whose timestamp column (`column`, microseconds) is
/// in `[start, end)`.
fn within(
    batch: &RecordBatch,
    column: usize,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let times = arrow_cast::cast(
        batch.column(column),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let keep: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_some_and(|t| start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e))))
        .collect();
    arrow::compute::filter_record_batch(batch, &keep)
}

/// Streams `batches` as Flight data with `schema` first.
fn encode(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

impl FlightServer {
    /// A view's gold table as a stream of batches, read file by file while
    /// earlier batches are sent; with `start`/`end`, only event times in
    /// `[start, end)`.
    async fn feature_view_stream(
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
            .map_err(status)?;
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

    fn online_batches(
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
            .get_set(&set, &keys, crate::push::now_micros())
            .map_err(status)?;

        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (key, column) in join_keys.iter().zip(&key_columns) {
            if column.iter().all(serde_json::Value::is_i64) {
                fields.push(Field::new(key, DataType::Int64, false));
                arrays.push(Arc::new(Int64Array::from_iter_values(
                    column.iter().filter_map(serde_json::Value::as_i64),
                )));
            } else {
                fields.push(Field::new(key, DataType::Utf8, false));
                arrays.push(Arc::new(StringArray::from_iter_values(
                    column
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                )));
            }
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
            // The declared type decides the column type; undeclared, the
            // values do.
            let declared = self
                .online
                .view(view_name)
                .and_then(|v| {
                    v.features
                        .iter()
                        .position(|f| f == feature)
                        .and_then(|i| v.feature_types.get(i).cloned())
                })
                .unwrap_or_default();
            let any = values.iter().flatten().next().is_some();
            let all = |f: fn(&FeatureValue) -> bool| any && values.iter().flatten().all(f);
            let int = declared == "int64"
                || (declared.is_empty() && all(|v| matches!(v, FeatureValue::Int(_))));
            let text = matches!(declared.as_str(), "string" | "categorical")
                || (declared.is_empty()
                    && values
                        .iter()
                        .flatten()
                        .any(|v| matches!(v, FeatureValue::Str(_))));
            let boolean = declared == "bool"
                || (declared.is_empty() && all(|v| matches!(v, FeatureValue::Bool(_))));
            let (dtype, array): (DataType, ArrayRef) = if int {
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
            };
            fields.push(Field::new(name, dtype, true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| Status::internal(format!("building the answer: {e}")))?;
        Ok((schema, vec![batch]))
    }
}

/// Reads the command from the descriptor of a client stream's first
/// message (`call` names the call in errors) and decodes the rest as record
/// batches. A first message with only the descriptor (as pyarrow sends it
/// for `DoExchange`) carries no data to decode.
async fn command_and_batches(
    call: &str,
    mut stream: Streaming<FlightData>,
) -> Result<(Command, FlightRecordBatchStream), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument(format!("{call} sent no data")))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        Status::invalid_argument(format!(
            "{call}'s first message carries no flight descriptor"
        ))
    })?;
    let command = Command::from_descriptor(&descriptor)?;
    let lead = (!first.data_header.is_empty()).then_some(Ok(first));
    let data = futures::stream::iter(lead)
        .chain(stream)
        .map_err(FlightError::from);
    Ok((command, FlightRecordBatchStream::new_from_flight_data(data)))
}

/// Runs `produce` as a task feeding a stream of at most `capacity` waiting
/// items: what it sends is streamed, an error it returns ends the stream
/// with that status, and so does a panic (as `INTERNAL`), so a failure
/// never looks like a complete answer.
fn async_stream<T, F, Fut>(capacity: usize, produce: F) -> BoxStream<'static, Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
    let errors = sender.clone();
    let work = tokio::spawn(produce(sender));
    tokio::spawn(async move {
        let failure = match work.await {
            Ok(Ok(())) => return,
            Ok(Err(status)) => status,
            Err(e) => Status::internal(format!("the server failed while answering: {e}")),
        };
        let _ = errors.send(Err(failure)).await;
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
        let event_micros = crate::push::check_time(&view.timestamp_column, event_micros)?;
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
