//! The `FlightService` calls: list, info, schema, get, put, exchange.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Schema, SchemaRef};
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use delta::interop;
use feature_store::retrieval::training_set::{self, TrainingSetRequest};

use crate::command::*;
use crate::decode::*;
use crate::encode::*;
use crate::server::*;
use crate::status::*;

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
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // pyarrow.flight's basic-token handshake sends the credential as a
        // header and expects the bearer header to send on later calls.
        let mut response = Response::new(futures::stream::empty().boxed());
        if self.tokens.is_empty() {
            return Ok(response);
        }
        self.authorize(request.metadata(), auth::Role::Read)?;
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::credential)
            .ok_or_else(|| Status::unauthenticated("the handshake carried no credential"))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::unauthenticated("the token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.authorize(request.metadata(), auth::Role::Read)?;
        let mut infos = Vec::new();
        for view in self.online.views() {
            // Views without a gold table (or a server without gold tables)
            // have no schema to list yet.
            let Some(store) = self.store.as_ref() else {
                continue;
            };
            if !store.exists(&view.name).await.map_err(delta_status)? {
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
        self.authorize(request.metadata(), auth::Role::Read)?;
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
        self.authorize(request.metadata(), auth::Role::Read)?;
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
        let deadline = self.deadline();
        self.authorize(request.metadata(), auth::Role::Read)?;
        let command = Command::from_ticket(request.get_ref())?;
        let (schema, batches) = match command {
            Command::FeatureView {
                name,
                version,
                start,
                end,
            } => {
                return Ok(Response::new(self.within(
                    self.feature_view_stream(&name, version, start, end).await?,
                    deadline,
                )));
            }
            Command::OnlineFeatures {
                features,
                feature_service,
                entities,
                full_feature_names,
            } => {
                let features = self.features(&features, &feature_service)?;
                self.online_batches(&features, &entities, full_feature_names)
                    .await?
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
        Ok(Response::new(
            self.within(encode(schema, batches), deadline),
        ))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let deadline = self.deadline();
        let caller = self.authorize(request.metadata(), auth::Role::Write)?;
        let (call, mut batches) = command_and_batches("DoPut", request.into_inner()).await?;
        let command = match call {
            Call::Aurum(command) => command,
            Call::Feast(feast) => {
                self.feast_put(feast, batches).await?;
                return Ok(Response::new(futures::stream::empty().boxed()));
            }
        };
        let Command::Push {
            feature_view,
            to,
            allow_partial,
            idempotency_key,
        } = command
        else {
            return Err(Status::invalid_argument(
                "DoPut takes a push command: {\"command\": \"push\", \"feature_view\": ...}",
            ));
        };
        let view = self.view(&feature_view)?;
        let pusher = self.pusher.clone();
        let ledger = match idempotency_key {
            Some(key) => Some(self.put_ledger(&caller, &feature_view, &key)?),
            None => None,
        };
        // Results are small and a client may read them only after writing
        // every batch: their queue must never stop ingestion. It is bounded
        // in bytes instead: a client that leaves more unread is cut off.
        let unread = Arc::new(AtomicUsize::new(0));
        let queued = unread.clone();
        // Unmarked as running when the call ends, however it ends.
        let running = ledger.clone().map(Running);
        let results = async_stream(PUT_RESULTS_CAPACITY, move |sender| async move {
            let _running = running;
            let mut stream_row = 0usize;
            let mut index = 0usize;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
                let first_row = stream_row;
                stream_row += batch.num_rows();
                index += 1;
                if let Some(answer) = replayed(ledger.as_deref(), index - 1, batch.num_rows())? {
                    // Counted like any result: the reader's side subtracts
                    // every result it passes on.
                    queued.fetch_add(answer.len(), Ordering::Relaxed);
                    if sender
                        .send(Ok(PutResult {
                            app_metadata: answer,
                        }))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                let latest = pusher.latest_event_micros();
                let (rows, rejected) =
                    match batch_rows(&view, &batch, first_row, allow_partial, latest) {
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
                let metadata =
                    bytes::Bytes::from(serde_json::to_vec(&outcome).map_err(|e| {
                        Status::internal(format!("encoding the push outcome: {e}"))
                    })?);
                if let Some(ledger) = &ledger {
                    ledger
                        .applied
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((batch.num_rows(), metadata.clone()));
                }
                let waiting = queued.fetch_add(metadata.len(), Ordering::Relaxed);
                if waiting.saturating_add(metadata.len()) > MAX_UNREAD_RESULT_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "more than {MAX_UNREAD_RESULT_BYTES} bytes of push results are unread \
                         (the batches up to row {stream_row} were applied); read the results as \
                         you write"
                    )));
                }
                if sender
                    .send(Ok(PutResult {
                        app_metadata: metadata,
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(())
        })
        .inspect(move |result| {
            if let Ok(result) = result {
                unread.fetch_sub(result.app_metadata.len(), Ordering::Relaxed);
            }
        })
        .boxed();
        Ok(Response::new(self.within(results, deadline)))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let deadline = self.deadline();
        self.authorize(request.metadata(), auth::Role::Read)?;
        let (call, mut spine_stream) =
            command_and_batches("DoExchange", request.into_inner()).await?;
        let command = match call {
            Call::Aurum(command) => command,
            Call::Feast(feast) => {
                return Ok(Response::new(self.within(
                    self.feast_exchange(feast, spine_stream).await?,
                    deadline,
                )));
            }
        };
        let request = self.exchange_request(command)?;
        // Check the request before the spine is read.
        training_set::plan(&self.online.views(), &request.features).map_err(status)?;
        let (spine_schema, spine_batches) =
            spine_batches(&mut spine_stream, self.limits.max_upload_bytes).await?;
        Ok(Response::new(
            self.within(
                self.training_set_answer(request, spine_schema, spine_batches)
                    .await?,
                deadline,
            ),
        ))
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

impl FlightServer {
    /// The point-in-time training set of `request` over the spine
    /// (`spine_schema`, `spine_batches`), streamed in chunks: aurum's
    /// `training_set` command and Feast's `get_historical_features`.
    pub(crate) async fn training_set_answer(
        &self,
        request: TrainingSetRequest,
        spine_schema: SchemaRef,
        spine_batches: Vec<RecordBatch>,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let views = self.online.views();
        // Check the request before any table is read.
        let plan = training_set::plan(&views, &request.features).map_err(status)?;
        let store = self.store()?.clone();

        // The spine is held once (as Arrow batches, then as a frame); the
        // answer is joined and streamed in chunks, so it is never held
        // whole beside the spine.
        let spine =
            interop::batches_to_frame(&spine_schema, &spine_batches).map_err(delta_status)?;
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
                let (schema, batches) = interop::frame_to_batches(&joined).map_err(delta_status)?;
                let (schema, batches) = with_versions(&schema, batches, &versions)?;
                if !send_batches(&sender, schema, batches, schema_sent).await? {
                    return Ok(());
                }
                schema_sent = true;
                if height == 0 {
                    break;
                }
            }
            Ok(())
        });
        Ok(results)
    }

    /// The training-set request of a DoExchange command.
    fn exchange_request(&self, command: Command) -> Result<TrainingSetRequest, Status> {
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
        Ok(TrainingSetRequest {
            features: self.features(&features, &feature_service)?,
            timestamp_column,
            as_of_versions,
            full_feature_names,
        })
    }
}

/// Marks a keyed `DoPut` as running while it lives.
struct Running(Arc<PutLedger>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// The result of batch `index` when an earlier call with the same key
/// applied it (then it is not applied again), or `None` to apply it. A
/// batch whose row count differs from the one applied is refused: the
/// retry is not sending the same batches.
fn replayed(
    ledger: Option<&PutLedger>,
    index: usize,
    rows: usize,
) -> Result<Option<bytes::Bytes>, Status> {
    let Some(ledger) = ledger else {
        return Ok(None);
    };
    let applied = ledger.applied.lock().unwrap_or_else(|e| e.into_inner());
    match applied.get(index) {
        None => Ok(None),
        Some((applied_rows, result)) if *applied_rows == rows => Ok(Some(result.clone())),
        Some((applied_rows, _)) => Err(Status::invalid_argument(format!(
            "batch {index} has {rows} rows, but the call first made with this idempotency key \
             applied {applied_rows} rows as batch {index}: a retry must send the same batches \
             in the same order (use a new key for new rows)"
        ))),
    }
}

/// The batches a client uploads on `DoExchange` (a spine, Feast's entity
/// dataframe), with their schema.
/// A table larger than `max_bytes` in memory is refused
/// (`RESOURCE_EXHAUSTED`) as soon as it passes the limit.
pub(crate) async fn spine_batches(
    stream: &mut FlightRecordBatchStream,
    max_bytes: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The bytes the batch's arrays use (its slices: an IPC-decoded
        // buffer shares the message body, which capacity would count once
        // per buffer).
        let size: usize = batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        bytes = bytes.saturating_add(size);
        if bytes > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "the uploaded table passed {max_bytes} bytes in memory after {} rows; send it \
                 in parts (one call per part) or raise the server's --flight-max-upload-mib",
                batches.iter().map(RecordBatch::num_rows).sum::<usize>() + batch.num_rows()
            )));
        }
        batches.push(batch);
    }
    let schema = stream
        .schema()
        .cloned()
        .or_else(|| batches.first().map(|b| b.schema()))
        .ok_or_else(|| Status::invalid_argument("DoExchange sent no table (no schema)"))?;
    Ok((schema, batches))
}

/// `batches` relabelled with `schema` plus the table `versions` read in its
/// metadata, so a client can pin them to reproduce the set.
fn with_versions(
    schema: &Schema,
    batches: Vec<RecordBatch>,
    versions: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
    let schema = Arc::new(Schema::new_with_metadata(
        schema.fields().clone(),
        [(VERSIONS_METADATA.to_string(), versions.to_string())].into(),
    ));
    let batches = batches
        .into_iter()
        .map(|b| b.with_schema(schema.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::internal(format!("re-labelling batches: {e}")))?;
    Ok((schema, batches))
}

/// Encodes and sends one chunk of a DoExchange answer; once `schema_sent`,
/// without the schema message the client already has. `false` when the
/// client has gone.
async fn send_batches(
    sender: &tokio::sync::mpsc::Sender<Result<FlightData, Status>>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    schema_sent: bool,
) -> Result<bool, Status> {
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
            return Ok(false);
        }
    }
    Ok(true)
}
