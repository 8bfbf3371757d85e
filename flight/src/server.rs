//! The Flight server: its state, schemas and flight infos of commands,
//! and how it is started.

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use arrow_schema::{DataType, Field, Schema};
use tonic::Status;

use delta::DeltaStore;
use feature_store::online::OnlineStore;
use feature_store::online::push::Pusher;
use feature_store::retrieval::training_set::{self};
use feature_store::schema::FeatureView;

use crate::command::*;
use crate::status::*;

/// The Flight service over an online store and its pusher.
#[derive(Debug, Clone)]
pub struct FlightServer {
    pub(crate) online: Arc<OnlineStore>,
    pub(crate) pusher: Arc<Pusher>,
    pub(crate) store: Option<DeltaStore>,
    pub(crate) tokens: Arc<auth::Tokens>,
    pub(crate) limits: CallLimits,
    /// What keyed `DoPut` calls applied, by caller and key.
    pub(crate) put_ledgers: moka::sync::Cache<String, Arc<PutLedger>>,
}

/// What the `DoPut` calls with one idempotency key have applied: the rows
/// and result of each batch, in order. A retry skips (and answers again)
/// the batches already applied, and applies the rest.
#[derive(Debug, Default)]
pub(crate) struct PutLedger {
    /// Whether a call with this key is running.
    pub(crate) running: std::sync::atomic::AtomicBool,
    /// Per batch applied: its rows and its result.
    pub(crate) applied: std::sync::Mutex<Vec<(usize, bytes::Bytes)>>,
}

/// Keys of `DoPut` calls remembered (for 24 hours).
pub(crate) const MAX_PUT_KEYS: u64 = 10_000;

impl FlightServer {
    /// A service answering online lookups from `online` and pushing through
    /// `pusher` (offline reads are refused until [`FlightServer::with_store`]).
    pub fn new(online: Arc<OnlineStore>, pusher: Arc<Pusher>) -> Self {
        FlightServer {
            online,
            pusher,
            store: None,
            tokens: Arc::new(auth::Tokens::none()),
            limits: CallLimits::default(),
            put_ledgers: moka::sync::Cache::builder()
                .max_capacity(MAX_PUT_KEYS)
                .time_to_live(std::time::Duration::from_secs(24 * 3600))
                // Admit every key; the least recently used go first.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// The same service, checking every call's token against `tokens`
    /// (`read` for lists, infos, `DoGet` and `DoExchange`; `write` for
    /// `DoPut`): a bearer `authorization` header on each call, or the
    /// basic-token handshake pyarrow.flight does, which answers with the
    /// bearer header to send.
    pub fn with_tokens(mut self, tokens: auth::Tokens) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Checks a call's credential for `role`.
    pub(crate) fn authorize(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        role: auth::Role,
    ) -> Result<String, Status> {
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        match self.tokens.authorize(authorization, role) {
            // The caller's name (empty without tokens).
            Ok(identity) => Ok(identity.map(|i| i.name.clone()).unwrap_or_default()),
            Err(auth::Denied::Unauthenticated(message)) => Err(Status::unauthenticated(message)),
            Err(auth::Denied::Forbidden(message)) => Err(Status::permission_denied(message)),
        }
    }

    /// The same service, serving feature views and training sets from the
    /// gold tables of `store`.
    pub fn with_store(mut self, store: DeltaStore) -> Self {
        self.store = Some(store);
        self
    }

    pub(crate) fn store(&self) -> Result<&DeltaStore, Status> {
        self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("this server was started without gold tables")
        })
    }

