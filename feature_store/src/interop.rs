//! Moving frames between polars and arrow-rs (which deltalake speaks).
//!
//! polars carries its own Arrow implementation, so frames cross through the
//! Arrow IPC format in memory: one copy, no unsafe code, and exact types.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use polars::prelude::*;

use crate::error::{Error, Result};

/// Converts a polars frame to Arrow record batches whose types Delta accepts:
/// strings as `Utf8`, timestamps in microseconds with a UTC zone.
pub fn frame_to_batches(df: &DataFrame) -> Result<Vec<RecordBatch>> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    IpcWriter::new(&mut buf)
        .with_compat_level(CompatLevel::oldest())
        .finish(&mut df)
        .map_err(Error::polars("writing a frame as Arrow IPC"))?;
    let arrow_err = |context: &str| {
        let context = context.to_string();
        move |source| Error::Arrow { context, source }
    };
    let reader = arrow_ipc::reader::FileReader::try_new(Cursor::new(buf), None)
        .map_err(arrow_err("reading polars IPC"))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_err("reading polars IPC batches"))?;
    batches
        .iter()
        .map(|b| delta_compatible(b).map_err(arrow_err("casting to Delta types")))
        .collect()
}

/// Converts Arrow record batches to one polars frame.
pub fn batches_to_frame(schema: &Schema, batches: &[RecordBatch]) -> Result<DataFrame> {
    let arrow_err = |source| Error::Arrow {
        context: "writing batches as Arrow IPC".into(),
        source,
    };
    let mut buf = Vec::new();
    {
        let mut writer =
            arrow_ipc::writer::FileWriter::try_new(&mut buf, schema).map_err(arrow_err)?;
        for batch in batches {
            writer.write(batch).map_err(arrow_err)?;
        }
        writer.finish().map_err(arrow_err)?;
    }
    IpcReader::new(Cursor::new(buf))
        .finish()
        .map_err(Error::polars("reading Arrow IPC into polars"))
}

fn delta_type(dt: &DataType) -> DataType {
    match dt {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(tz.clone().unwrap_or_else(|| "UTC".into())),
        ),
        DataType::Dictionary(_, value) => delta_type(value),
        other => other.clone(),
    }
}

fn delta_compatible(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let target = delta_type(field.data_type());
        let column = if &target == field.data_type() {
            column.clone()
        } else {
            arrow_cast::cast(column, &target)?
        };
        fields.push(Field::new(field.name(), target, field.is_nullable()));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_the_round_trip() {
        let df = df!(
            "id" => [1i64, 2, 3],
            "name" => ["a", "b", "c"],
            "x" => [Some(1.5f64), None, Some(3.0)],
        )
        .unwrap();
        let batches = frame_to_batches(&df).unwrap();
        assert_eq!(batches[0].schema().field(1).data_type(), &DataType::Utf8);
        let back = batches_to_frame(&batches[0].schema(), &batches).unwrap();
        assert!(back.equals_missing(&df), "{back} != {df}");
    }
}
