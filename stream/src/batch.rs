//! The events of one bronze commit, kept column by column (in the arrow
//! buffers the bronze frame is made of) until they land.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use feature_store::pipeline::bronze::{
    INGESTED_AT, SOURCE_FILE, SOURCE_ROW, STREAM_ERROR, STREAM_RAW,
};
use polars::prelude::*;

/// Events waiting for their bronze commit.
pub(crate) struct BronzeBatch {
    topic: String,
    names: Vec<String>,
    columns: Vec<StringChunkedBuilder>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    ingested: Vec<i64>,
    errors: StringChunkedBuilder,
    raws: StringChunkedBuilder,
    /// Each partition's offsets in the batch, `[first, next)`.
    ranges: BTreeMap<i32, [i64; 2]>,
    /// When the oldest event of the batch arrived.
    since: Option<Instant>,
}

fn builder(name: &str) -> StringChunkedBuilder {
    StringChunkedBuilder::new(name.into(), 1024)
}

impl BronzeBatch {
    /// An empty batch of `topic`'s events with the declared `names`.
    pub(crate) fn new(topic: &str, names: Vec<String>) -> Self {
        BronzeBatch {
            topic: topic.to_string(),
            columns: names.iter().map(|n| builder(n)).collect(),
            names,
            partitions: Vec::new(),
            offsets: Vec::new(),
            ingested: Vec::new(),
            errors: builder(STREAM_ERROR),
            raws: builder(STREAM_RAW),
            ranges: BTreeMap::new(),
            since: None,
        }
    }

    /// The declared column names, in order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the batch holds no event.
    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// How long the oldest event has waited.
    pub(crate) fn age(&self) -> std::time::Duration {
        self.since.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// The next offset the batch expects of `partition` (`None`: it holds
    /// none of its events).
    pub(crate) fn next_offset(&self, partition: i32) -> Option<i64> {
        self.ranges.get(&partition).map(|r| r[1])
    }

    /// Each partition's `[first, next)` offsets in the batch.
    pub(crate) fn ranges(&self) -> &BTreeMap<i32, [i64; 2]> {
        &self.ranges
    }

    /// Adds a decoded event (`values` in declared order).
    pub(crate) fn push(
        &mut self,
        partition: i32,
        offset: i64,
        ingested_micros: i64,
        values: Vec<Option<Cow<'_, str>>>,
    ) {
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.append_option(value);
        }
        self.errors.append_null();
        self.raws.append_null();
        self.mark(partition, offset, ingested_micros);
    }

    /// Adds an event that did not decode: no values, the reason and the
    /// payload as it arrived (`raw`: as text).
    pub(crate) fn push_undecodable(
        &mut self,
        partition: i32,
        offset: i64,
        ingested_micros: i64,
        reason: &str,
        raw: Option<&str>,
    ) {
        for column in &mut self.columns {
            column.append_null();
        }
        self.errors.append_value(reason);
        self.raws.append_option(raw);
        self.mark(partition, offset, ingested_micros);
    }

    fn mark(&mut self, partition: i32, offset: i64, ingested_micros: i64) {
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.ingested.push(ingested_micros);
        self.ranges
            .entry(partition)
            .and_modify(|r| r[1] = offset + 1)
            .or_insert([offset, offset + 1]);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        for (column, name) in self.columns.iter_mut().zip(&self.names) {
            *column = builder(name);
        }
        self.errors = builder(STREAM_ERROR);
        self.raws = builder(STREAM_RAW);
        self.partitions.clear();
        self.offsets.clear();
        self.ingested.clear();
        self.ranges.clear();
        self.since = None;
    }

    /// The bronze rows, taken out of the batch (which keeps its offsets
    /// until [`clear`](Self::clear)): the declared columns as text, then
    /// where each event came from (`_source_file` = `topic/partition`,
    /// `_source_row` = its offset), when it was consumed, and for events
    /// that did not decode the reason and the payload.
    pub(crate) fn take_frame(&mut self) -> PolarsResult<DataFrame> {
        let mut columns: Vec<Column> = self
            .columns
            .iter_mut()
            .zip(&self.names)
            .map(|(column, name)| {
                std::mem::replace(column, builder(name))
                    .finish()
                    .into_series()
                    .into_column()
            })
            .collect();
        let files: Vec<String> = self
            .ranges
            .keys()
            .map(|p| format!("{}/{p}", self.topic))
            .collect();
        let file_of = |p: &i32| {
            let at = self.ranges.keys().position(|k| k == p).unwrap_or(0);
            files[at].as_str()
        };
        let mut sources = builder(SOURCE_FILE);
        for partition in &self.partitions {
            sources.append_value(file_of(partition));
        }
        columns.push(sources.finish().into_series().into_column());
        columns.push(Column::new(SOURCE_ROW.into(), self.offsets.clone()));
        columns.push(Column::new(INGESTED_AT.into(), self.ingested.clone()).cast(
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        )?);
        for (column, name) in [
            (&mut self.errors, STREAM_ERROR),
            (&mut self.raws, STREAM_RAW),
        ] {
            columns.push(
                std::mem::replace(column, builder(name))
                    .finish()
                    .into_series()
                    .into_column(),
            );
        }
        DataFrame::new_infer_height(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_offsets_per_partition() {
        let mut batch = BronzeBatch::new("t", vec!["a".into()]);
        batch.push(0, 10, 5, vec![Some(Cow::Borrowed("1"))]);
        batch.push(1, 3, 6, vec![Some(Cow::Owned("2".into()))]);
        batch.push_undecodable(0, 11, 7, "bad", Some("x"));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.ranges().get(&0), Some(&[10, 12]));
        assert_eq!(batch.next_offset(1), Some(4));
        let frame = batch.take_frame().unwrap();
        assert_eq!(frame.height(), 3);
        let files = frame.column(SOURCE_FILE).unwrap().str().unwrap().clone();
        assert_eq!(files.get(1), Some("t/1"));
        assert_eq!(files.get(2), Some("t/0"));
        assert_eq!(frame.column("a").unwrap().str().unwrap().get(1), Some("2"));
        assert_eq!(frame.column(STREAM_ERROR).unwrap().null_count(), 2);
        assert_eq!(
            frame.column(STREAM_RAW).unwrap().str().unwrap().get(2),
            Some("x")
        );
        assert_eq!(
            frame.column(SOURCE_ROW).unwrap().i64().unwrap().get(2),
            Some(11)
        );
        batch.clear();
        assert!(batch.is_empty() && batch.ranges().is_empty());
        assert_eq!(batch.take_frame().unwrap().height(), 0);
    }
}
