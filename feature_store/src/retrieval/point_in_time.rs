//! Point-in-time-correct training sets.
//!
//! For each spine row and feature view: the latest feature row of the same
//! entity with `event_timestamp <= spine timestamp` and within the view's TTL,
//! ties broken by the created timestamp; missing → null. The spine's columns,
//! row order and row count are kept. Each view's gold rows are indexed once
//! by entity (a hash map to a time-sorted run); each spine row then costs one
//! lookup and one binary search, in parallel, and the feature columns are
//! gathered with polars.

use polars::prelude::*;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::schema::FeatureView;
use crate::window::history::{History, entity_keys};

/// Which spine columns drive the join.
#[derive(Debug, Clone)]
pub struct Spine {
    /// The spine rows: entity keys, an event timestamp, anything else.
    pub frame: DataFrame,
    /// The spine's event-time column.
    pub timestamp_column: String,
}

/// Options of a retrieval.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrievalOptions {
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Only use feature rows strictly earlier than the spine timestamp.
    /// For spines of events that themselves feed the features (a
    /// transaction labelled at its own time), this gives the values known
    /// just before the event — what the online store serves when the event
    /// is scored.
    pub strictly_before: bool,
}

/// Joins each view's features onto the spine, point-in-time correctly.
/// `views` pairs each view with its gold frame and the features wanted.
pub fn point_in_time_join(
    spine: &Spine,
    views: &[(&FeatureView, &DataFrame, &[String])],
    options: RetrievalOptions,
) -> Result<DataFrame> {
    let prepared = views
        .iter()
        .map(|(view, frame, features)| PreparedView::new(view, frame, features, options))
        .collect::<Result<Vec<_>>>()?;
    join_prepared(spine, &prepared, options)
}

/// One view's gold rows made ready for as-of joins: each entity's rows
/// gathered together and sorted by (event time, created time, row), so a
/// spine row finds its match with one hash lookup and one binary search,
/// and the wanted feature columns are gathered only for the matched rows,
/// in spine order, at the end. The wide gold rows are never sorted, the
/// spine's own columns never move, and nothing is regrouped per join:
/// preparing once and joining many spine chunks is how a large spine
/// streams.
#[derive(Debug, Clone)]
pub struct PreparedView {
    view: FeatureView,
    /// The output names of the features, in order.
    names: Vec<String>,
    /// What each join key holds, in the view's key order.
    key_kinds: Vec<KeyKind>,
    /// Entity key → entity number.
    entities: EntityIndex,
    /// Entity `e`'s rows are `starts[e]..starts[e + 1]` of `times`/`rows`.
    starts: Vec<usize>,
    /// Event times (microseconds), ascending within each entity; of equal
    /// times, the latest created comes last.
    times: Vec<i64>,
    /// The gold row of each entry of `times`.
    rows: Vec<IdxSize>,
    /// The wanted feature columns, renamed, in gold row order.
    features: DataFrame,
    /// The wanted features, in output order.
    wanted: Vec<String>,
    /// The view's events, when its windows are valued at the spine's
    /// times ([`PreparedView::with_events`]).
    history: Option<std::sync::Arc<History>>,
}

impl PreparedView {
    /// Prepares `frame` (the view's gold rows) for joining `features`.
    /// Gold rows with a null key or event time can never match and are
    /// left out of the index.
    pub fn new(
        view: &FeatureView,
        frame: &DataFrame,
        features: &[String],
        options: RetrievalOptions,
    ) -> Result<Self> {
        let names = output_names(view, features, options)?;
        let failed = |e| Error::polars(format!("preparing {} for joins", view.name))(e);
        let feature_frame = renamed_features(frame, features, &names).map_err(failed)?;
        let keys = view
            .entity
            .join_keys
            .iter()
            .map(|key| KeyColumn::of(frame, key))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|message| Error::Schema {
                view: view.name.clone(),
                message: format!("join key {message}"),
            })?;
        let event = micros(frame, &view.timestamp_column).map_err(failed)?;
        let created = micros(frame, &view.created_column).map_err(failed)?;

