//! How values are read: the serde helpers the declarations in `types.rs` name, and how a string
//! (from a flag, or a JSON file such as Wilbur's with `"player_port": "80"`) becomes the value
//! its key's [`Kind`] expects.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};
use serde_json::{Map, Number, Value};

use super::types::Kind;

/// A string read as its key's kind: `"80"` as a number for a port, `"a,b"` as a list. What does
/// not read stays a string, and the deserialization then names the key, the value and where it
/// came from. Values that are not strings are left alone.
pub(crate) fn coerce(kind: Kind, value: Value) -> Value {
    let Value::String(text) = value else {
        return value;
    };
    let trimmed = text.trim();
    match kind {
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => Value::String(text),
        },
        Kind::Int => trimmed
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| trimmed.parse::<u64>().map(Value::from))
            .unwrap_or(Value::String(text)),
        Kind::Seconds => trimmed
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Kind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::Text | Kind::Json => Value::String(text),
    }
}

/// A JSON object given as a string holding one, or as the object (a TOML table). An empty
/// string is the empty object: Wilbur's shipped config.json has `"peer_options": ""`.
pub(crate) fn de_peer_options<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    json_object(Value::deserialize(deserializer)?, "peer_options").map_err(de::Error::custom)
}

/// A JSON object of strings (Cirrus's `AdditionalRoutes`), given as the object or as a string
/// holding one.
pub(crate) fn de_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = json_object(Value::deserialize(deserializer)?, "additional_routes")
        .map_err(de::Error::custom)?;
    map.into_iter()
        .map(|(key, value)| match value {
            Value::String(folder) => Ok((key, folder)),
            other => Err(de::Error::custom(format!(
                "the folder for {key:?} must be a string, not {}",
                json_kind(&other)
            ))),
        })
        .collect()
}

/// `streamer_tokens`: a JSON object (or a string holding one) from a token to the ids it may
/// claim, each an array of ids or one comma-separated string.
pub(crate) fn de_id_lists<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let map = json_object(Value::deserialize(deserializer)?, "streamer_tokens")
        .map_err(de::Error::custom)?;
    map.into_iter()
        .map(|(token, ids)| {
            let ids = match ids {
                Value::String(list) => list
                    .split(',')
                    .map(|id| id.trim().to_owned())
                    .filter(|id| !id.is_empty())
                    .collect(),
                Value::Array(items) => items
                    .into_iter()
                    .map(|id| match id {
                        Value::String(id) => Ok(id),
                        other => Err(de::Error::custom(format!(
                            "streamer_tokens: each id must be a string, not {}",
                            json_kind(&other)
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(de::Error::custom(format!(
                        "streamer_tokens: a token's ids must be an array or a comma-separated string, not {}",
                        json_kind(&other)
                    )));
                }
            };
            Ok((token, ids))
        })
        .collect()
}

/// [`de_peer_options`]'s reading, for callers outside serde; `what` names the value in errors.
pub(crate) fn json_object(value: Value, what: &str) -> Result<Map<String, Value>, String> {
    let value = match value {
        Value::String(json) if json.trim().is_empty() => return Ok(Map::new()),
        Value::String(json) => {
            serde_json::from_str(&json).map_err(|e| format!("{what} is not valid JSON: {e}"))?
        }
        other => other,
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "{what} must be a JSON object, not {}",
            json_kind(&other)
        )),
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A count where 0 means unlimited, and so does -1 (Wilbur's and Cirrus's spelling).
pub(crate) fn de_unlimited<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(deserializer)?;
    match n {
        -1 => Ok(0),
        n => u32::try_from(n).map_err(|_| {
            de::Error::custom(format!(
                "{n} is out of range: give 0 to {} (0 or -1 is unlimited)",
                u32::MAX
            ))
        }),
    }
}

/// A limit where -1 means none (`None`), as Cirrus's `MaxPlayerCount` has it; 0 stays 0.
pub(crate) fn de_optional_limit<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    match i64::deserialize(deserializer)? {
        -1 => Ok(None),
        n => u32::try_from(n).map(Some).map_err(|_| {
            de::Error::custom(format!(
                "{n} is out of range: give -1 (unlimited) or 0 to {}",
                u32::MAX
            ))
        }),
    }
}

pub(crate) fn ser_optional_limit<S: Serializer>(
    value: &Option<u32>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_i64(value.map_or(-1, i64::from))
}

/// A duration: a non-negative integer or decimal number of seconds.
pub(crate) fn de_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Seconds;

    impl Visitor<'_> for Seconds {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of seconds (e.g. 30 or 0.2)")
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{secs} is negative; seconds must be 0 or more")))
        }

        fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
            seconds_from_f64(secs).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(Seconds)
}

pub(crate) fn ser_seconds<S: Serializer>(
    value: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let secs = value.as_secs_f64();
    if secs.fract() == 0.0 {
        serializer.serialize_u64(value.as_secs())
    } else {
        serializer.serialize_f64(secs)
    }
}

fn seconds_from_f64(secs: f64) -> Result<Duration, String> {
    if secs.is_sign_negative() && secs != 0.0 {
        return Err(format!("{secs} is negative; seconds must be 0 or more"));
    }
    Duration::try_from_secs_f64(secs.abs()).map_err(|_| format!("{secs} is not a usable duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_read_as_their_kind() {
        let s = |t: &str| Value::String(t.to_owned());
        assert_eq!(coerce(Kind::Int, s("8888")), json!(8888));
        assert_eq!(coerce(Kind::Int, s(" -1 ")), json!(-1));
        assert_eq!(coerce(Kind::Int, s("four")), json!("four"));
        assert_eq!(coerce(Kind::Bool, s("TRUE")), json!(true));
        assert_eq!(coerce(Kind::Bool, s("off")), json!(false));
        assert_eq!(coerce(Kind::Bool, s("maybe")), json!("maybe"));
        assert_eq!(coerce(Kind::Seconds, s("0.5")), json!(0.5));
        assert_eq!(coerce(Kind::List, s("a, b,,c")), json!(["a", "b", "c"]));
        assert_eq!(coerce(Kind::List, s("")), json!([]));
        assert_eq!(coerce(Kind::Text, s("80")), json!("80"));
        assert_eq!(coerce(Kind::Int, json!(5)), json!(5));
    }

    #[test]
    fn json_objects_from_strings_or_objects() {
        assert_eq!(json_object(json!(""), "x"), Ok(Map::new()));
        assert_eq!(
            json_object(json!("{\"a\":1}"), "x").map(Value::Object),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            json_object(json!({"a": 1}), "x").map(Value::Object),
            Ok(json!({"a": 1}))
        );
        assert!(
            json_object(json!("[1]"), "x")
                .unwrap_err()
                .contains("not an array")
        );
        assert!(
            json_object(json!("{"), "x")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }
}
