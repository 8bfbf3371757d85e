//! An event's value → the text of each declared column, as bronze keeps
//! file rows: strings as they are, numbers and booleans as JSON writes
//! them, nested values as JSON text, absent keys and `null` as null.

/// Decodes a JSON object event into `out` (one entry per declared column,
/// in `columns` order). An event that is not a JSON object is an error
/// naming what it is instead; `out` is then left empty.
pub(crate) fn decode_json(
    payload: Option<&[u8]>,
    columns: &[String],
    out: &mut Vec<Option<String>>,
) -> Result<(), String> {
    out.clear();
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return Err("the event has no value (an empty payload or a tombstone)".into());
    };
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the event is not JSON: {e}"))?;
    let mut object = match value {
        serde_json::Value::Object(object) => object,
        other => {
            return Err(format!(
                "the event is a JSON {}, not an object",
                kind(&other)
            ));
        }
    };
    out.extend(columns.iter().map(|c| object.remove(c).and_then(text)));
    Ok(())
}

/// The text bronze keeps for a JSON value (`None` for null).
fn text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        nested @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
            Some(nested.to_string())
        }
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<String> {
        ["id", "amount", "ok", "tags", "ts"]
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn declared_keys_become_text() {
        let mut out = Vec::new();
        decode_json(
            Some(br#"{"id": "c1", "amount": 12.5, "ok": true, "tags": [1, 2], "extra": 1}"#),
            &columns(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                Some("c1".into()),
                Some("12.5".into()),
                Some("true".into()),
                Some("[1,2]".into()),
                None
            ]
        );
    }

    #[test]
    fn what_is_not_an_object_is_named() {
        let mut out = Vec::new();
        let cases: [(&[u8], &str); 5] = [
            (b"", "no value"),
            (b"not json", "not JSON"),
            (b"[1]", "JSON array"),
            (b" 42", "JSON number"),
            (b"\"x\"", "JSON string"),
        ];
        for (payload, expected) in cases {
            let err = decode_json(Some(payload), &columns(), &mut out).unwrap_err();
            assert!(err.contains(expected), "{err}");
            assert!(out.is_empty());
        }
        let err = decode_json(None, &columns(), &mut out).unwrap_err();
        assert!(err.contains("tombstone"), "{err}");
    }
}
