//! Canonical JSON: object keys sorted at every level, no whitespace, so equal documents hash equal.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Serialises `value` as canonical JSON bytes; `what` names the document in errors.
pub(crate) fn to_canonical_vec<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    let bad = |error| Error::Json {
        what: what.to_string(),
        error,
    };
    let v = serde_json::to_value(value).map_err(bad)?;
    serde_json::to_vec(&sorted(v)).map_err(bad)
}

/// Parses a JSON document; `what` names it in errors.
pub(crate) fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| Error::Json {
        what: what.to_string(),
        error,
    })
}

/// Rebuilds every object with its keys in sorted order (whatever map type serde_json uses).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_whatever_the_map_order() {
        let m: HashMap<&str, u32> = (0..50)
            .map(|i| (["k", &i.to_string()].concat().leak() as &str, i))
            .collect();
        let a = to_canonical_vec(&m, "test").unwrap();
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with(r#"{"k0":0,"k1":1,"k10":10"#), "{text}");
    }
}
