//! An Avro event → the text of each declared column, as bronze keeps file
//! rows: the declared schema (`avro_schema`) is compiled once, and each
//! event's binary datum is walked field by field. Declared fields become
//! text (strings as they are, numbers as JSON writes them, timestamps as
//! ISO 8601, dates as `YYYY-MM-DD`, decimals at their scale, enums by
//! symbol, nested values as JSON); the others are skipped. An event that
//! does not decode with the schema (too short, bytes left over, a union
//! or enum index the schema does not have, text that is not UTF-8, another
//! Schema Registry id) is an error naming the field, so it is landed with
//! the reason and quarantined, never read wrong.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::decode::Row;

/// A compiled Avro schema (named types are resolved; a type that refers to
/// itself is refused).
#[derive(Debug, Clone, PartialEq)]
enum Schema {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<(String, Schema)>),
    Enum(Vec<String>),
    Array(Box<Schema>),
    Map(Box<Schema>),
    Union(Vec<Schema>),
    Fixed(usize),
    /// `int` days since the epoch.
    Date,
    /// `int` milliseconds or `long` microseconds after midnight.
    Time {
        micros_per_unit: i64,
        long: bool,
    },
    /// `long` units since the epoch; `local`: no time zone.
    Timestamp {
        nanos_per_unit: i64,
        local: bool,
    },
    /// An unscaled two's-complement big-endian integer (`bytes`, or
    /// `fixed` of this size) and its scale.
    Decimal {
        scale: u32,
        fixed: Option<usize>,
    },
}

/// How one source's Avro events are decoded.
#[derive(Debug, Clone)]
pub(crate) struct AvroEvents {
    /// The record's fields, with the declared column each one fills.
    fields: Vec<(String, Schema, Option<usize>)>,
    columns: usize,
    /// Confluent's framing, with the schema id required (if any).
    confluent: Option<Option<u32>>,
}