        let mut entities = EntityIndex::for_keys(&keys);
        let mut entity_of = Vec::with_capacity(frame.height());
        visit_keys(&keys, frame.height(), |key| {
            entity_of.push(key.map_or(NO_ENTITY, |key| entities.insert(key)));
        });
        // A counting sort by entity, then a small sort within each entity.
        // Plain slices in the loops: rows without an event time are marked
        // first, so the hot loops never test validity.
        if let Some(valid) = event.downcast_as_array().validity() {
            for (entity, valid) in entity_of.iter_mut().zip(valid.iter()) {
                if !valid {
                    *entity = NO_ENTITY;
                }
            }
        }
        let event = event.downcast_as_array().values().as_slice();
        // A row without a created time loses every tie.
        let created: Vec<i64> = created.iter().map(|c| c.unwrap_or(i64::MIN)).collect();
        if IdxSize::try_from(entity_of.len()).is_err() {
            return Err(Error::Schema {
                view: view.name.clone(),
                message: "the gold table has more rows than a join can index".into(),
            });
        }
        let (starts, entries) = index_by_entity(entity_of, entities.len(), event, &created);
        Ok(PreparedView {
            view: view.clone(),
            names,
            key_kinds: keys.iter().map(KeyColumn::kind).collect(),
            entities,
            starts,
            times: entries.iter().map(|e| e.time).collect(),
            rows: entries.iter().map(|e| e.row).collect(),
            features: feature_frame,
            wanted: features.to_vec(),
            history: None,
        })
    }

    /// Values the view's request-time windows ([`FeatureView::request_windows`])
    /// at each spine row's time from `history` (the view's events) instead
    /// of taking the gold row's, which were valued at its own event. A
    /// spine row with no gold row within the TTL stays null, as online.
    pub fn with_events(mut self, history: std::sync::Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    /// The gold row matched by each spine row (null: none), in spine order.
    fn matches(
        &self,
        spine: &DataFrame,
        spine_times: &Int64Chunked,
        strictly_before: bool,
    ) -> Result<IdxCa> {
        let view = &self.view;
        let mut keys = Vec::with_capacity(view.entity.join_keys.len());
        for (key, kind) in view.entity.join_keys.iter().zip(&self.key_kinds) {
            let column = KeyColumn::of(spine, key).map_err(|message| Error::InvalidSpine {
                column: key.clone(),
                message: format!("the spine's join key {message}"),
            })?;
            if column.kind() != *kind {
                return Err(Error::InvalidSpine {
                    column: key.clone(),
                    message: format!(
                        "the spine's {key:?} holds {}, but feature view {:?} keys it by {}",
                        column.kind(),
                        view.name,
                        kind
                    ),
                });
            }
            keys.push(column);
        }
        let mut entity_of = Vec::with_capacity(spine.height());
        visit_keys(&keys, spine.height(), |key| {
            entity_of.push(
                key.and_then(|key| self.entities.get(key))
                    .unwrap_or(NO_ENTITY),
            );
        });
        let times: Vec<Option<i64>> = spine_times.iter().collect();
        let ttl = i128::from(view.ttl_micros());
        let found: Vec<Option<IdxSize>> = entity_of
            .par_iter()
            .zip(times.par_iter())
            .map(|(&entity, &at)| {
                let at = at?;
                let entity = (entity != NO_ENTITY).then_some(entity as usize)?;
                let (first, end) = (self.starts[entity], self.starts[entity + 1]);
                let times = &self.times[first..end];
                let before = if strictly_before {
                    times.partition_point(|&t| t < at)
                } else {
                    times.partition_point(|&t| t <= at)
                };
                let at_or_before = before.checked_sub(1)?;
                let age = i128::from(at) - i128::from(times[at_or_before]);
                (age <= ttl).then(|| self.rows[first + at_or_before])
            })
            .collect();
        Ok(found.into_iter().collect())
    }
}

/// The output name of each wanted feature of `view` (`view__feature` with
/// full feature names); a feature the view does not have is refused.
fn output_names(
    view: &FeatureView,
    features: &[String],
    options: RetrievalOptions,
) -> Result<Vec<String>> {
    let mut names = Vec::with_capacity(features.len());
    for feature in features {
        if !view.features.contains(feature) {
            return Err(Error::UnknownFeature(format!("{}:{feature}", view.name)));
        }
        names.push(if options.full_feature_names {
            format!("{}__{feature}", view.name)
        } else {
            feature.clone()
        });
    }
    Ok(names)
}

