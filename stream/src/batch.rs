//! The events of one bronze commit, kept column by column until they land.

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
    columns: Vec<Vec<Option<String>>>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    ingested: Vec<i64>,
    errors: Vec<Option<String>>,
    raws: Vec<Option<String>>,
    /// Each partition's offsets in the batch, `[first, next)`.
    ranges: BTreeMap<i32, [i64; 2]>,
    /// When the oldest event of the batch arrived.
    since: Option<Instant>,
}

impl BronzeBatch {
    /// An empty batch of `topic`'s events with the declared `names`.
    pub(crate) fn new(topic: &str, names: Vec<String>) -> Self {
        BronzeBatch {
            topic: topic.to_string(),
            columns: vec![Vec::new(); names.len()],
            names,
            partitions: Vec::new(),
            offsets: Vec::new(),
            ingested: Vec::new(),
            errors: Vec::new(),
            raws: Vec::new(),
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
        values: &mut Vec<Option<String>>,
    ) {
        for (column, value) in self.columns.iter_mut().zip(values.drain(..)) {
            column.push(value);
        }
        self.errors.push(None);
        self.raws.push(None);
        self.mark(partition, offset, ingested_micros);
    }

    /// Adds an event that did not decode: no values, the reason and the
    /// payload as it arrived.
    pub(crate) fn push_undecodable(
        &mut self,
        partition: i32,
        offset: i64,
        ingested_micros: i64,
        reason: String,
        payload: Option<&[u8]>,
    ) {
        for column in &mut self.columns {
            column.push(None);
        }
        self.errors.push(Some(reason));
        self.raws
            .push(payload.map(|p| String::from_utf8_lossy(p).into_owned()));
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

    /// Drops every event of `partition` (it was revoked before landing).
    pub(crate) fn drop_partition(&mut self, partition: i32) {
        if self.ranges.remove(&partition).is_none() {
            return;
        }
        let keep: Vec<bool> = self.partitions.iter().map(|p| *p != partition).collect();
        let filter = |v: &mut Vec<Option<String>>| {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        };
        for column in &mut self.columns {
            filter(column);
        }
        filter(&mut self.errors);
        filter(&mut self.raws);
        let mut i = 0;
        self.offsets.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut i = 0;
        self.ingested.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.partitions.retain(|p| *p != partition);
        if self.partitions.is_empty() {
            self.since = None;
        }
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        for column in &mut self.columns {
            column.clear();
        }
        self.partitions.clear();
        self.offsets.clear();
        self.ingested.clear();
        self.errors.clear();
        self.raws.clear();
        self.ranges.clear();
        self.since = None;
    }

    /// The bronze rows: the declared columns as text, then where each
    /// event came from (`_source_file` = `topic/partition`, `_source_row`
    /// = its offset), when it was consumed, and for events that did not
    /// decode the reason and the payload.
    pub(crate) fn frame(&self) -> PolarsResult<DataFrame> {
        let mut columns: Vec<Column> = self
            .names
            .iter()
            .zip(&self.columns)
            .map(|(name, values)| {
                Column::new(
                    name.as_str().into(),
                    values.iter().map(Option::as_deref).collect::<Vec<_>>(),
                )
            })
            .collect();
        let files: Vec<String> = self
            .partitions
            .iter()
            .map(|p| format!("{}/{p}", self.topic))
            .collect();
        columns.push(Column::new(SOURCE_FILE.into(), files));
        columns.push(Column::new(SOURCE_ROW.into(), self.offsets.clone()));
        columns.push(Column::new(INGESTED_AT.into(), self.ingested.clone()).cast(
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        )?);
        columns.push(Column::new(
            STREAM_ERROR.into(),
            self.errors.iter().map(Option::as_deref).collect::<Vec<_>>(),
        ));
        columns.push(Column::new(
            STREAM_RAW.into(),
            self.raws.iter().map(Option::as_deref).collect::<Vec<_>>(),
        ));
        DataFrame::new_infer_height(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_offsets_per_partition_and_drops_a_revoked_one() {
        let mut batch = BronzeBatch::new("t", vec!["a".into()]);
        let mut values = vec![Some("1".to_string())];
        batch.push(0, 10, 5, &mut values);
        values.push(Some("2".into()));
        batch.push(1, 3, 6, &mut values);
        batch.push_undecodable(0, 11, 7, "bad".into(), Some(b"x"));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.ranges().get(&0), Some(&[10, 12]));
        assert_eq!(batch.next_offset(1), Some(4));
        let frame = batch.frame().unwrap();
        assert_eq!(frame.height(), 3);
        assert_eq!(
            frame.column(SOURCE_FILE).unwrap().str().unwrap().get(1),
            Some("t/1")
        );
        assert_eq!(frame.column(STREAM_ERROR).unwrap().null_count(), 2);
        batch.drop_partition(0);
        assert_eq!(batch.len(), 1);
        let frame = batch.frame().unwrap();
        assert_eq!(frame.column("a").unwrap().str().unwrap().get(0), Some("2"));
        assert_eq!(
            frame.column(SOURCE_ROW).unwrap().i64().unwrap().get(0),
            Some(3)
        );
        batch.clear();
        assert!(batch.is_empty() && batch.ranges().is_empty());
    }
}
