//! Training sets: a spine joined point-in-time with features read from the
//! gold Delta tables, optionally pinned to table versions.
//!
//! The request names features as `view:feature` references (a feature
//! service is expanded to its list by the caller); each referenced view's
//! gold table is read once, at the pinned version or the latest, with only
//! the columns the join needs. The result reports the version of every
//! table it read, so the same request with those versions pinned returns
//! the same rows (and, written by [`write_parquet`] or [`write_streaming`],
//! the same bytes).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::retrieval::{PreparedView, RetrievalOptions, Spine, join_prepared};
use crate::schema::{FeatureView, split_ref};
use delta::DeltaStore;

/// What to join onto a spine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingSetRequest {
    /// `view:feature` references, in output order within each view.
    pub features: Vec<String>,
    /// The spine's event-time column.
    pub timestamp_column: String,
    /// Table versions to read, by view (the latest for views not listed).
    #[serde(default)]
    pub as_of_versions: BTreeMap<String, u64>,
    /// Name feature columns `view__feature`.
    #[serde(default)]
    pub full_feature_names: bool,
}

/// A training set and the table versions it was computed from.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The spine's columns in its order, then the features.
    pub frame: DataFrame,
    /// The gold table version read, by view.
    pub versions: BTreeMap<String, u64>,
}

/// The views a request references, each with its wanted features, in order
/// of first reference.
pub fn plan<'a>(
    views: &'a [FeatureView],
    features: &[String],
) -> Result<Vec<(&'a FeatureView, Vec<String>)>> {
    let mut plan: Vec<(&FeatureView, Vec<String>)> = Vec::new();
    if features.is_empty() {
        return Err(Error::InvalidRequest("the request lists no feature".into()));
    }
    for reference in features {
        let (view_name, feature) =
            split_ref(reference).ok_or_else(|| Error::UnknownFeature(reference.clone()))?;
        let view = views
            .iter()
            .find(|v| v.name == view_name)
            .ok_or_else(|| Error::UnknownFeature(reference.clone()))?;
        if !view.features.iter().any(|f| f == feature) {
            return Err(Error::UnknownFeature(reference.clone()));
        }
        match plan.iter_mut().find(|(v, _)| v.name == view.name) {
            Some((_, wanted)) if wanted.iter().any(|f| f == feature) => {
                return Err(Error::InvalidRequest(format!(
                    "feature {reference:?} is requested twice"
                )));
            }
            Some((_, wanted)) => wanted.push(feature.to_string()),
            None => plan.push((view, vec![feature.to_string()])),
        }
    }
    Ok(plan)
}

/// Checks that `spine` has every join key the plan needs and the timestamp
/// column, naming the first missing one.
pub fn check_spine(
    schema: &Schema,
    plan: &[(&FeatureView, Vec<String>)],
    timestamp_column: &str,
) -> Result<()> {
    let missing = |column: &str, what: &str| Error::InvalidSpine {
        column: column.to_string(),
        message: format!("the spine has no column {column:?} ({what})"),
    };
    match schema.get(timestamp_column) {
        None => return Err(missing(timestamp_column, "its event timestamp")),
        Some(dtype) if !matches!(dtype, DataType::Datetime(..) | DataType::Date) => {
            return Err(Error::InvalidSpine {
                column: timestamp_column.to_string(),
                message: format!(
                    "the spine's timestamp column {timestamp_column:?} is {dtype}, not a timestamp"
                ),
            });
        }
        Some(_) => {}
    }
    for (view, _) in plan {
        for key in &view.entity.join_keys {
            if schema.get(key).is_none() {
                return Err(missing(
                    key,
                    &format!("a join key of feature view {:?}", view.name),
                ));
            }
        }
    }
    Ok(())
}

/// The gold rows a request needs, read once (at pinned or latest versions)
/// and joinable onto any number of spines or spine chunks.
#[derive(Debug, Clone)]
pub struct LoadedFeatures {
    plan: Vec<(FeatureView, Vec<String>)>,
    prepared: Vec<PreparedView>,
    /// The gold table version read, by view.
    pub versions: BTreeMap<String, u64>,
    timestamp_column: String,
    full_feature_names: bool,
}