/// The `features` columns of `frame`, renamed to `names`.
fn renamed_features(
    frame: &DataFrame,
    features: &[String],
    names: &[String],
) -> PolarsResult<DataFrame> {
    let mut columns = Vec::with_capacity(features.len());
    for (feature, name) in features.iter().zip(names) {
        let mut column = frame.column(feature)?.clone();
        column.rename(name.as_str().into());
        columns.push(column);
    }
    DataFrame::new_infer_height(columns)
}

/// The index of the gold rows of `entities` entities (`entity_of[row]`,
/// [`NO_ENTITY`] for rows left out) with their event and created times:
/// where each entity's entries start, and the entries, each entity's
/// sorted by (event time, created time, row). A counting sort by entity,
/// then a small sort within each entity, in parallel.
fn index_by_entity(
    entity_of: Vec<u32>,
    entities: usize,
    event: &[i64],
    created: &[i64],
) -> (Vec<usize>, Vec<Entry>) {
    let mut starts = vec![0usize; entities + 1];
    for &entity in &entity_of {
        if entity != NO_ENTITY {
            starts[entity as usize + 1] += 1;
        }
    }
    for e in 1..starts.len() {
        starts[e] += starts[e - 1];
    }
    let mut next = starts.clone();
    let mut entries = vec![Entry::default(); starts[starts.len() - 1]];
    for (row, &entity) in entity_of.iter().enumerate() {
        if entity == NO_ENTITY {
            continue;
        }
        let slot = &mut next[entity as usize];
        entries[*slot] = Entry {
            time: event[row],
            created: created[row],
            row: row as IdxSize,
        };
        *slot += 1;
    }
    // The gold table's entity numbers are no longer needed: freed before
    // the sort, the widest moment of the preparation.
    drop(entity_of);
    let mut slices = Vec::with_capacity(entities);
    let mut rest = entries.as_mut_slice();
    for e in 0..entities {
        let (head, tail) = rest.split_at_mut(starts[e + 1] - starts[e]);
        slices.push(head);
        rest = tail;
    }
    slices
        .par_iter_mut()
        .for_each(|slice| slice.sort_unstable_by_key(|e| (e.time, e.created, e.row)));
    (starts, entries)
}

/// Joins prepared views onto the spine (see [`point_in_time_join`]).
pub fn join_prepared(
    spine: &Spine,
    views: &[PreparedView],
    options: RetrievalOptions,
) -> Result<DataFrame> {
    let spine_ts = spine.timestamp_column.as_str();
    let mut taken: Vec<String> = spine
        .frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    for prepared in views {
        for name in &prepared.names {
            if taken.contains(name) {
                return Err(Error::Schema {
                    view: prepared.view.name.clone(),
                    message: format!(
                        "feature column {name:?} collides with a spine column or another \
                         view's feature; use full feature names"
                    ),
                });
            }
            taken.push(name.clone());
        }
    }
    let failed = Error::polars("point-in-time join");
    let spine_ts_column = spine
        .frame
        .column(spine_ts)
        .map_err(|_| Error::InvalidSpine {
            column: spine_ts.to_string(),
            message: format!("the spine has no column {spine_ts:?} (its event timestamp)"),
        })?
        .cast(&utc_micros())
        .map_err(failed)?;
    let spine_times = spine_ts_column
        .datetime()
        .map_err(Error::polars("point-in-time join"))?
        .physical()
        .rechunk()
        .into_owned();
    let mut out = spine.frame.clone();
    out.with_column(spine_ts_column)
        .map_err(Error::polars("point-in-time join"))?;
    // Each view's features for its matched gold rows, in spine order; no
    // match gives nulls.
    for prepared in views {
        let index = prepared.matches(&spine.frame, &spine_times, options.strictly_before)?;
        let mut gathered = prepared
            .features
            .take(&index)
            .map_err(Error::polars(format!("gathering {}", prepared.view.name)))?;
        match (&prepared.view.request_windows, &prepared.history) {
            (None, _) => {}
            (Some(_), Some(history)) => windows_at_spine_times(
                prepared,
                history,
                &spine.frame,
                &spine_times,
                &index,
                options.strictly_before,
                &mut gathered,
            )?,
            (Some(_), None) => {
                return Err(Error::Internal(format!(
                    "feature view {} values its windows at read time but was prepared without its events",
                    prepared.view.name
                )));
            }
        }
        out.hstack_mut(gathered.columns())
            .map_err(Error::polars("point-in-time join"))?;
    }
    Ok(out)
}

