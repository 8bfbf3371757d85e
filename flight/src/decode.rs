//! Pushed record batches decoded and validated into push rows.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};

use feature_store::error::Error;
use feature_store::online::FeatureValue;
use feature_store::online::push::{
    KeyValue, MAX_PUSH_ROWS, PushRow, RejectedRow, check_columns, coerce,
};
use feature_store::schema::FeatureView;

/// A column of a pushed batch, converted to one of the types rows are read
/// from.
pub(crate) enum Cells {
    Int(ArrayRef),
    Float(ArrayRef),
    Bool(ArrayRef),
    Str(ArrayRef),
    /// Microseconds since the epoch (UTC).
    Micros(ArrayRef),
}

impl Cells {
    /// Reads column `name` of `batch` for a `role` ("join key", "timestamp"
    /// or "feature").
    pub(crate) fn read(
        batch: &RecordBatch,
        name: &str,
        role: Role,
    ) -> Result<Option<Cells>, String> {
        let Some(column) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let cast = |to: &DataType| {
            arrow_cast::cast(column, to).map_err(|e| format!("column {name:?}: {e}"))
        };
        let dtype = column.data_type();
        let unsupported = || {
            format!(
                "column {name:?} is {dtype}; a {} must be {}",
                role.name(),
                role.expected()
            )
        };
        let text = matches!(
            dtype,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
        );
        Ok(Some(match role {
            Role::Key if dtype.is_integer() => Cells::Int(cast(&DataType::Int64)?),
            Role::Key if text => Cells::Str(cast(&DataType::Utf8)?),
            Role::Timestamp => match dtype {
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                    // To UTC keeps a zoned timestamp's instant; a naive one
                    // is read as UTC.
                    Cells::Micros(cast(&DataType::Timestamp(
                        TimeUnit::Microsecond,
                        Some("UTC".into()),
                    ))?)
                }
                _ if text => Cells::Str(cast(&DataType::Utf8)?),
                _ => return Err(unsupported()),
            },
            Role::Feature if dtype.is_integer() => Cells::Int(cast(&DataType::Int64)?),
            Role::Feature if dtype.is_floating() || matches!(dtype, DataType::Decimal128(..)) => {
                Cells::Float(cast(&DataType::Float64)?)
            }
            Role::Feature if *dtype == DataType::Boolean => Cells::Bool(column.clone()),
            Role::Feature if text => Cells::Str(cast(&DataType::Utf8)?),
            Role::Feature if *dtype == DataType::Null => Cells::Float(cast(&DataType::Float64)?),
            _ => return Err(unsupported()),
        }))
    }

    pub(crate) fn value(&self, row: usize) -> FeatureValue {
        let array: &ArrayRef = match self {
            Cells::Int(a) | Cells::Float(a) | Cells::Bool(a) | Cells::Str(a) | Cells::Micros(a) => {
                a
            }
        };
        if array.is_null(row) {
            return FeatureValue::Null;
        }
        match self {
            Cells::Int(a) => FeatureValue::Int(a.as_primitive::<Int64Type>().value(row)),
            Cells::Float(a) => FeatureValue::Float(a.as_primitive::<Float64Type>().value(row)),
            Cells::Bool(a) => FeatureValue::Bool(a.as_boolean().value(row)),
            Cells::Str(a) => FeatureValue::Str(a.as_string::<i32>().value(row).into()),
            Cells::Micros(a) => {
                FeatureValue::Int(a.as_primitive::<TimestampMicrosecondType>().value(row))
            }
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Role {
    Key,
    Timestamp,
    Feature,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Key => "join key",
            Role::Timestamp => "timestamp",
            Role::Feature => "feature",
        }
    }

    pub(crate) fn expected(self) -> &'static str {
        match self {
            Role::Key => "an integer or a string",
            Role::Timestamp => "a timestamp, a date or an RFC 3339 string",
            Role::Feature => "a number, a boolean or a string",
        }
    }
}