impl AvroEvents {
    /// Compiles `schema` (an Avro record schema's JSON) for the declared
    /// `columns`; `confluent`: events carry Schema Registry's framing
    /// (with that id, when given).
    pub(crate) fn new(
        schema: &str,
        columns: &[String],
        confluent: Option<Option<u32>>,
    ) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let mut names = HashMap::new();
        let Schema::Record(fields) = parse(&json, &mut names, None)? else {
            return Err("the schema is not a record".into());
        };
        let mut out = Vec::with_capacity(fields.len());
        for (name, schema) in fields {
            let column = columns.iter().position(|c| *c == name);
            out.push((name, schema, column));
        }
        if let Some(missing) = columns
            .iter()
            .find(|c| !out.iter().any(|(name, _, _)| name == *c))
        {
            return Err(format!(
                "declared column {missing:?} is not a field of the record"
            ));
        }
        Ok(AvroEvents {
            fields: out,
            columns: columns.len(),
            confluent,
        })
    }

    /// Decodes one event into one value per declared column.
    pub(crate) fn decode<'a>(&self, payload: Option<&'a [u8]>) -> Result<Row<'a>, String> {
        let Some(mut payload) = payload.filter(|p| !p.is_empty()) else {
            return Err("the event has no value (an empty payload or a tombstone)".into());
        };
        if let Some(expected) = self.confluent {
            let [0, a, b, c, d, rest @ ..] = payload else {
                return Err(format!(
                    "the event is not in Schema Registry's framing (a zero byte and a 4-byte schema id; it starts with byte {})",
                    payload[0]
                ));
            };
            let id = u32::from_be_bytes([*a, *b, *c, *d]);
            if let Some(expected) = expected.filter(|e| *e != id) {
                return Err(format!(
                    "the event is written with schema id {id}; this source reads id {expected}"
                ));
            }
            payload = rest;
        }
        let mut reader = Reader {
            bytes: payload,
            at: 0,
            items_left: payload.len() + MAX_EMPTY_ITEMS,
        };
        let mut row: Row<'a> = vec![None; self.columns];
        for (name, schema, column) in &self.fields {
            let outcome = match column {
                Some(c) => text(&mut reader, schema).map(|v| row[*c] = v),
                None => skip(&mut reader, schema),
            };
            outcome.map_err(|e| format!("field {name:?}: {e}"))?;
        }
        if reader.at != payload.len() {
            return Err(format!(
                "{} bytes are left after the record: the event was not written with the declared schema",
                payload.len() - reader.at
            ));
        }
        Ok(row)
    }
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn parse(
    json: &Value,
    names: &mut HashMap<String, Schema>,
    namespace: Option<&str>,
) -> Result<Schema, String> {
    match json {
        Value::String(name) => primitive(name)
            .map(Ok)
            .unwrap_or_else(|| named(name, names, namespace)),
        Value::Array(branches) => {
            let mut out = Vec::with_capacity(branches.len());
            for branch in branches {
                let branch = parse(branch, names, namespace)?;
                if matches!(branch, Schema::Union(_)) {
                    return Err("a union directly inside a union".into());
                }
                out.push(branch);
            }
            Ok(Schema::Union(out))
        }
        Value::Object(object) => {
            let ty = object
                .get("type")
                .ok_or("a schema object without \"type\"")?;
            let Value::String(ty) = ty else {
                // {"type": {...}} or {"type": [...]}: the inner schema.
                return parse(ty, names, namespace);
            };
            let full_name = |object: &serde_json::Map<String, Value>| -> Result<String, String> {
                let name = object
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("a {ty} without a name"))?;
                let space = object
                    .get("namespace")
                    .and_then(Value::as_str)
                    .or(namespace);
                Ok(match space {
                    Some(space) if !name.contains('.') && !space.is_empty() => {
                        format!("{space}.{name}")
                    }
                    _ => name.to_string(),
                })
            };
            let logical = object.get("logicalType").and_then(Value::as_str);
            let schema = match ty.as_str() {
                "record" | "error" => {
                    let name = full_name(object)?;
                    let inner = name.rsplit_once('.').map(|(space, _)| space);
                    let fields = object
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("record {name} has no fields array"))?;
                    let mut out = Vec::with_capacity(fields.len());
                    for field in fields {
                        let field_name = field
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("a field of record {name} has no name"))?;
                        let field_type = field.get("type").ok_or_else(|| {
                            format!("field {field_name} of record {name} has no type")
                        })?;
                        let schema = parse(field_type, names, inner.or(namespace))
                            .map_err(|e| format!("field {field_name}: {e}"))?;
                        out.push((field_name.to_string(), schema));
                    }
                    let schema = Schema::Record(out);
                    define(names, name, &schema)?;
                    schema
                }
                "enum" => {
                    let name = full_name(object)?;
                    let symbols = object
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("enum {name} has no symbols"))?
                        .iter()
                        .map(|s| s.as_str().map(str::to_string))
                        .collect::<Option<Vec<String>>>()
                        .ok_or_else(|| format!("enum {name} has a symbol that is not text"))?;
                    let schema = Schema::Enum(symbols);
                    define(names, name, &schema)?;
                    schema
                }
                "fixed" => {
                    let name = full_name(object)?;
                    let size = object
                        .get("size")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| format!("fixed {name} has no size"))?
                        as usize;
                    let schema = match logical {
                        Some("decimal") => Schema::Decimal {
                            scale: scale(object)?,
                            fixed: Some(size),
                        },
                        _ => Schema::Fixed(size),
                    };
                    define(names, name, &schema)?;
                    schema
                }
                "array" => Schema::Array(Box::new(parse(
                    object.get("items").ok_or("an array without items")?,
                    names,
                    namespace,
                )?)),
                "map" => Schema::Map(Box::new(parse(
                    object.get("values").ok_or("a map without values")?,
                    names,
                    namespace,
                )?)),
                other => {
                    let base = primitive(other)
                        .map(Ok)
                        .unwrap_or_else(|| named(other, names, namespace))?;
                    // Logical types the base does not carry are read as
                    // the base (as the specification says).
                    match (logical, &base) {
                        (Some("date"), Schema::Int) => Schema::Date,
                        (Some("time-millis"), Schema::Int) => Schema::Time {
                            micros_per_unit: 1_000,
                            long: false,
                        },
                        (Some("time-micros"), Schema::Long) => Schema::Time {
                            micros_per_unit: 1,
                            long: true,
                        },
                        (Some(kind), Schema::Long) if kind.contains("timestamp-") => {
                            let local = kind.starts_with("local-");
                            match kind.trim_start_matches("local-") {
                                "timestamp-millis" => Schema::Timestamp {
                                    nanos_per_unit: 1_000_000,
                                    local,
                                },
                                "timestamp-micros" => Schema::Timestamp {
                                    nanos_per_unit: 1_000,
                                    local,
                                },
                                "timestamp-nanos" => Schema::Timestamp {
                                    nanos_per_unit: 1,
                                    local,
                                },
                                _ => base,
                            }
                        }
                        (Some("decimal"), Schema::Bytes) => Schema::Decimal {
                            scale: scale(object)?,
                            fixed: None,
                        },
                        _ => base,
                    }
                }
            };
            Ok(schema)
        }
        other => Err(format!("{other} is not a schema")),
    }
}

