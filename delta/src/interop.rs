//! Moving frames between polars and arrow-rs (which deltalake and
//! arrow-flight speak).
//!
//! polars carries its own Arrow implementation. Frames go to arrow-rs
//! through the Arrow C data interface, which both implement: the column
//! buffers are shared, not copied (only strings, which polars keeps as
//! views, are rewritten to the classic layout), and the same holds for
//! batches coming back.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use polars::prelude::*;

use crate::error::{Error, Result};

/// Converts a polars frame to Arrow record batches whose types Delta accepts:
/// strings as `Utf8`, timestamps in microseconds with a UTC zone. The schema
/// is returned too, since a frame without rows gives no batches.
pub fn frame_to_batches(df: &DataFrame) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let arrow_err = |context: &str| {
        let context = context.to_string();
        move |source| Error::Arrow { context, source }
    };
    let mut df = df.clone();
    // Each batch takes the same chunk of every column.
    df.align_chunks_par();
    let polars_fields: Vec<polars_arrow::datatypes::Field> = df
        .columns()
        .iter()
        .map(|c| c.field().to_arrow(CompatLevel::oldest()))
        .collect();
    let fields = polars_fields
        .iter()
        .map(|field| {
            let exported = c_schema(field);
            Field::try_from(&exported).map_err(arrow_err("importing a polars field"))
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = delta_schema(&Schema::new(fields.clone()));
    let native = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for chunk in df.iter_chunks(CompatLevel::oldest(), true) {
        let columns = chunk
            .into_arrays()
            .into_iter()
            .zip(&polars_fields)
            .map(|(array, field)| {
                let exported = c_schema(field);
                let array = polars_arrow::ffi::export_array_to_c(array);
                // SAFETY: polars' `ArrowArray` and arrow-rs' `FFI_ArrowArray`
                // are both `#[repr(C)]` definitions of the C data interface's
                // `ArrowArray` struct (same fields, same order; `transmute`
                // checks the sizes). Ownership moves with the value: arrow-rs
                // calls the release callback polars set when the array drops.
                let array: arrow::ffi::FFI_ArrowArray = unsafe { std::mem::transmute(array) };
                // SAFETY: `array` was just exported with the type described by
                // `exported`, which outlives the call.
                let data = unsafe { arrow::ffi::from_ffi(array, &exported) }
                    .map_err(arrow_err("importing a polars column"))?;
                Ok(arrow_array::make_array(data))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(native.clone(), columns)
            .map_err(arrow_err("assembling a batch"))?;
        batches
            .push(delta_compatible(&batch, &schema).map_err(arrow_err("casting to Delta types"))?);
    }
    Ok((schema, batches))
}

/// A polars field exported to the C data interface, as arrow-rs reads it.
fn c_schema(field: &polars_arrow::datatypes::Field) -> arrow::ffi::FFI_ArrowSchema {
    let exported = polars_arrow::ffi::export_field_to_c(field);
    // SAFETY: as for arrays: both types are `#[repr(C)]` definitions of the
    // C data interface's `ArrowSchema`; arrow-rs releases it through the
    // callback polars set.
    unsafe { std::mem::transmute(exported) }
}

/// Converts Arrow record batches to one polars frame (one chunk per batch;
/// no rows copied, except strings into polars' layout).
pub fn batches_to_frame(schema: &Schema, batches: &[RecordBatch]) -> Result<DataFrame> {
    let arrow_err = |context: String| move |source| Error::Arrow { context, source };
    let polars_err = |context: String| Error::polars(context);
    let mut chunks: Vec<Vec<Box<dyn polars_arrow::array::Array>>> =
        vec![Vec::with_capacity(batches.len()); schema.fields().len()];
    let mut dtypes = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let exported = arrow::ffi::FFI_ArrowSchema::try_from(field.as_ref())
            .map_err(arrow_err(format!("exporting column {:?}", field.name())))?;
        // SAFETY: arrow-rs' `FFI_ArrowSchema` and polars' `ArrowSchema` are
        // both `#[repr(C)]` definitions of the C data interface's
        // `ArrowSchema` (`transmute` checks the sizes); polars releases it
        // through the callback arrow-rs set.
        let exported: polars_arrow::ffi::ArrowSchema = unsafe { std::mem::transmute(exported) };
        // SAFETY: `exported` is a valid schema arrow-rs just produced.
        let imported = unsafe { polars_arrow::ffi::import_field_from_c(&exported) }
            .map_err(polars_err(format!("importing column {:?}", field.name())))?;
        dtypes.push(imported.dtype);
    }
    for batch in batches {
        for (i, column) in batch.columns().iter().enumerate() {
            let name = schema.field(i).name();
            let array = arrow::ffi::FFI_ArrowArray::new(&column.to_data());
            // SAFETY: as for the schema: both are `#[repr(C)]` definitions
            // of the C data interface's `ArrowArray`; polars releases the
            // array (and with it arrow-rs' buffers) through arrow-rs'
            // callback.
            let array: polars_arrow::ffi::ArrowArray = unsafe { std::mem::transmute(array) };
            // SAFETY: `array` holds data of the type `dtypes[i]` describes:
            // the batch's schema is `schema`.
            let imported =
                unsafe { polars_arrow::ffi::import_array_from_c(array, dtypes[i].clone()) }
                    .map_err(polars_err(format!("importing column {name:?}")))?;
            chunks[i].push(imported);
        }
    }
    let columns = schema
        .fields()
        .iter()
        .zip(chunks)
        .zip(&dtypes)
        .map(|((field, chunks), dtype)| {
            let name: PlSmallStr = field.name().as_str().into();
            if chunks.is_empty() {
                let dtype = polars::prelude::DataType::from_arrow_dtype(dtype);
                return Ok(Column::from(Series::new_empty(name, &dtype)));
            }
            Series::try_from((name, chunks))
                .map(Column::from)
                .map_err(polars_err(format!("assembling column {:?}", field.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    DataFrame::new_infer_height(columns).map_err(polars_err("assembling a frame".into()))
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

    #[test]
    fn chunked_frames_with_times_nulls_and_no_rows_convert() {
        let utc = polars::prelude::DataType::Datetime(
            polars::prelude::TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        );
        let part = |ids: &[i64], names: &[Option<&str>]| {
            DataFrame::new_infer_height(vec![
                Series::new("id".into(), ids).into(),
                Series::new("name".into(), names).into(),
                Series::new("at".into(), ids).cast(&utc).unwrap().into(),
            ])
            .unwrap()
        };
        // Two chunks per column, and one column chunked differently.
        let mut df = part(&[1, 2], &[Some("a"), None]);
        df.vstack_mut(&part(&[3], &[Some("long string past the inline size")]))
            .unwrap();
        df.with_column(Series::new("x".into(), [Some(0.5f64), None, Some(2.0)]).into())
            .unwrap();
        let (schema, batches) = frame_to_batches(&df).unwrap();
        assert_eq!(
            schema.field(2).data_type(),
            &arrow_schema::DataType::Timestamp(
                arrow_schema::TimeUnit::Microsecond,
                Some("UTC".into())
            )
        );
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let back = batches_to_frame(&schema, &batches).unwrap();
        assert!(back.equals_missing(&df), "{back} != {df}");

        let empty = df.head(Some(0));
        let (schema, batches) = frame_to_batches(&empty).unwrap();
        assert_eq!(schema.fields().len(), 4);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }
}