    /// Expands a feature list or a feature service's name.
    pub(crate) fn features(
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
    pub(crate) async fn table_schema(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Schema, Status> {
        if self.online.view(name).is_none() {
            return Err(Status::not_found(format!("no feature view {name:?}")));
        }
        let (schema, _) = self
            .store()?
            .arrow_schema(name, version)
            .await
            .map_err(delta_status)?;
        Ok(schema)
    }

    /// The columns `features` add to a result: name and Arrow field.
    pub(crate) async fn feature_fields(
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
    pub(crate) async fn schema_of(&self, command: &Command) -> Result<Schema, Status> {
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

    pub(crate) fn info(&self, command: &Command, schema: &Schema) -> Result<FlightInfo, Status> {
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

    /// Serves on `listener` (plain TCP, the default connection cap and
    /// call limits) until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = listen::incoming(listener, listen::Options::default());
        self.serve_on(incoming, CallLimits::default(), shutdown)
            .await
    }

    /// Serves on the connections `incoming` takes (TLS and the connection
    /// cap are its business), with `limits` on each call, until `shutdown`
    /// completes.
    pub async fn serve_on(
        mut self,
        incoming: listen::Incoming,
        limits: CallLimits,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        self.limits = limits;
        tonic::transport::Server::builder()
            .timeout(limits.timeout)
            .concurrency_limit_per_connection(limits.per_connection)
            .load_shed(true)
            .layer(telemetry::grpc::GrpcTraceLayer)
            .add_service(
                FlightServiceServer::new(self)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// The ledger of `caller`'s `DoPut` calls to `view` with `key`, marked
    /// running; refused while another call with the key runs.
    pub(crate) fn put_ledger(
        &self,
        caller: &str,
        view: &str,
        key: &str,
    ) -> Result<Arc<PutLedger>, Status> {
        if key.is_empty() || key.len() > 256 {
            return Err(Status::invalid_argument(
                "an idempotency_key must be 1 to 256 bytes",
            ));
        }
        let ledger = self
            .put_ledgers
            .get_with(format!("{caller}\n{view}\n{key}"), Default::default);
        if ledger
            .running
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(Status::aborted(format!(
                "a DoPut with idempotency key {key:?} is still running; retry once it ends"
            )));
        }
        Ok(ledger)
    }

    /// When a call starting now must have finished.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.limits.timeout
    }

    /// `answer`, ended with `DEADLINE_EXCEEDED` if it is still streaming at
    /// `deadline`, so a call's whole answer is bounded in time, not only its
    /// start (a client that reads slowly cannot hold a call open forever).
    pub(crate) fn within<T: Send + 'static>(
        &self,
        answer: futures::stream::BoxStream<'static, Result<T, Status>>,
        deadline: tokio::time::Instant,
    ) -> futures::stream::BoxStream<'static, Result<T, Status>> {
        use futures::StreamExt;
        let limit = self.limits.timeout;
        let expiry = Box::pin(tokio::time::sleep_until(deadline));
        futures::stream::unfold(
            (answer, expiry, false),
            move |(mut answer, mut expiry, expired)| async move {
                if expired {
                    return None;
                }
                tokio::select! {
                    item = answer.next() => item.map(|item| (item, (answer, expiry, false))),
                    () = &mut expiry => Some((
                        Err(Status::deadline_exceeded(format!(
                            "the call ran longer than the server's limit of {} s \
                             (--flight-call-timeout-secs)",
                            limit.as_secs()
                        ))),
                        (answer, expiry, true),
                    )),
                }
            },
        )
        .boxed()
    }

    pub(crate) fn view(&self, name: &str) -> Result<FeatureView, Status> {
        self.online
            .view(name)
            .ok_or_else(|| Status::not_found(format!("no feature view {name:?} to push to")))
    }
}

/// Limits on each Flight call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// The longest a call may take: to start answering (beyond it,
    /// `CANCELLED`) and to finish a streamed answer (beyond it, the stream
    /// ends with `DEADLINE_EXCEEDED`).
    pub timeout: std::time::Duration,
    /// Calls one connection may have running at once; beyond it,
    /// `RESOURCE_EXHAUSTED` (with the connection cap, this bounds the calls
    /// the server runs at once).
    pub per_connection: usize,
    /// The most bytes (in memory) of a table a client uploads on
    /// `DoExchange` (a spine, Feast's entity dataframe); beyond it,
    /// `RESOURCE_EXHAUSTED`.
    pub max_upload_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout: std::time::Duration::from_secs(300),
            per_connection: 64,
            max_upload_bytes: 1 << 30,
        }
    }
}

/// The schema-metadata key of a training set's table versions (JSON, view →
/// version).
pub const VERSIONS_METADATA: &str = "aurum.versions";

/// The size Flight data messages are cut to: as large as fits, with room
/// for headers, under the 4 MiB that gRPC clients (Rust, Go, Java) accept by
/// default (fewer, larger messages cost less on both sides; arrow-flight's
/// default is 2 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 3 << 20;

/// The most bytes of `PutResult`s that may wait unread for a `DoPut`
/// client; beyond it the call ends with `RESOURCE_EXHAUSTED`.
pub(crate) const MAX_UNREAD_RESULT_BYTES: usize = 16 << 20;

/// `PutResult`s that may wait for a client that reads them only at the end
/// (each is a short JSON document).
pub(crate) const PUT_RESULTS_CAPACITY: usize = 1 << 20;

/// Spine rows joined and streamed per chunk by `DoExchange`. The gold side
/// is indexed once per call, so a chunk costs only its own rows: chunks are
/// small enough that joining the next one overlaps sending this one, and
/// that the answer held at once stays small.
pub(crate) const EXCHANGE_CHUNK_ROWS: usize = 1 << 17;