/// Reads each referenced view's gold table (at the pinned version or the
/// latest), projected to the columns the join needs.
pub async fn load(
    store: &DeltaStore,
    views: &[FeatureView],
    request: &TrainingSetRequest,
) -> Result<LoadedFeatures> {
    let plan = plan(views, &request.features)?;
    if let Some(unknown) = request
        .as_of_versions
        .keys()
        .find(|v| !plan.iter().any(|(view, _)| &view.name == *v))
    {
        return Err(Error::InvalidRequest(format!(
            "a version is pinned for {unknown:?}, which no requested feature comes from"
        )));
    }
    let mut frames = Vec::with_capacity(plan.len());
    let mut histories = Vec::with_capacity(plan.len());
    let mut versions = BTreeMap::new();
    for (view, wanted) in &plan {
        if !store.exists(&view.name).await? {
            return Err(Error::from(delta::Error::TableMissing(view.name.clone())));
        }
        let pinned = request.as_of_versions.get(&view.name).copied();
        if let Some(pinned) = pinned {
            let latest = store.latest_version(&view.name).await?.unwrap_or(0);
            if pinned > latest {
                return Err(Error::InvalidRequest(format!(
                    "version {pinned} of {} does not exist; its versions are 0 to {latest}",
                    view.name
                )));
            }
        }
        let (files, version) = store.files(&view.name, pinned).await?;
        let columns: Vec<String> = view
            .entity
            .join_keys
            .iter()
            .chain([&view.timestamp_column, &view.created_column])
            .chain(wanted.iter())
            .cloned()
            .collect();
        let started = std::time::Instant::now();
        let frame = store
            .read_files(&view.name, version, &files, Some(&columns))
            .await?;
        tracing::debug!(
            view = %view.name,
            version,
            rows = frame.height(),
            seconds = started.elapsed().as_secs_f64(),
            "read gold rows for a training set"
        );
        versions.insert(view.name.clone(), version);
        frames.push(frame);
        // Windows valued at the spine's times read the events gold was
        // computed from.
        histories.push(match &view.request_windows {
            Some(windows) => {
                let events =
                    crate::window::events::events_version(store, view, windows, Some(version))
                        .await?;
                let started = std::time::Instant::now();
                let history = crate::window::events::load_history(store, view, events).await?;
                tracing::debug!(
                    view = %view.name,
                    events = history.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "indexed events for request-time windows"
                );
                Some(history)
            }
            None => None,
        });
    }
    let options = RetrievalOptions {
        full_feature_names: request.full_feature_names,
        strictly_before: false,
    };
    let plan: Vec<(FeatureView, Vec<String>)> = plan
        .into_iter()
        .map(|(view, wanted)| (view.clone(), wanted))
        .collect();
    // Sorting and de-duplicating the gold rows is CPU work done once.
    let started = std::time::Instant::now();
    let for_prepare = plan.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        for_prepare
            .iter()
            .zip(&frames)
            .zip(histories)
            .map(|(((view, wanted), frame), history)| {
                let prepared = PreparedView::new(view, frame, wanted, options)?;
                Ok(match history {
                    Some(history) => prepared.with_events(history),
                    None => prepared,
                })
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::Internal(format!("preparing gold rows stopped: {e}")))??;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "prepared gold rows for joins"
    );
    Ok(LoadedFeatures {
        plan,
        prepared,
        versions,
        timestamp_column: request.timestamp_column.clone(),
        full_feature_names: request.full_feature_names,
    })
}

impl LoadedFeatures {
    /// Checks a spine's schema: every join key and the timestamp column.
    pub fn check_spine(&self, schema: &Schema) -> Result<()> {
        let plan: Vec<(&FeatureView, Vec<String>)> = self
            .plan
            .iter()
            .map(|(view, wanted)| (view, wanted.clone()))
            .collect();
        check_spine(schema, &plan, &self.timestamp_column)
    }

    /// Joins the features onto `spine` point-in-time (CPU work: call it off
    /// async workers). Spine chunks joined one by one and concatenated give
    /// the same rows as the whole spine joined at once.
    pub fn join(&self, spine: DataFrame) -> Result<DataFrame> {
        self.check_spine(spine.schema())?;
        let started = std::time::Instant::now();
        let rows = spine.height();
        let joined = join_prepared(
            &Spine {
                frame: spine,
                timestamp_column: self.timestamp_column.clone(),
            },
            &self.prepared,
            RetrievalOptions {
                full_feature_names: self.full_feature_names,
                strictly_before: false,
            },
        );
        tracing::debug!(
            rows,
            seconds = started.elapsed().as_secs_f64(),
            "joined a spine point-in-time"
        );
        joined
    }
}