/// Records a named type; a name may be defined once.
fn define(
    names: &mut HashMap<String, Schema>,
    name: String,
    schema: &Schema,
) -> Result<(), String> {
    if names.contains_key(&name) {
        return Err(format!("type {name} is defined twice"));
    }
    names.insert(name, schema.clone());
    Ok(())
}

fn primitive(name: &str) -> Option<Schema> {
    Some(match name {
        "null" => Schema::Null,
        "boolean" => Schema::Boolean,
        "int" => Schema::Int,
        "long" => Schema::Long,
        "float" => Schema::Float,
        "double" => Schema::Double,
        "bytes" => Schema::Bytes,
        "string" => Schema::String,
        _ => return None,
    })
}

fn named(
    name: &str,
    names: &HashMap<String, Schema>,
    namespace: Option<&str>,
) -> Result<Schema, String> {
    let qualified = namespace.map(|space| format!("{space}.{name}"));
    qualified
        .and_then(|q| names.get(&q))
        .or_else(|| names.get(name))
        .cloned()
        .ok_or_else(|| {
            format!(
                "unknown type {name:?} (not one of {} or a named type defined before it; a type that refers to itself is not read)",
                PRIMITIVES.join(", ")
            )
        })
}

fn scale(object: &serde_json::Map<String, Value>) -> Result<u32, String> {
    match object.get("scale") {
        None => Ok(0),
        Some(scale) => scale
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| format!("decimal scale {scale} is not a whole number")),
    }
}

/// Array and map items of no bytes (nulls, empty records) an event may
/// hold beyond one per byte: an item count is read from the event, and
/// without a bound a few bytes could claim 2^63 of them.
const MAX_EMPTY_ITEMS: usize = 65_536;

/// A cursor over one datum.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Array and map items the event may still hold.
    items_left: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "the event is shorter than the schema reads (it ends at byte {})",
                    self.bytes.len()
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// A zig-zag variable-length `int` or `long`.
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.take(1)?[0];
            if shift == 63 && byte > 1 {
                return Err("a number longer than 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn int(&mut self) -> Result<i32, String> {
        let value = self.long()?;
        i32::try_from(value).map_err(|_| format!("{value} is out of an int's range"))
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("a negative length ({n})"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("byte {other} is not a boolean")),
        }
    }

    fn float(&mut self) -> Result<f32, String> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn double(&mut self) -> Result<f64, String> {
        let b = self.take(8)?;
        Ok(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn branch<'s>(&mut self, branches: &'s [Schema]) -> Result<&'s Schema, String> {
        let at = self.long()?;
        usize::try_from(at)
            .ok()
            .and_then(|at| branches.get(at))
            .ok_or_else(|| format!("union branch {at}, and the schema has {}", branches.len()))
    }

    /// The item count of the next block of an array or map (0: the end);
    /// a negative count is followed by the block's size in bytes.
    fn block(&mut self) -> Result<usize, String> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        let count = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
        self.items_left = self.items_left.checked_sub(count).ok_or_else(|| {
            format!("a block of {count} items, more than the event's bytes can hold")
        })?;
        Ok(count)
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("text that is not UTF-8 ({e})"))
}

/// Binary as text: itself when it is UTF-8, else `base64:` and its
/// base64 (hashes, UUIDs as 16 bytes), so no event is refused for it.
fn binary(bytes: &[u8]) -> Cow<'_, str> {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )),
    }
}

/// A number as the JSON path writes it (shortest round trip); NaN and
/// infinities, which JSON cannot carry, as Rust writes them.
fn number_text(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map(|n| n.to_string())
        .unwrap_or_else(|| value.to_string())
}