/// Replaces the request-time features of `gathered` (one row per spine
/// row) by their values at the spine rows' times.
fn windows_at_spine_times(
    prepared: &PreparedView,
    history: &History,
    spine: &DataFrame,
    spine_times: &Int64Chunked,
    index: &IdxCa,
    strictly_before: bool,
    gathered: &mut DataFrame,
) -> Result<()> {
    let plan = history.plan();
    let targets: Vec<(usize, &String)> = prepared
        .wanted
        .iter()
        .zip(&prepared.names)
        .filter_map(|(feature, out)| {
            plan.names
                .iter()
                .position(|n| n == feature)
                .map(|i| (i, out))
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let keys = entity_keys(spine, &prepared.view.entity.join_keys).map_err(|message| {
        Error::InvalidSpine {
            column: prepared.view.entity.join_keys.join(", "),
            message,
        }
    })?;
    let rows: Vec<(Option<&String>, Option<i64>)> = keys
        .iter()
        .zip(spine_times.iter())
        .zip(index.iter())
        .map(|((key, t), matched)| match matched {
            Some(_) => (
                key.as_ref(),
                t.map(|t| if strictly_before { t - 1 } else { t }),
            ),
            None => (None, None),
        })
        .collect();
    let chunks: Vec<Vec<Vec<Option<f64>>>> = rows
        .par_chunks(8192)
        .map(|chunk| {
            let mut aggs = Vec::new();
            let mut out = Vec::new();
            let mut columns = vec![Vec::with_capacity(chunk.len()); targets.len()];
            for (key, t) in chunk {
                match (key, t) {
                    (Some(key), Some(t)) => {
                        history.aggregates(key, *t, &mut aggs);
                        plan.finish(&aggs, &|_| None, &mut out);
                        for (column, (at, _)) in columns.iter_mut().zip(&targets) {
                            column.push(out[*at]);
                        }
                    }
                    _ => columns.iter_mut().for_each(|c| c.push(None)),
                }
            }
            columns
        })
        .collect();
    for (i, (_, name)) in targets.iter().enumerate() {
        let values: Float64Chunked = chunks
            .iter()
            .flat_map(|chunk| chunk[i].iter().copied())
            .collect();
        gathered
            .with_column(values.with_name(name.as_str().into()).into_column())
            .map_err(Error::polars(format!(
                "valuing {} at the spine's times",
                prepared.view.name
            )))?;
    }
    Ok(())
}

/// Marks a row whose key is null or unknown.
const NO_ENTITY: u32 = u32::MAX;

/// One gold row in the index.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    time: i64,
    created: i64,
    row: IdxSize,
}

/// What a join key column holds once normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Integer,
    String,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Integer => "integers",
            KeyKind::String => "strings",
        })
    }
}

/// A join key column: any integer type read as `i64`, strings (and
/// categoricals) as strings.
enum KeyColumn {
    Integer(Int64Chunked),
    String(StringChunked),
}

impl KeyColumn {
    /// Column `name` of `frame` as a key, or why it cannot be one.
    fn of(frame: &DataFrame, name: &str) -> std::result::Result<Self, String> {
        let column = frame
            .column(name)
            .map_err(|_| format!("{name:?} is missing"))?;
        let dtype = column.dtype();
        let cast = |to: &DataType| {
            column
                .strict_cast(to)
                .map_err(|e| format!("{name:?} ({dtype}) cannot be read as {to}: {e}"))
        };
        if dtype.is_integer() {
            let column = cast(&DataType::Int64)?;
            let values = column.i64().map_err(|e| format!("{name:?}: {e}"))?;
            Ok(KeyColumn::Integer(values.rechunk().into_owned()))
        } else if matches!(dtype, DataType::String | DataType::Categorical(..)) {
            let column = cast(&DataType::String)?;
            let values = column.str().map_err(|e| format!("{name:?}: {e}"))?;
            Ok(KeyColumn::String(values.rechunk().into_owned()))
        } else {
            Err(format!(
                "{name:?} holds {dtype}; entity keys are integers or strings"
            ))
        }
    }