/// Reads the gold tables a request needs and joins them onto `spine`.
pub async fn training_set(
    store: &DeltaStore,
    views: &[FeatureView],
    spine: DataFrame,
    request: &TrainingSetRequest,
) -> Result<TrainingSet> {
    // A spine without a needed column fails before any table is read.
    check_spine(
        spine.schema(),
        &plan(views, &request.features)?,
        &request.timestamp_column,
    )?;
    let loaded = load(store, views, request).await?;
    let versions = loaded.versions.clone();
    // The join is CPU work: keep it off the async workers.
    let frame = tokio::task::spawn_blocking(move || loaded.join(spine))
        .await
        .map_err(|e| Error::Internal(format!("the training-set join stopped: {e}")))??;
    Ok(TrainingSet { frame, versions })
}

/// Spine rows joined and written at a time by [`write_streaming`] unless
/// told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 1 << 17;

/// What [`write_streaming`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSet {
    /// Rows written (the spine's).
    pub rows: usize,
    /// Columns written: the spine's, then the features.
    pub columns: usize,
    /// The gold table version read, by view.
    pub versions: BTreeMap<String, u64>,
}

/// Joins the spine in the Parquet file `spine` with the requested features
/// and writes the training set to `out` as Parquet, `batch_rows` spine rows
/// at a time: memory holds the gold rows the request needs and one batch,
/// however large the spine. The same request, pinned versions and batch
/// size give the same bytes. On error, `out` is removed rather than left
/// half written.
pub async fn write_streaming(
    store: &DeltaStore,
    views: &[FeatureView],
    request: &TrainingSetRequest,
    spine: &std::path::Path,
    out: &std::path::Path,
    batch_rows: usize,
) -> Result<WrittenSet> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    if batch_rows == 0 {
        return Err(Error::InvalidRequest(
            "the batch size must be at least one row".into(),
        ));
    }
    let spine_name = spine.display().to_string();
    let not_parquet = move |e: &dyn std::fmt::Display| {
        Error::InvalidRequest(format!(
            "the spine {spine_name} is not a readable Parquet file: {e}"
        ))
    };
    let file = std::fs::File::open(spine).map_err(|source| Error::Io {
        path: spine.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_parquet(&e))?;
    let arrow_schema = reader.schema().clone();
    let empty = delta::interop::batches_to_frame(&arrow_schema, &[])?;
    // A spine without a needed column fails before any table is read.
    check_spine(
        empty.schema(),
        &plan(views, &request.features)?,
        &request.timestamp_column,
    )?;
    let reader = reader
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| not_parquet(&e))?;
    let loaded = load(store, views, request).await?;
    let versions = loaded.versions.clone();
    let out_path = out.to_path_buf();
    let written = tokio::task::spawn_blocking(move || {
        let write = || -> Result<(usize, usize)> {
            let file = std::fs::File::create(&out_path).map_err(|source| Error::Io {
                path: out_path.clone(),
                source,
            })?;
            let writing = Error::polars(format!("writing {}", out_path.display()));
            // The schema comes from joining the empty spine, so a spine
            // without rows still gives a file with every column.
            let schema = loaded.join(empty)?.schema().clone();
            let mut writer = ParquetWriter::new(file)
                .with_compression(ParquetCompression::Zstd(None))
                .batched(&schema)
                .map_err(writing)?;
            let mut rows = 0;
            for batch in reader {
                let batch = batch.map_err(|e| not_parquet(&e))?;
                let chunk = delta::interop::batches_to_frame(&arrow_schema, &[batch])?;
                let joined = loaded.join(chunk)?;
                rows += joined.height();
                writer
                    .write_batch(&joined)
                    .map_err(Error::polars(format!("writing {}", out_path.display())))?;
            }
            writer
                .finish()
                .map_err(Error::polars(format!("writing {}", out_path.display())))?;
            Ok((rows, schema.len()))
        };
        let written = write();
        if written.is_err() {
            let _ = std::fs::remove_file(&out_path);
        }
        written
    })
    .await
    .map_err(|e| Error::Internal(format!("writing the training set stopped: {e}")))??;
    Ok(WrittenSet {
        rows: written.0,
        columns: written.1,
        versions,
    })
}

/// Writes `frame` as Parquet deterministically: the same frame gives the
/// same bytes (no timestamps or writer statistics that vary).
pub fn write_parquet(frame: &mut DataFrame, path: &std::path::Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(frame)
        .map_err(Error::polars(format!("writing {}", path.display())))?;
    Ok(())
}