/// The value's text (`None`: null).
fn text<'a>(reader: &mut Reader<'a>, schema: &Schema) -> Result<Option<Cow<'a, str>>, String> {
    let owned = |s: String| Ok(Some(Cow::Owned(s)));
    match schema {
        Schema::Null => Ok(None),
        Schema::Boolean => Ok(Some(Cow::Borrowed(if reader.boolean()? {
            "true"
        } else {
            "false"
        }))),
        Schema::Int => owned(reader.int()?.to_string()),
        Schema::Long => owned(reader.long()?.to_string()),
        // As an f32 prints (shortest round trip): widened to f64 it would
        // print its binary noise (0.1 as 0.10000000149011612).
        Schema::Float => owned(format!("{:?}", reader.float()?)),
        Schema::Double => owned(number_text(reader.double()?)),
        Schema::String => Ok(Some(Cow::Borrowed(utf8(reader.bytes()?)?))),
        Schema::Bytes => Ok(Some(binary(reader.bytes()?))),
        Schema::Fixed(n) => Ok(Some(binary(reader.take(*n)?))),
        Schema::Enum(symbols) => {
            let at = reader.long()?;
            let symbol = usize::try_from(at)
                .ok()
                .and_then(|at| symbols.get(at))
                .ok_or_else(|| format!("enum index {at}, and the schema has {}", symbols.len()))?;
            owned(symbol.clone())
        }
        Schema::Union(branches) => {
            let branch = reader.branch(branches)?;
            text(reader, branch)
        }
        Schema::Record(_) | Schema::Array(_) | Schema::Map(_) => {
            owned(json(reader, schema)?.to_string())
        }
        Schema::Date => {
            let days = reader.int()?;
            let date = days
                .checked_add(719_163)
                .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
                .ok_or_else(|| format!("date {days} days from 1970 is out of range"))?;
            owned(date.format("%Y-%m-%d").to_string())
        }
        Schema::Time {
            micros_per_unit,
            long,
        } => {
            let units = if *long {
                reader.long()?
            } else {
                i64::from(reader.int()?)
            };
            let micros = units.saturating_mul(*micros_per_unit);
            let time = u32::try_from(micros.div_euclid(1_000_000))
                .ok()
                .and_then(|s| {
                    chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                        s,
                        (micros.rem_euclid(1_000_000) * 1_000) as u32,
                    )
                })
                .ok_or_else(|| format!("time {units} is not within a day"))?;
            owned(time.format("%H:%M:%S%.6f").to_string())
        }
        Schema::Timestamp {
            nanos_per_unit,
            local,
        } => {
            let units = reader.long()?;
            let nanos = i128::from(units) * i128::from(*nanos_per_unit);
            let seconds = i64::try_from(nanos.div_euclid(1_000_000_000))
                .map_err(|_| format!("timestamp {units} is out of range"))?;
            let at =
                chrono::DateTime::from_timestamp(seconds, nanos.rem_euclid(1_000_000_000) as u32)
                    .ok_or_else(|| format!("timestamp {units} is out of range"))?;
            let format = if *local {
                "%Y-%m-%dT%H:%M:%S%.f"
            } else {
                "%Y-%m-%dT%H:%M:%S%.fZ"
            };
            owned(at.format(format).to_string())
        }
        Schema::Decimal { scale, fixed } => {
            let bytes = match fixed {
                Some(n) => reader.take(*n)?,
                None => reader.bytes()?,
            };
            owned(decimal(bytes, *scale)?)
        }
    }
}

/// An unscaled two's-complement big-endian integer at `scale`, as text.
fn decimal(bytes: &[u8], scale: u32) -> Result<String, String> {
    if bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes (aurum reads up to 16)",
            bytes.len()
        ));
    }
    let mut value: i128 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in bytes {
        value = (value << 8) | i128::from(*b);
    }
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{whole}.{fraction}"))
}