    fn kind(&self) -> KeyKind {
        match self {
            KeyColumn::Integer(_) => KeyKind::Integer,
            KeyColumn::String(_) => KeyKind::String,
        }
    }
}

/// A row's entity key as the index hashes it.
#[derive(Clone, Copy)]
enum KeyRef<'a> {
    /// A single integer key.
    Integer(i64),
    /// Any other key: its parts encoded one after the other.
    Encoded(&'a [u8]),
}

/// Calls `f` with each row's key (`None` when a part is null), in order.
fn visit_keys(columns: &[KeyColumn], height: usize, mut f: impl FnMut(Option<KeyRef<'_>>)) {
    if let [KeyColumn::Integer(values)] = columns {
        values.iter().for_each(|v| f(v.map(KeyRef::Integer)));
        return;
    }
    let mut buffer = Vec::new();
    'rows: for row in 0..height {
        buffer.clear();
        for column in columns {
            // Parts are tagged and strings length-prefixed, so different
            // keys never encode alike.
            match column {
                KeyColumn::Integer(values) => match values.get(row) {
                    Some(v) => {
                        buffer.push(b'i');
                        buffer.extend_from_slice(&v.to_le_bytes());
                    }
                    None => {
                        f(None);
                        continue 'rows;
                    }
                },
                KeyColumn::String(values) => match values.get(row) {
                    Some(s) => {
                        buffer.push(b's');
                        buffer.extend_from_slice(&(s.len() as u64).to_le_bytes());
                        buffer.extend_from_slice(s.as_bytes());
                    }
                    None => {
                        f(None);
                        continue 'rows;
                    }
                },
            }
        }
        f(Some(KeyRef::Encoded(&buffer)));
    }
}

type FoldMap<K> = std::collections::HashMap<K, u32, foldhash::fast::RandomState>;

/// Entity keys numbered in order of first appearance.
#[derive(Debug, Clone)]
enum EntityIndex {
    Integer(FoldMap<i64>),
    Encoded(FoldMap<Box<[u8]>>),
}

impl EntityIndex {
    fn for_keys(keys: &[KeyColumn]) -> Self {
        match keys {
            [KeyColumn::Integer(_)] => EntityIndex::Integer(FoldMap::default()),
            _ => EntityIndex::Encoded(FoldMap::default()),
        }
    }

    fn len(&self) -> usize {
        match self {
            EntityIndex::Integer(map) => map.len(),
            EntityIndex::Encoded(map) => map.len(),
        }
    }

    /// The entity's number, numbering it if new.
    fn insert(&mut self, key: KeyRef<'_>) -> u32 {
        let next = self.len() as u32;
        match (self, key) {
            (EntityIndex::Integer(map), KeyRef::Integer(k)) => *map.entry(k).or_insert(next),
            (EntityIndex::Encoded(map), KeyRef::Encoded(k)) => match map.get(k) {
                Some(&e) => e,
                None => {
                    map.insert(k.into(), next);
                    next
                }
            },
            // Both sides of a join visit keys of the same layout.
            _ => NO_ENTITY,
        }
    }

    fn get(&self, key: KeyRef<'_>) -> Option<u32> {
        match (self, key) {
            (EntityIndex::Integer(map), KeyRef::Integer(k)) => map.get(&k).copied(),
            (EntityIndex::Encoded(map), KeyRef::Encoded(k)) => map.get(k).copied(),
            _ => None,
        }
    }
}

/// Timestamps are compared in UTC microseconds.
fn utc_micros() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

/// Column `name` of `frame` as UTC microseconds.
fn micros(frame: &DataFrame, name: &str) -> PolarsResult<Int64Chunked> {
    let column = frame.column(name)?.cast(&utc_micros())?;
    Ok(column.datetime()?.physical().rechunk().into_owned())
}

#[cfg(test)]
mod tests;
