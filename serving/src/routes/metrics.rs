//! `GET /metrics`: the server's counters in the OpenMetrics text format,
//! encoded by `prometheus-client`.
//!
//! A scrape registers a [`Collector`] that walks the shared state (the
//! request path's own atomics and the handles it keeps) and hands each
//! family to the library's encoder, so the request path never pays for the
//! exposition.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use feature_store::online::OnlineStats;
use feature_store::online::push::PushStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::AppError;
use crate::metrics::Histogram;
use crate::metrics::exposition::{
    Label, counter, counter_family, gauge, gauge_family, histogram, histogram_family,
};
use crate::state::AppState;

/// The OpenMetrics text format's content type: `prometheus-client` writes
/// OpenMetrics (counters' `_total` samples, the closing `# EOF`).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Handles `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    // A registry per scrape, holding a collector over the shared state: it
    // costs two small allocations, and the state needs no registry of its
    // own that the request path would have to know about.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(state)));
    let mut body = String::with_capacity(16 << 10);
    text::encode(&mut body, &registry)
        .map_err(|_| AppError::internal("the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response())
}

/// One scrape: the server's state, walked when the registry encodes it.
#[derive(Debug)]
struct Scrape(Arc<AppState>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let state = &*self.0;
        let encoder = &mut encoder;
        encode_stages(state, encoder)?;
        state.metrics.encode_requests(encoder)?;
        if let Some(monitor) = &state.monitor {
            crate::metrics::monitor::encode(monitor, encoder)?;
        }
        let queued_for_batching = encode_models(state, encoder)?;
        let push = state.pusher.stats();
        histogram(
            encoder,
            "aurum_push_freshness_seconds",
            "Time from a pushed row's event time to its visibility online.",
            &push.freshness_seconds,
        )?;
        let online = state.online.stats();
        // Counters are named without `_total`: the encoder appends it, so
        // the samples read `aurum_model_swaps_total` and so on.
        let totals = model_totals(state)
            .into_iter()
            .chain(online_totals(&online))
            .chain(push_totals(push))
            .chain(protection_totals(state, queued_for_batching))
            .chain(log_totals(state));
        for (name, help, kind, value) in totals {
            match kind {
                MetricType::Counter => counter(encoder, name, help, value)?,
                _ => gauge(encoder, name, help, value)?,
            }
        }
        encode_views(state, encoder)?;
        encode_windows(state, encoder)?;
        encode_streams(state, encoder)?;
        encode_tier(state, encoder)?;
        encode_tables(state, encoder)?;
        encode_traces(encoder)
    }
}

/// Views whose windows are valued at the read: their live tiles.
fn encode_windows(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let live: Vec<(String, Arc<feature_store::window::live::LiveTiles>)> = state
        .online
        .views()
        .into_iter()
        .filter_map(|v| Some((v.name.clone(), state.online.live_tiles(&v.name)?)))
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    gauge_family(
        encoder,
        "aurum_window_entities",
        "Entities with window tiles a read can reach, per feature view.",
        live.iter()
            .map(|(view, tiles)| ([("view", Label::Text(view))], tiles.entities() as u64)),
    )?;
    for (name, help, value) in [
        (
            "aurum_window_events_applied",
            "Events applied to a view's window tiles (loaded from its events table or landed from a stream).",
            (|s: &feature_store::window::live::WindowStats| &s.applied) as fn(&_) -> &_,
        ),
        (
            "aurum_window_events_too_late",
            "Events older than every window a read can still make, not applied.",
            |s| &s.too_late,
        ),
        (
            "aurum_window_future_reads",
            "Reads whose newest tile held an event stamped after the read time (counted online, left out offline).",
            |s| &s.future_reads,
        ),
        (
            "aurum_window_read_merges",
            "Reads that merged a window's earlier tiles themselves (the kept merge was not the one they needed).",
            |s| &s.read_merges,
        ),
    ] {
        counter_family(
            encoder,
            name,
            help,
            live.iter().map(|(view, tiles)| {
                (
                    [("view", Label::Text(view))],
                    value(tiles.stats()).load(Ordering::Relaxed),
                )
            }),
        )?;
    }
    histogram_family(
        encoder,
        "aurum_window_event_visible_seconds",
        "Stream events: from their event time to visible in the online window tiles.",
        live.iter().map(|(view, tiles)| {
            (
                [("view", Label::Text(view))],
                StatsHistogram(tiles.stats().clone()),
            )
        }),
    )
}

