//! Schema comparison (what a write may change) and conversions between
//! Arrow and Delta kernel schemas.

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::interop;

/// How a new schema differs from a table's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SchemaDiff {
    Equal,
    /// Only new columns.
    Added(Vec<String>),
    /// Columns removed (or renamed) or retyped.
    Breaking {
        removed: Vec<String>,
        retyped: Vec<String>,
        added: Vec<String>,
    },
}

impl SchemaDiff {
    pub(crate) fn describe(&self) -> String {
        match self {
            SchemaDiff::Equal => "schemas are equal".into(),
            SchemaDiff::Added(added) => format!(
                "adding column(s) {} needs schema evolution to be allowed",
                added.join(", ")
            ),
            SchemaDiff::Breaking {
                removed,
                retyped,
                added,
            } => {
                let mut parts = Vec::new();
                if !removed.is_empty() {
                    parts.push(format!(
                        "removes or renames column(s) {}",
                        removed.join(", ")
                    ));
                }
                if !retyped.is_empty() {
                    parts.push(format!("changes the type of {}", retyped.join(", ")));
                }
                if !added.is_empty() {
                    parts.push(format!("adds {}", added.join(", ")));
                }
                format!(
                    "the new schema {}; readers of the table would break, so this needs \
                     --allow-breaking-schema-change",
                    parts.join(" and ")
                )
            }
        }
    }
}

pub(crate) fn compare_schemas(
    table: &arrow_schema::Schema,
    new: &arrow_schema::Schema,
) -> SchemaDiff {
    let mut removed = Vec::new();
    let mut retyped = Vec::new();
    for field in table.fields() {
        match new.field_with_name(field.name()) {
            Err(_) => removed.push(field.name().clone()),
            Ok(other) if !same_type(field.data_type(), other.data_type()) => {
                retyped.push(format!(
                    "{} ({} → {})",
                    field.name(),
                    field.data_type(),
                    other.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    let added: Vec<String> = new
        .fields()
        .iter()
        .filter(|f| table.field_with_name(f.name()).is_err())
        .map(|f| f.name().clone())
        .collect();
    match (removed.is_empty() && retyped.is_empty(), added.is_empty()) {
        (true, true) => SchemaDiff::Equal,
        (true, false) => SchemaDiff::Added(added),
        _ => SchemaDiff::Breaking {
            removed,
            retyped,
            added,
        },
    }
}

/// Types equal up to string/large-string, list/large-list and view
/// variants (and list element names), which Delta does not tell apart.
fn same_type(a: &arrow_schema::DataType, b: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as D;
    let element = |t: &D| match t {
        D::List(f) | D::LargeList(f) | D::ListView(f) | D::LargeListView(f) => {
            Some(f.data_type().clone())
        }
        _ => None,
    };
    if let (Some(x), Some(y)) = (element(a), element(b)) {
        return same_type(&x, &y);
    }
    let norm = |t: &D| match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => D::Utf8,
        D::Binary | D::LargeBinary | D::BinaryView => D::Binary,
        D::Timestamp(unit, Some(_)) => D::Timestamp(*unit, Some("UTC".into())),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

pub(crate) fn empty_frame(name: &str, schema: &StructType) -> Result<DataFrame> {
    interop::batches_to_frame(&arrow_schema_of(name, schema)?, &[])
}

/// A Delta (kernel) schema as an Arrow schema.
pub(crate) fn arrow_schema_of(name: &str, schema: &StructType) -> Result<arrow_schema::Schema> {
    schema.try_into_arrow().map_err(|source| Error::Arrow {
        context: format!("schema of {name}"),
        source,
    })
}

/// An Arrow schema as a Delta (kernel) schema.
pub(crate) fn kernel_schema(name: &str, schema: &arrow_schema::Schema) -> Result<StructType> {
    schema.try_into_kernel().map_err(|source| Error::Arrow {
        context: format!("schema of {name}"),
        source,
    })
}