/// Validates the rows of `batch` (whose first row is row `first_row` of the
/// stream) against `view`.
pub(crate) fn batch_rows(
    view: &FeatureView,
    batch: &RecordBatch,
    first_row: usize,
    allow_partial: bool,
    latest_event_micros: i64,
) -> Result<(Vec<PushRow>, Vec<RejectedRow>), Error> {
    let schema = batch.schema();
    check_columns(view, schema.fields().iter().map(|f| f.name().as_str()))?;
    if batch.num_rows() > MAX_PUSH_ROWS {
        return Err(invalid(
            view,
            format!(
                "{} rows in one record batch; the limit is {MAX_PUSH_ROWS}",
                batch.num_rows()
            ),
        ));
    }
    let columns = PushColumns::read(view, batch)?;
    let now = feature_store::online::push::now_micros();
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut rejected = Vec::new();
    for row in 0..batch.num_rows() {
        match columns.row(view, row, now, latest_event_micros) {
            Ok(parsed) => rows.push(parsed),
            Err(reason) if allow_partial => rejected.push(RejectedRow {
                row: first_row + row,
                reason,
            }),
            Err(reason) => {
                return Err(invalid(view, format!("row {}: {reason}", first_row + row)));
            }
        }
    }
    Ok((rows, rejected))
}

/// A push to `view` refused, saying why.
fn invalid(view: &FeatureView, message: String) -> Error {
    Error::InvalidPush {
        view: view.name.clone(),
        message,
    }
}

/// The columns of a pushed batch that a view reads, converted once for all
/// its rows.
struct PushColumns<'a> {
    /// Each join key with its column, in the view's key order.
    keys: Vec<(&'a String, Cells)>,
    event: Cells,
    created: Option<Cells>,
    /// Each feature with its declared type (empty: undeclared) and column.
    features: Vec<(&'a String, String, Cells)>,
}

impl<'a> PushColumns<'a> {
    fn read(view: &'a FeatureView, batch: &RecordBatch) -> Result<Self, Error> {
        let read = |name: &str, role| Cells::read(batch, name, role).map_err(|m| invalid(view, m));
        let missing = |name: &str| invalid(view, format!("no column {name:?}"));
        let keys = view
            .entity
            .join_keys
            .iter()
            .map(|k| Ok((k, read(k, Role::Key)?.ok_or_else(|| missing(k))?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let event = read(&view.timestamp_column, Role::Timestamp)?
            .ok_or_else(|| missing(&view.timestamp_column))?;
        let created = read(&view.created_column, Role::Timestamp)?;
        let features = view
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let cells = read(f, Role::Feature)?.ok_or_else(|| missing(f))?;
                let declared = view.feature_types.get(i).cloned().unwrap_or_default();
                Ok((f, declared, cells))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(PushColumns {
            keys,
            event,
            created,
            features,
        })
    }

    /// Row `row` as a push row, or why it cannot be one; `now` stands for a
    /// missing created time.
    fn row(
        &self,
        view: &FeatureView,
        row: usize,
        now: i64,
        latest: i64,
    ) -> Result<PushRow, String> {
        let mut key_values = Vec::with_capacity(self.keys.len());
        for (name, cells) in &self.keys {
            key_values.push(match cells.value(row) {
                FeatureValue::Int(v) => KeyValue::Int(v),
                FeatureValue::Str(s) => KeyValue::text(name, &s)?,
                _ => return Err(format!("{name}: a join key cannot be null")),
            });
        }
        let time = |name: &str, cells: &Cells| -> Result<Option<i64>, String> {
            match cells.value(row) {
                FeatureValue::Null => Ok(None),
                FeatureValue::Int(micros) => Ok(Some(micros)),
                FeatureValue::Str(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| Some(t.timestamp_micros()))
                    .map_err(|_| format!("{name}: {s:?} is not an RFC 3339 timestamp")),
                _ => Err(format!("{name}: not a timestamp")),
            }
        };
        let event_micros = time(&view.timestamp_column, &self.event)?.ok_or_else(|| {
            format!(
                "{}: the event timestamp cannot be null",
                view.timestamp_column
            )
        })?;
        let event_micros =
            feature_store::online::push::check_time(&view.timestamp_column, event_micros, latest)?;
        let created_micros = match &self.created {
            Some(cells) => time(&view.created_column, cells)?.unwrap_or(now),
            None => now,
        };
        let mut values = Vec::with_capacity(self.features.len());
        for (name, declared, cells) in &self.features {
            values.push(coerce(name, declared, cells.value(row))?);
        }
        Ok(PushRow {
            keys: key_values,
            event_micros,
            created_micros,
            values,
        })
    }
}