/// A window's latency histogram, held through its counters.
struct StatsHistogram(Arc<feature_store::window::live::WindowStats>);

impl std::ops::Deref for StatsHistogram {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0.visible_seconds
    }
}

/// The Kafka sources the server consumes (`aurum serve --stream`).
fn encode_streams(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let streams = state.streams.read().map(|s| s.clone()).unwrap_or_default();
    if streams.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    for (name, help, value) in [
        (
            "aurum_stream_events_consumed",
            "Events received from the brokers, per source.",
            (|s: &stream::StreamStats| &s.consumed) as fn(&_) -> &_,
        ),
        (
            "aurum_stream_events_landed",
            "Events landed in bronze, per source.",
            |s| &s.landed,
        ),
        (
            "aurum_stream_events_undecodable",
            "Landed events that did not decode (quarantined by silver), per source.",
            |s| &s.undecodable,
        ),
        (
            "aurum_stream_skipped_offsets",
            "Offsets the brokers skipped where a partition resumed, per source.",
            |s| &s.skipped_offsets,
        ),
        ("aurum_stream_commits", "Bronze commits, per source.", |s| {
            &s.commits
        }),
        (
            "aurum_stream_conflicts",
            "Bronze commits refused because another consumer landed a partition first.",
            |s| &s.conflicts,
        ),
        (
            "aurum_stream_repeats",
            "Re-delivered events (same dedup key and event time) the window tiles left out.",
            |s| &s.repeats,
        ),
    ] {
        counter_family(
            encoder,
            name,
            help,
            streams.iter().map(|s| {
                (
                    [("source", Label::Text(&s.source))],
                    value(&s.stats).load(Ordering::Relaxed),
                )
            }),
        )?;
    }
    let lags: Vec<(String, i32, i64)> = streams
        .iter()
        .flat_map(|s| {
            let lag = s.stats.lag.lock().map(|l| l.clone()).unwrap_or_default();
            lag.into_iter()
                .map(|(p, l)| (s.source.clone(), p, l))
                .collect::<Vec<_>>()
        })
        .collect();
    gauge_family(
        encoder,
        "aurum_stream_lag_events",
        "Events the brokers hold that bronze does not, per source and partition.",
        lags.iter().map(|(source, partition, lag)| {
            (
                [
                    ("source", Label::Text(source)),
                    ("partition", Label::Int(*partition as u64)),
                ],
                (*lag).max(0) as u64,
            )
        }),
    )?;
    gauge_family(
        encoder,
        "aurum_stream_connected",
        "1 while the consumer runs and the brokers answer (within 30 s), per source.",
        streams.iter().map(|s| {
            (
                [("source", Label::Text(&s.source))],
                u64::from(matches!(s.state(now), "ok" | "behind")),
            )
        }),
    )
}

/// The shared online tier (Redis), when the store caches one.
fn encode_tier(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let Some(tier) = state.online.tier() else {
        return Ok(());
    };
    let stats = tier.stats();
    gauge(
        encoder,
        "aurum_online_tier_up",
        "1 while the shared online tier answers and its invalidations arrive (L1 in use).",
        u64::from(tier.is_ready()),
    )?;
    histogram(
        encoder,
        "aurum_online_tier_round_trip_seconds",
        "Round trips to the shared online tier (reads and write batches).",
        &stats.round_trip,
    )?;
    for (name, help, value) in [
        (
            "aurum_online_tier_l1_hits",
            "Rows a lookup found in the in-process L1 cache.",
            &stats.l1_hits,
        ),
        (
            "aurum_online_tier_l1_misses",
            "Rows a lookup read from the shared tier (not in L1).",
            &stats.l1_misses,
        ),
        (
            "aurum_online_tier_invalidations",
            "L1 rows dropped because a write (this or another replica's) replaced them.",
            &stats.invalidations,
        ),
        (
            "aurum_online_tier_reconnects",
            "Times the invalidation subscription was lost and established again.",
            &stats.reconnects,
        ),
        (
            "aurum_online_tier_errors",
            "Commands to the shared tier that failed (unreachable, timed out, refused).",
            &stats.errors,
        ),
        (
            "aurum_online_tier_rows_swept",
            "Rows past their TTL's grace that the tier's sweep deleted (garbage collection).",
            &stats.rows_swept,
        ),
        (
            "aurum_online_tier_decode_errors",
            "Rows read from the shared tier that did not decode (written by another version).",
            &stats.decode_errors,
        ),
        (
            "aurum_online_tier_events_published",
            "Hand-offs of stream events this replica appended to the shared events feed.",
            &stats.events_published,
        ),
        (
            "aurum_online_tier_events_unpublished",
            "Hand-offs of stream events the events feed did not take (applied to this replica's windows only).",
            &stats.events_unpublished,
        ),
        (
            "aurum_online_tier_feed_entries_read",
            "Events feed entries this replica read for its window tiles.",
            &stats.feed_entries_read,
        ),
        (
            "aurum_online_tier_feed_gaps",
            "Times the events feed was trimmed past what this replica had read (its windows miss those events).",
            &stats.feed_gaps,
        ),
    ] {
        counter(encoder, name, help, value.load(Ordering::Relaxed))?;
    }
    Ok(())
}

