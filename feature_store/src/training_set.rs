//! Training sets: a spine joined point-in-time with features read from the
//! gold Delta tables, optionally pinned to table versions.
//!
//! The request names features as `view:feature` references (a feature
//! service is expanded to its list by the caller); each referenced view's
//! gold table is read once, at the pinned version or the latest, with only
//! the columns the join needs. The result reports the version of every
//! table it read, so the same request with those versions pinned returns
//! the same rows (and, written by [`write_parquet`], the same bytes).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::definitions::{FeatureView, split_ref};
use crate::error::{Error, Result};
use crate::offline::DeltaStore;
use crate::retrieval::{PreparedView, RetrievalOptions, Spine, join_prepared};

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
    let mut versions = BTreeMap::new();
    for (view, wanted) in &plan {
        if !store.exists(&view.name) {
            return Err(Error::TableMissing(view.name.clone()));
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
            .map(|((view, wanted), frame)| PreparedView::new(view, frame, wanted, options))
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
