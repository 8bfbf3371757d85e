//! Moving frames between polars and arrow-rs (which deltalake speaks).
//!
//! polars carries its own Arrow implementation, so frames cross through the
//! Arrow IPC format in memory: one copy, no unsafe code, and exact types.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use polars::prelude::*;

use crate::error::{Error, Result};

/// Converts a polars frame to Arrow record batches whose types Delta accepts:
/// strings as `Utf8`, timestamps in microseconds with a UTC zone. The schema
/// is returned too, since a frame without rows gives no batches.
pub fn frame_to_batches(df: &DataFrame) -> Result<(SchemaRef, Vec<RecordBatch>)> {
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
    let schema = delta_schema(&reader.schema());
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_err("reading polars IPC batches"))?;
    let batches = batches
        .iter()
        .map(|b| delta_compatible(b, &schema).map_err(arrow_err("casting to Delta types")))
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
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

fn delta_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), delta_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

fn delta_compatible(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow_cast::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
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
        let (schema, batches) = frame_to_batches(&df).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
        let back = batches_to_frame(&schema, &batches).unwrap();
        assert!(back.equals_missing(&df), "{back} != {df}");
    }
}