/// The project's tables and the last pipeline run, as last read (nothing
/// before the first reading, or when the server has no project).
fn encode_tables(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let reading = state
        .tables
        .reading
        .read()
        .map(|r| r.clone())
        .unwrap_or_default();
    counter(
        encoder,
        "aurum_table_read_errors",
        "Readings of a table's Delta log for these metrics that failed.",
        state.tables.errors.load(Ordering::Relaxed),
    )?;
    if reading.at_ms == 0 {
        return Ok(());
    }
    let tables = &reading.tables;
    gauge(
        encoder,
        "aurum_table_read_timestamp_seconds",
        "When the tables below were last read (seconds since the epoch).",
        (reading.at_ms / 1000) as u64,
    )?;
    gauge_family(
        encoder,
        "aurum_table_version",
        "The latest Delta version of each table.",
        tables.iter().map(|t| (labels(t), t.version)),
    )?;
    gauge_family(
        encoder,
        "aurum_table_commit_timestamp_seconds",
        "When each table's latest version was committed (seconds since the epoch).",
        tables
            .iter()
            .filter_map(|t| Some((labels(t), t.committed_ms? as f64 / 1e3))),
    )?;
    gauge_family(
        encoder,
        "aurum_table_newest_event_timestamp_seconds",
        "The newest event time in each table with one (silver, gold), from the files' statistics; \
         time() minus it is the table's staleness.",
        tables
            .iter()
            .filter_map(|t| Some((labels(t), t.newest_event_micros? as f64 / 1e6))),
    )?;
    gauge_family(
        encoder,
        "aurum_table_rows",
        "Rows in each table's latest version, from the files' statistics.",
        tables.iter().map(|t| (labels(t), t.rows)),
    )?;
    let Some(run) = &reading.last_run else {
        return Ok(());
    };
    gauge(
        encoder,
        "aurum_pipeline_last_run_start_timestamp_seconds",
        "When the last pipeline run started (seconds since the epoch).",
        (run.started_micros / 1_000_000) as u64,
    )?;
    gauge(
        encoder,
        "aurum_pipeline_last_run_end_timestamp_seconds",
        "When the last pipeline run made its last commit (seconds since the epoch).",
        (run.last_commit_ms / 1000) as u64,
    )?;
    encoder
        .encode_descriptor(
            "aurum_pipeline_last_run_duration_seconds",
            "How long the last pipeline run took, from its start to its last commit.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?
        .encode_gauge(&run.seconds())?;
    gauge_family(
        encoder,
        "aurum_pipeline_quality_score",
        "The share of the last run's silver batch that passed every check, per source.",
        run.quality.iter().map(|(s, q)| (source(s), q.score)),
    )?;
    gauge_family(
        encoder,
        "aurum_pipeline_batch_rows",
        "Rows the last run's silver batch considered, per source.",
        run.quality.iter().map(|(s, q)| (source(s), q.rows)),
    )?;
    gauge_family(
        encoder,
        "aurum_pipeline_batch_failed_rows",
        "Rows of the last run's silver batch that failed a check, per source.",
        run.quality.iter().map(|(s, q)| (source(s), q.failed)),
    )?;
    gauge_family(
        encoder,
        "aurum_quality_gate_failed",
        "1 when the last run's batch of a source failed a quality gate (its views' gold was held), \
         per source, view (* for the source's own gate) and check.",
        run.gates.iter().map(|((s, view, check), failed)| {
            (
                [
                    ("source", Label::Text(s.as_str())),
                    ("view", Label::Text(view.as_str())),
                    ("check", Label::Text(check.as_str())),
                ],
                u64::from(*failed),
            )
        }),
    )
}

/// A table's labels.
fn labels(t: &feature_store::health::TableHealth) -> [(&'static str, Label<'_>); 2] {
    [
        ("table", Label::Text(t.table.as_str())),
        ("layer", Label::Text(t.layer.as_str())),
    ]
}

/// A source's label.
fn source(name: &str) -> [(&'static str, Label<'_>); 1] {
    [("source", Label::Text(name))]
}

/// What became of the spans this process made (all zero while tracing is
/// off).
fn encode_traces(encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let stats = telemetry::stats();
    counter(
        encoder,
        "aurum_trace_spans_exported",
        "Spans the OTLP collector accepted.",
        stats.exported.load(Ordering::Relaxed),
    )?;
    crate::metrics::exposition::counter_family(
        encoder,
        "aurum_trace_spans_dropped",
        "Spans not exported: the export queue was full, or the export failed or timed out.",
        [
            (
                [(
                    "reason",
                    crate::metrics::exposition::Label::Text("queue_full"),
                )],
                stats.dropped_queue_full.load(Ordering::Relaxed),
            ),
            (
                [(
                    "reason",
                    crate::metrics::exposition::Label::Text("export_failed"),
                )],
                stats.dropped_export_failed.load(Ordering::Relaxed),
            ),
        ],
    )?;
    counter(
        encoder,
        "aurum_trace_export_failures",
        "OTLP exports that failed or timed out.",
        stats.export_failures.load(Ordering::Relaxed),
    )
}

/// A family of one unlabelled sample: name, help, type and value.
type Total = (&'static str, &'static str, MetricType, u64);

/// The `/get-online-features` lookup time and the `/predict` stages that
/// are not per arm.
fn encode_stages(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let m = &state.metrics;
    histogram(
        encoder,
        "aurum_online_lookup_seconds",
        "Online store lookup time per /get-online-features request.",
        &m.lookup_seconds,
    )?;
    histogram(
        encoder,
        "aurum_predict_parse_seconds",
        "Reading and checking a /predict body.",
        &m.parse_seconds,
    )?;
    histogram(
        encoder,
        "aurum_predict_serialize_seconds",
        "Writing a /predict answer.",
        &m.serialize_seconds,
    )
}

/// The micro-batchers' rows and the version each arm serves; returns the
/// requests waiting in the micro-batchers.
fn encode_models(
    state: &AppState,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<usize, fmt::Error> {
    let served = state.models.all();
    // A batcher is shared by the arms that serve the same version: its
    // rows and its queue are counted once per model and version.
    let mut batched: Vec<(&str, u64, &Histogram)> = Vec::new();
    let mut queued_for_batching: usize = 0;
    for (name, models) in &served {
        let name = name.as_str();
        for (_, model) in models.all() {
            let version = model.version.version;
            if let Some(rows) = model.batch_rows()
                && !batched.iter().any(|&(n, v, _)| n == name && v == version)
            {
                batched.push((name, version, rows));
                queued_for_batching += model.queued();
            }
        }
    }
    histogram_family(
        encoder,
        "aurum_batch_inference_rows",
        "Rows per micro-batched inference, per model version.",
        batched.iter().map(|&(name, version, rows)| {
            (
                [
                    ("model", Label::Text(name)),
                    ("version", Label::Int(version)),
                ],
                rows,
            )
        }),
    )?;
    gauge_family(
        encoder,
        "aurum_model_served_version",
        "The version each model serves at each arm.",
        served.iter().flat_map(|(name, models)| {
            models.all().map(move |(arm, model)| {
                (
                    [("model", Label::Text(name)), ("arm", Label::Text(arm))],
                    model.version.version,
                )
            })
        }),
    )?;
    Ok(queued_for_batching)
}

/// The model watcher's counters.
fn model_totals(state: &AppState) -> [Total; 2] {
    [
        (
            "aurum_model_swaps",
            "Model versions swapped in without a restart.",
            MetricType::Counter,
            state.reload.swaps.load(Ordering::Relaxed),
        ),
        (
            "aurum_model_load_failures",
            "Model versions that failed to load or warm up (the old version kept serving).",
            MetricType::Counter,
            state.reload.failures.load(Ordering::Relaxed),
        ),
    ]
}

/// The online store's counters and size.
fn online_totals(stats: &OnlineStats) -> [Total; 5] {
    [
        (
            "aurum_online_hits",
            "Lookups that found a row.",
            MetricType::Counter,
            stats.hits,
        ),
        (
            "aurum_online_misses",
            "Lookups that found no row.",
            MetricType::Counter,
            stats.misses,
        ),
        (
            "aurum_online_entries",
            "Rows held in the online store.",
            MetricType::Gauge,
            stats.entries,
        ),
        (
            "aurum_online_evictions",
            "Rows evicted to stay within the memory budget.",
            MetricType::Counter,
            stats.evictions,
        ),
        (
            "aurum_online_bytes",
            "Bytes held in the online store, as its weigher counts them.",
            MetricType::Gauge,
            stats.weighted_bytes,
        ),
    ]
}

/// The pushed rows' counters.
fn push_totals(push: &PushStats) -> [Total; 2] {
    [
        (
            "aurum_push_rows_accepted",
            "Pushed rows accepted.",
            MetricType::Counter,
            push.accepted.load(Ordering::Relaxed),
        ),
        (
            "aurum_push_rows_rejected",
            "Pushed rows rejected.",
            MetricType::Counter,
            push.rejected.load(Ordering::Relaxed),
        ),
    ]
}

/// The protections' gauges and counters: requests in flight, shed and
/// timed out, shadow runs, micro-batch queues.
fn protection_totals(state: &AppState, queued_for_batching: usize) -> [Total; 6] {
    let m = &state.metrics;
    [
        (
            "aurum_requests_in_flight",
            "Requests being answered now.",
            MetricType::Gauge,
            state.in_flight() as u64,
        ),
        (
            "aurum_requests_shed",
            "Requests refused with 503 at the in-flight limit.",
            MetricType::Counter,
            m.shed.load(Ordering::Relaxed),
        ),
        (
            "aurum_request_timeouts",
            "Requests that ran past the per-request timeout.",
            MetricType::Counter,
            m.timeouts.load(Ordering::Relaxed),
        ),
        (
            "aurum_shadow_dropped",
            "Shadow runs skipped because too many were running.",
            MetricType::Counter,
            m.shadow_dropped.load(Ordering::Relaxed),
        ),
        (
            "aurum_shadow_in_flight",
            "Shadow runs in progress.",
            MetricType::Gauge,
            state.shadow_in_flight() as u64,
        ),
        (
            "aurum_batch_queue_depth",
            "Requests waiting in micro-batchers, over all models.",
            MetricType::Gauge,
            queued_for_batching as u64,
        ),
    ]
}

/// The prediction log's queue and counters, and readiness.
fn log_totals(state: &AppState) -> [Total; 4] {
    let log = state
        .prediction_log
        .as_ref()
        .map(|l| (l.stats(), l.queued()));
    [
        (
            "aurum_prediction_log_queue_depth",
            "Predictions waiting to be written to the log.",
            MetricType::Gauge,
            log.map_or(0, |(_, q)| q as u64),
        ),
        (
            "aurum_prediction_log_written",
            "Predictions committed to the log table.",
            MetricType::Counter,
            log.map_or(0, |(s, _)| s.written.load(Ordering::Relaxed)),
        ),
        (
            "aurum_prediction_log_dropped",
            "Predictions not logged: the queue was full or a commit failed.",
            MetricType::Counter,
            log.map_or(0, |(s, _)| s.dropped.load(Ordering::Relaxed)),
        ),
        (
            "aurum_ready",
            "1 when the server is ready.",
            MetricType::Gauge,
            u64::from(state.is_ready()),
        ),
    ]
}

/// Per feature view: entities, bytes and the gold version loaded.
fn encode_views(state: &AppState, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let per_view = state.online.view_stats();
    for (name, help, value) in [
        (
            "aurum_online_view_entries",
            "Entities held per feature view.",
            (|v: &feature_store::online::ViewStats| v.entries) as fn(&_) -> u64,
        ),
        (
            "aurum_online_view_bytes",
            "Bytes held per feature view, as the weigher counts them.",
            |v| v.bytes,
        ),
    ] {
        gauge_family(
            encoder,
            name,
            help,
            per_view
                .iter()
                .map(|view| ([("view", Label::Text(&view.view))], value(view))),
        )?;
    }
    let views = state.online.views();
    gauge_family(
        encoder,
        "aurum_feature_view_delta_version",
        "The gold version each view's online values came from.",
        views.iter().filter_map(|view| {
            let version = state.online.delta_version(&view.name)?;
            Some(([("view", Label::Text(&view.name))], version))
        }),
    )
}