/// A nested value as JSON.
fn json(reader: &mut Reader<'_>, schema: &Schema) -> Result<Value, String> {
    Ok(match schema {
        Schema::Record(fields) => {
            let mut object = serde_json::Map::with_capacity(fields.len());
            for (name, schema) in fields {
                let value = json(reader, schema).map_err(|e| format!("{name}: {e}"))?;
                object.insert(name.clone(), value);
            }
            Value::Object(object)
        }
        Schema::Array(items) => {
            let mut out = Vec::new();
            loop {
                let count = reader.block()?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    out.push(json(reader, items)?);
                }
            }
            Value::Array(out)
        }
        Schema::Map(values) => {
            let mut object = serde_json::Map::new();
            loop {
                let count = reader.block()?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    let key = utf8(reader.bytes()?)?.to_string();
                    object.insert(key, json(reader, values)?);
                }
            }
            Value::Object(object)
        }
        Schema::Union(branches) => {
            let branch = reader.branch(branches)?;
            json(reader, branch)?
        }
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Bool(reader.boolean()?),
        Schema::Int => Value::from(reader.int()?),
        Schema::Long => Value::from(reader.long()?),
        Schema::Float => format!("{:?}", reader.float()?)
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Schema::Double => {
            serde_json::Number::from_f64(reader.double()?).map_or(Value::Null, Value::Number)
        }
        other => match text(reader, other)? {
            Some(text) => Value::String(text.into_owned()),
            None => Value::Null,
        },
    })
}

