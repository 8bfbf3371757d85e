//! An event's value → the text of each declared column, as bronze keeps
//! file rows: strings as they are, numbers and booleans as JSON writes
//! them, nested values as JSON text, absent keys and `null` as null.
//!
//! The object is read in one pass without building a map: undeclared keys
//! are skipped unparsed, and declared strings without escapes are borrowed
//! from the payload until they are copied into the batch's columns.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One event's values, in declared order (`None`: null or absent).
pub(crate) type Row<'a> = Vec<Option<Cow<'a, str>>>;

/// Decodes a JSON object event into one value per declared column (in
/// `columns` order). An event that is not a JSON object is an error
/// naming what it is instead.
pub(crate) fn decode_json<'a>(
    payload: Option<&'a [u8]>,
    columns: &[String],
) -> Result<Row<'a>, String> {
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return Err("the event has no value (an empty payload or a tombstone)".into());
    };
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        // Not an object: name what it is, or why it is not JSON.
        return Err(match serde_json::from_slice::<IgnoredAny>(payload) {
            Ok(_) => format!("the event is a JSON {}, not an object", kind(first)),
            Err(e) => format!("the event is not JSON: {e}"),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let row = EventSeed { columns }
        .deserialize(&mut deserializer)
        .and_then(|row| deserializer.end().map(|()| row))
        .map_err(|e| format!("the event is not JSON: {e}"))?;
    Ok(row)
}

fn kind(first: Option<u8>) -> &'static str {
    match first {
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

struct EventSeed<'c> {
    columns: &'c [String],
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Row<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Row<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut row: Row<'de> = vec![None; self.columns.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.columns.iter().position(|c| *c == key) {
                Some(i) => row[i] = map.next_value::<Text<'de>>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(row)
    }
}

/// A JSON value as the text bronze keeps.
struct Text<'de>(Option<Cow<'de, str>>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v))))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // As serde_json writes the number (shortest round-trip form).
        Ok(Text(
            serde_json::Number::from_f64(v).map(|n| Cow::Owned(n.to_string())),
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text(None))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let nested: serde_json::Value =
            de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Text(Some(Cow::Owned(nested.to_string()))))
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
        let nested: serde_json::Value =
            de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Text(Some(Cow::Owned(nested.to_string()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<String> {
        ["id", "amount", "ok", "tags", "ts", "n", "big"]
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    fn texts(row: Row<'_>) -> Vec<Option<String>> {
        row.into_iter().map(|v| v.map(Cow::into_owned)).collect()
    }

    #[test]
    fn declared_keys_become_text() {
        let row = decode_json(
            Some(
                br#"{"id": "c\"1", "amount": 12.5, "ok": true, "tags": [1, {"a": 2}], "extra": {"x": [1]}, "n": null, "big": -7}"#,
            ),
            &columns(),
        )
        .unwrap();
        assert_eq!(
            texts(row),
            vec![
                Some("c\"1".into()),
                Some("12.5".into()),
                Some("true".into()),
                Some(r#"[1,{"a":2}]"#.into()),
                None,
                None,
                Some("-7".into()),
            ]
        );
        // Numbers read as the generic JSON reader writes them.
        for number in ["1e300", "0.1", "123456789012345678", "-0.0"] {
            let payload = format!(r#"{{"amount": {number}}}"#);
            let row = decode_json(Some(payload.as_bytes()), &columns()).unwrap();
            let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(
                row[1].as_deref(),
                Some(value["amount"].to_string().as_str()),
                "{number}"
            );
        }
    }

    #[test]
    fn what_is_not_an_object_is_named() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "no value"),
            (b"not json", "not JSON"),
            (b"[1]", "JSON array"),
            (b" 42", "JSON number"),
            (b"\"x\"", "JSON string"),
            (b"{\"id\": 1", "not JSON"),
            (b"{\"id\": 1} trailing", "not JSON"),
        ];
        for (payload, expected) in cases {
            let err = decode_json(Some(payload), &columns()).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let err = decode_json(None, &columns()).unwrap_err();
        assert!(err.contains("tombstone"), "{err}");
    }
}