/// Moves past a value of a field no column declares.
fn skip(reader: &mut Reader<'_>, schema: &Schema) -> Result<(), String> {
    match schema {
        Schema::Null => {}
        Schema::Boolean => {
            reader.boolean()?;
        }
        Schema::Int | Schema::Long | Schema::Enum(_) | Schema::Date => {
            reader.long()?;
        }
        Schema::Time { .. } | Schema::Timestamp { .. } => {
            reader.long()?;
        }
        Schema::Float => {
            reader.take(4)?;
        }
        Schema::Double => {
            reader.take(8)?;
        }
        Schema::Bytes | Schema::String | Schema::Decimal { fixed: None, .. } => {
            reader.bytes()?;
        }
        Schema::Fixed(n) | Schema::Decimal { fixed: Some(n), .. } => {
            reader.take(*n)?;
        }
        Schema::Record(fields) => {
            for (_, schema) in fields {
                skip(reader, schema)?;
            }
        }
        Schema::Array(items) => loop {
            let count = reader.block()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                skip(reader, items)?;
            }
        },
        Schema::Map(values) => loop {
            let count = reader.block()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                reader.bytes()?;
                skip(reader, values)?;
            }
        },
        Schema::Union(branches) => {
            let branch = reader.branch(branches)?;
            skip(reader, branch)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datum written by hand, as the specification encodes it.
    #[derive(Default)]
    struct Writer(Vec<u8>);

    impl Writer {
        fn long(mut self, v: i64) -> Self {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            loop {
                let byte = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    self.0.push(byte);
                    return self;
                }
                self.0.push(byte | 0x80);
            }
        }
        fn text(self, s: &str) -> Self {
            let mut w = self.long(s.len() as i64);
            w.0.extend_from_slice(s.as_bytes());
            w
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    const SCHEMA: &str = r#"{
      "type": "record", "name": "Payment", "namespace": "shop",
      "fields": [
        {"name": "event_id", "type": "long"},
        {"name": "customer_id", "type": ["null", "string"]},
        {"name": "amount", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["card", "cash"]}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "extra", "type": {"type": "map", "values": "long"}},
        {"name": "again", "type": ["null", "Kind"]},
        {"name": "ok", "type": "boolean"}
      ]
    }"#;

    fn columns() -> Vec<String> {
        [
            "event_id",
            "customer_id",
            "amount",
            "ratio",
            "ts",
            "day",
            "kind",
            "price",
            "tags",
            "again",
            "ok",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect()
    }

    fn event() -> Writer {
        Writer::default()
            .long(-42)
            .long(1)
            .text("c7")
            .raw(&12.5f64.to_le_bytes())
            .raw(&0.1f32.to_le_bytes())
            .long(1_764_892_800_123)
            .long(20_427)
            .long(1)
            .long(2)
            .raw(&[0xfb, 0x2e]) // -1234 → -12.34
            .long(2)
            .text("a")
            .text("b")
            .long(0)
            .long(-1) // a block of one entry, its size given
            .long(3)
            .text("k")
            .long(9)
            .long(0)
            .long(0) // null
            .raw(&[1])
    }

    fn texts(row: Row<'_>) -> Vec<Option<String>> {
        row.into_iter().map(|v| v.map(Cow::into_owned)).collect()
    }

    #[test]
    fn declared_fields_become_text_and_others_are_skipped() {
        let events = AvroEvents::new(SCHEMA, &columns(), None).unwrap();
        let datum = event().0;
        let row = events.decode(Some(&datum)).unwrap();
        assert_eq!(
            texts(row),
            vec![
                Some("-42".into()),
                Some("c7".into()),
                Some("12.5".into()),
                Some("0.1".into()),
                Some("2025-12-05T00:00:00.123Z".into()),
                Some("2025-12-05".into()),
                Some("cash".into()),
                Some("-12.34".into()),
                Some(r#"["a","b"]"#.into()),
                None,
                Some("true".into()),
            ]
        );
    }

    #[test]
    fn the_schema_registry_framing_is_checked() {
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend(event().0);
        let any = AvroEvents::new(SCHEMA, &columns(), Some(None)).unwrap();
        assert_eq!(any.decode(Some(&framed)).unwrap()[1].as_deref(), Some("c7"));
        let seven = AvroEvents::new(SCHEMA, &columns(), Some(Some(7))).unwrap();
        assert!(seven.decode(Some(&framed)).is_ok());
        let eight = AvroEvents::new(SCHEMA, &columns(), Some(Some(8))).unwrap();
        let err = eight.decode(Some(&framed)).unwrap_err();
        assert!(err.contains("schema id 7") && err.contains("id 8"), "{err}");
        let err = any.decode(Some(&event().0)).unwrap_err();
        assert!(err.contains("framing"), "{err}");
    }

    #[test]
    fn what_does_not_decode_is_named() {
        let events = AvroEvents::new(SCHEMA, &columns(), None).unwrap();
        let whole = event().0;
        let err = events.decode(Some(&whole[..whole.len() - 3])).unwrap_err();
        assert!(err.contains("shorter than the schema"), "{err}");
        let mut longer = whole.clone();
        longer.push(0);
        let err = events.decode(Some(&longer)).unwrap_err();
        assert!(err.contains("1 bytes are left"), "{err}");
        let bad_branch = Writer::default().long(1).long(5).0;
        let err = events.decode(Some(&bad_branch)).unwrap_err();
        assert!(
            err.contains("customer_id") && err.contains("union branch 5"),
            "{err}"
        );
        let bad_text = Writer::default()
            .long(1)
            .long(1)
            .long(2)
            .raw(&[0xff, 0xfe])
            .0;
        let err = events.decode(Some(&bad_text)).unwrap_err();
        assert!(
            err.contains("customer_id") && err.contains("UTF-8"),
            "{err}"
        );
        let err = events.decode(None).unwrap_err();
        assert!(err.contains("tombstone"), "{err}");
    }

    #[test]
    fn schemas_that_cannot_be_read_are_named() {
        let cols = ["a".to_string()];
        let cases = [
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "b", "type": "long"}]}"#,
                "not a field",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "R"}]}"#,
                "unknown type",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "uuid"}]}"#,
                "unknown type",
            ),
            (r#""long""#, "not a record"),
            ("{", "not JSON"),
        ];
        for (schema, expected) in cases {
            let err = AvroEvents::new(schema, &cols, None).unwrap_err();
            assert!(err.contains(expected), "{schema}: {err}");
        }
    }

    #[test]
    fn binary_is_text_or_base64_and_item_counts_are_bounded() {
        let schema = r#"{"type": "record", "name": "R", "fields": [
            {"name": "a", "type": "bytes"},
            {"name": "b", "type": {"type": "array", "items": "null"}}
        ]}"#;
        let cols = ["a".to_string(), "b".to_string()];
        let events = AvroEvents::new(schema, &cols, None).unwrap();
        let datum = Writer::default()
            .long(2)
            .raw(&[0xff, 0x00])
            .long(3)
            .long(0)
            .0;
        let row = events.decode(Some(&datum)).unwrap();
        assert_eq!(row[0].as_deref(), Some("base64:/wA="));
        assert_eq!(row[1].as_deref(), Some("[null,null,null]"));
        // Three bytes claiming 2^62 nulls: refused, not looped over.
        let datum = Writer::default().long(0).long(1 << 62).long(0).0;
        let err = events.decode(Some(&datum)).unwrap_err();
        assert!(err.contains("more than the event's bytes"), "{err}");
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal(&[0x04, 0xd2], 2).unwrap(), "12.34");
        assert_eq!(decimal(&[0x05], 3).unwrap(), "0.005");
        assert_eq!(decimal(&[0xff], 0).unwrap(), "-1");
        assert_eq!(decimal(&[0xff, 0xfb], 1).unwrap(), "-0.5");
    }
}
