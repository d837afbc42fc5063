//! A forwarded message kept whole: every key and value as received, in order, unknown ones
//! included (PROTOCOL.md §1.10). Only `playerId` and `sfuId` are ever changed, and the server
//! reads only the few fields it routes on.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::inbound::ParseError;

/// A JSON object as compact text plus the position of each top-level member.
///
/// Values are copied byte for byte (numbers keep their exact digits); only white space outside
/// strings is removed, so the server always sends compact JSON. A key that appears twice keeps
/// its first place and its last value, as `JSON.parse` does.
#[derive(Clone, PartialEq, Eq)]
pub struct Relay {
    json: String,
    members: Vec<Member>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    /// The key's JSON string token, quotes included.
    key_start: usize,
    key_end: usize,
    /// The value's JSON text.
    value_start: usize,
    value_end: usize,
}

impl Member {
    fn value(&self) -> Range<usize> {
        self.value_start..self.value_end
    }
    fn shift(&mut self, delta: isize) {
        for offset in [
            &mut self.key_start,
            &mut self.key_end,
            &mut self.value_start,
            &mut self.value_end,
        ] {
            *offset = offset.wrapping_add_signed(delta);
        }
    }
}

/// Members of a JSON object borrowed from its text: decoded key, raw value.
pub(crate) type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// The deepest nesting of arrays and objects a message may have, the message object itself
/// being level 1; a deeper message is bad input (PROTOCOL.md §10).
///
/// serde_json reads a value it keeps raw without recursion, so the server itself would take any
/// depth; but it forwards what it receives, and the parsers on the receiving side (browsers'
/// `JSON.parse`, Unreal's `FJsonSerializer`, Node's) recurse, and can fail or crash on the
/// 400,000 levels one 1 MiB message can hold. What Epic's peers send nests 2 levels at most
/// (an `iceCandidate`'s `candidate` object, in Epic's `signalling_messages.proto`; the deepest
/// message the server sends, `config` with `iceServers[].urls[]`, has 4); 64 is far above that,
/// and half of serde_json's own recursion limit of 128.
pub const MAX_NESTING_DEPTH: usize = 64;

/// How deep a member's value may nest: the object holding it is level 1.
const MEMBER_LEVELS: usize = MAX_NESTING_DEPTH - 1;

/// Parses `text` as one JSON object, borrowing keys and values from it. Nesting is not checked
/// here: [`Relay::from_members`] checks it while it copies, [`check_depth`] for the rest.
pub(crate) fn parse_members(text: &str) -> Result<Members<'_>, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de.deserialize_map(MembersVisitor).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(dedupe(members))
}

/// [`ParseError::TooDeep`] if a member nests deeper than [`MAX_NESTING_DEPTH`] allows.
pub(crate) fn check_depth(members: &Members<'_>) -> Result<(), ParseError> {
    if members
        .iter()
        .all(|(_, value)| nests_at_most(value.get(), MEMBER_LEVELS))
    {
        Ok(())
    } else {
        Err(ParseError::TooDeep)
    }
}

/// Whether `raw` (valid JSON) nests arrays and objects at most `levels` deep. Scalars are not
/// scanned; containers are by [`compact_within`], copying nothing.
fn nests_at_most(raw: &str, levels: usize) -> bool {
    !matches!(raw.as_bytes().first(), Some(b'[' | b'{')) || compact_within(None, raw, levels)
}

fn classify(err: serde_json::Error) -> ParseError {
    match err.classify() {
        serde_json::error::Category::Data => ParseError::NotObject,
        _ => ParseError::NotJson(err.to_string()),
    }
}

/// Up to this many members, repeated keys are looked for by comparing each key with those
/// before it (no allocation, no hashing); above it, with a hash map.
const SMALL_OBJECT: usize = 16;

/// `JSON.parse` semantics for repeated keys: first position, last value.
fn dedupe(mut members: Members<'_>) -> Members<'_> {
    let n = members.len();
    if n < 2 {
        return members;
    }
    // Signalling messages have a handful of distinct keys: check that cheaply first.
    if n <= SMALL_OBJECT && !(1..n).any(|i| members[..i].iter().any(|(k, _)| *k == members[i].0)) {
        return members;
    }
    let mut first: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(members.len());
    let mut out: Members<'_> = Vec::with_capacity(members.len());
    for (key, value) in members.drain(..) {
        if let Some(&at) = first.get(&key) {
            out[at].1 = value;
        } else {
            first.insert(key.clone(), out.len());
            out.push((key, value));
        }
    }
    out
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(members)
    }
}

/// Deserializes a key without copying it unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Appends `raw` (valid JSON) without the white space outside strings. Runs between white
/// space are copied whole, and strings are skipped to their next quote or backslash with
/// `memchr`, so long SDP and candidate strings cost a few bulk copies.
///
/// It also counts nesting on the way, which costs the hot path nothing more than a compare per
/// bracket: false (with `out` holding part of `raw`) as soon as `raw` nests arrays and objects
/// more than `levels` deep.
fn push_compact(out: &mut String, raw: &str, levels: usize) -> bool {
    compact_within(Some(out), raw, levels)
}

/// The one scan behind [`push_compact`] and [`nests_at_most`]: with `out`, appends `raw`
/// without white space outside strings; either way, false as soon as nesting passes `levels`.
fn compact_within(mut out: Option<&mut String>, raw: &str, levels: usize) -> bool {
    let bytes = raw.as_bytes();
    let mut run_start = 0;
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => i = string_end(bytes, i + 1),
            b'[' | b'{' => {
                depth += 1;
                if depth > levels {
                    return false;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                // White space is ASCII, so both ends of the run are char boundaries.
                if let Some(out) = out.as_deref_mut() {
                    out.push_str(raw.get(run_start..i).unwrap_or_default());
                }
                i += 1;
                while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    i += 1;
                }
                run_start = i;
            }
            _ => i += 1,
        }
    }
    if let Some(out) = out {
        out.push_str(raw.get(run_start..).unwrap_or_default());
    }
    true
}

/// The index just past the closing quote of the string whose contents start at `from`.
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(offset) = bytes
        .get(from..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        let at = from + offset;
        if bytes.get(at) == Some(&b'"') {
            return at + 1;
        }
        // A backslash escapes the next byte (always ASCII in valid JSON).
        from = at + 2;
    }
    bytes.len()
}

/// `raw` (valid JSON, whose depth was checked) without the white space outside strings.
pub(crate) fn compact(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    push_compact(&mut out, raw, usize::MAX);
    out
}

/// Appends `key` as a JSON string token.
fn push_key(out: &mut String, key: &str) {
    if key
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        // Escaping a str into JSON cannot fail.
        out.push_str(&serde_json::to_string(key).unwrap_or_else(|_| String::from("\"\"")));
    }
}

impl Relay {
    /// Parses a message that must be a JSON object.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::from_members(&parse_members(text)?)
    }

    /// The message made of `members`; [`ParseError::TooDeep`] if it nests deeper than
    /// [`MAX_NESTING_DEPTH`].
    pub(crate) fn from_members(members: &[(Cow<'_, str>, &RawValue)]) -> Result<Self, ParseError> {
        let capacity = members
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2;
        let mut json = String::with_capacity(capacity);
        let mut spans = Vec::with_capacity(members.len());
        json.push('{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let key_start = json.len();
            push_key(&mut json, key);
            let key_end = json.len();
            json.push(':');
            let value_start = json.len();
            if !push_compact(&mut json, value.get(), MEMBER_LEVELS) {
                return Err(ParseError::TooDeep);
            }
            spans.push(Member {
                key_start,
                key_end,
                value_start,
                value_end: json.len(),
            });
        }
        json.push('}');
        Ok(Self {
            json,
            members: spans,
        })
    }

    /// The message as compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// The message as compact JSON text.
    pub fn into_string(self) -> String {
        self.json
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.members.iter().position(|m| {
            // Keys are stored as compact tokens whose interior equals the key for every key
            // without quotes, backslashes or control characters, which covers all we look up.
            &self.json[m.key_start + 1..m.key_end - 1] == key
        })
    }

    /// The raw JSON text of the value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key)
            .map(|i| &self.json[self.members[i].value()])
    }

    /// The keys in order, as their JSON tokens' interiors.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .map(|m| &self.json[m.key_start + 1..m.key_end - 1])
    }

    /// Sets `key` to the JSON text `raw_value`: in place if present, else appended last.
    pub fn set_raw(&mut self, key: &str, raw_value: &str) {
        if let Some(i) = self.position(key) {
            let range = self.members[i].value();
            let delta = raw_value.len() as isize - range.len() as isize;
            self.json.replace_range(range, raw_value);
            self.members[i].value_end = self.members[i].value_end.wrapping_add_signed(delta);
            for m in &mut self.members[i + 1..] {
                m.shift(delta);
            }
            return;
        }
        let close = self.json.len() - 1; // the final '}'
        let mut tail = String::with_capacity(key.len() + raw_value.len() + 5);
        if !self.members.is_empty() {
            tail.push(',');
        }
        let key_start = close + tail.len();
        push_key(&mut tail, key);
        let key_end = close + tail.len();
        tail.push(':');
        let value_start = close + tail.len();
        tail.push_str(raw_value);
        let value_end = close + tail.len();
        self.json.insert_str(close, &tail);
        self.members.push(Member {
            key_start,
            key_end,
            value_start,
            value_end,
        });
    }

    /// Sets `key` to the JSON string `value`.
    pub fn set_str(&mut self, key: &str, value: &str) {
        let mut token = String::with_capacity(value.len() + 2);
        push_key(&mut token, value);
        self.set_raw(key, &token);
    }

    /// Removes `key` if present.
    pub fn remove(&mut self, key: &str) {
        let Some(i) = self.position(key) else {
            return;
        };
        let m = self.members[i];
        // Take the comma after the member, or before it when it is the last one.
        let range = if i + 1 < self.members.len() {
            m.key_start..self.members[i + 1].key_start
        } else if i > 0 {
            self.members[i - 1].value_end..m.value_end
        } else {
            m.key_start..m.value_end
        };
        let delta = -(range.len() as isize);
        self.json.replace_range(range, "");
        self.members.remove(i);
        for m in &mut self.members[i..] {
            m.shift(delta);
        }
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Relay").field(&self.json).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(text: &str) -> Relay {
        Relay::parse(text).unwrap()
    }

    #[test]
    fn keeps_every_key_and_exact_numbers_in_order() {
        let r = relay(
            r#"{"type":"offer", "zeta":1.0, "big":12345678901234567, "nested":{"b": [1, 2], "a":"x y"}, "alpha":null}"#,
        );
        assert_eq!(
            r.as_str(),
            r#"{"type":"offer","zeta":1.0,"big":12345678901234567,"nested":{"b":[1,2],"a":"x y"},"alpha":null}"#
        );
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            ["type", "zeta", "big", "nested", "alpha"]
        );
        assert_eq!(r.get("big"), Some("12345678901234567"));
    }

    #[test]
    fn strings_keep_their_escapes_and_inner_spaces() {
        let text = r#"{"sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n","q":"\"quoted\" \\ \u00e9"}"#;
        assert_eq!(relay(text).as_str(), text);
    }

    #[test]
    fn white_space_goes_only_outside_strings_even_after_escaped_quotes() {
        let text = "{ \"a\" :\t\"x\\\" y\\\\\" ,\r\n \"b\" : [ 1 , \" \\\\ \" , { } ] }";
        assert_eq!(relay(text).as_str(), r#"{"a":"x\" y\\","b":[1," \\ ",{}]}"#);
    }

    #[test]
    fn set_replaces_in_place_or_appends_last() {
        let mut r = relay(r#"{"type":"layerPreference","playerId":"","spatialLayer":1}"#);
        r.set_str("playerId", "Player7");
        assert_eq!(
            r.as_str(),
            r#"{"type":"layerPreference","playerId":"Player7","spatialLayer":1}"#
        );
        r.set_str("sfuId", "Player0");
        assert_eq!(
            r.as_str(),
            r#"{"type":"layerPreference","playerId":"Player7","spatialLayer":1,"sfuId":"Player0"}"#
        );
        assert_eq!(r.get("spatialLayer"), Some("1"));
        assert_eq!(r.get("sfuId"), Some("\"Player0\""));
        let mut empty = relay("{}");
        empty.set_str("playerId", "a\"b");
        assert_eq!(empty.as_str(), r#"{"playerId":"a\"b"}"#);
    }

    #[test]
    fn remove_takes_one_comma() {
        let mut r = relay(r#"{"type":"offer","playerId":"P","sdp":"x"}"#);
        r.remove("playerId");
        assert_eq!(r.as_str(), r#"{"type":"offer","sdp":"x"}"#);
        r.remove("sdp");
        assert_eq!(r.as_str(), r#"{"type":"offer"}"#);
        r.remove("type");
        assert_eq!(r.as_str(), "{}");
        r.remove("absent");
        assert_eq!(r.as_str(), "{}");
        r.set_str("playerId", "P1");
        assert_eq!(r.as_str(), r#"{"playerId":"P1"}"#);
    }

    #[test]
    fn repeated_keys_keep_first_place_and_last_value() {
        let r = relay(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(r.as_str(), r#"{"a":3,"b":2}"#);
        // Past the small-object scan, the same through the hash map.
        let keys: Vec<String> = (0..20).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let r = relay(&format!("{{{},\"k3\":\"last\"}}", keys.join(",")));
        let expected = keys.join(",").replace(r#""k3":3"#, r#""k3":"last""#);
        assert_eq!(r.as_str(), format!("{{{expected}}}"));
    }

    #[test]
    fn escaped_keys_are_reserialized() {
        let r = relay(r#"{"pl\u0061yerId":"x","new\nline":1}"#);
        assert_eq!(r.get("playerId"), Some("\"x\""));
        assert_eq!(r.as_str(), r#"{"playerId":"x","new\nline":1}"#);
    }

    #[test]
    fn rejects_non_objects_and_non_json() {
        assert_eq!(Relay::parse("[1]"), Err(ParseError::NotObject));
        assert_eq!(Relay::parse("null"), Err(ParseError::NotObject));
        assert_eq!(Relay::parse("\"s\""), Err(ParseError::NotObject));
        assert!(matches!(Relay::parse("{"), Err(ParseError::NotJson(_))));
        assert!(matches!(Relay::parse("{} x"), Err(ParseError::NotJson(_))));
        assert!(matches!(Relay::parse(""), Err(ParseError::NotJson(_))));
    }

    /// `{"type":"iceCandidate","candidate":V}` where V nests `levels` arrays or objects
    /// (chosen by `objects`, cycled), so the message nests `levels + 1`.
    fn nested_candidate(levels: usize, objects: &[bool]) -> String {
        let mut open = String::new();
        let mut close = String::new();
        for i in 0..levels {
            if objects.get(i % objects.len().max(1)) == Some(&true) {
                open.push_str(r#"{"k":"]}[{","#);
                open.push_str(r#""v":"#);
                close.insert(0, '}');
            } else {
                open.push_str(r#"["[{",1,"#);
                close.insert(0, ']');
            }
        }
        format!(r#"{{"type":"iceCandidate","candidate":{open}0{close}}}"#)
    }

    #[test]
    fn nesting_up_to_the_limit_is_kept_and_one_level_more_is_too_deep() {
        for shape in [&[false][..], &[true], &[true, false]] {
            let at_limit = nested_candidate(MAX_NESTING_DEPTH - 1, shape);
            assert_eq!(relay(&at_limit).as_str(), at_limit, "{shape:?}");
            let over = nested_candidate(MAX_NESTING_DEPTH, shape);
            assert_eq!(Relay::parse(&over), Err(ParseError::TooDeep), "{shape:?}");
        }
    }

    #[test]
    fn a_flood_of_nested_arrays_is_too_deep() {
        // What one 1 MiB message can hold.
        let deep = format!(
            r#"{{"type":"iceCandidate","candidate":{}{}}}"#,
            "[".repeat(400_000),
            "]".repeat(400_000)
        );
        assert_eq!(Relay::parse(&deep), Err(ParseError::TooDeep));
        // Unbalanced: not JSON at all.
        let open = format!(r#"{{"type":"offer","x":{}"#, "[".repeat(400_000));
        assert!(matches!(Relay::parse(&open), Err(ParseError::NotJson(_))));
    }

    #[test]
    fn brackets_inside_strings_and_side_by_side_values_do_not_nest() {
        let brackets = "[{".repeat(10_000);
        let text = format!(r#"{{"type":"offer","sdp":"{brackets}\\\"[","k{brackets}":1}}"#);
        assert_eq!(relay(&text).as_str(), text);
        // Many siblings, each shallow: width is not depth.
        let wide = format!(r#"{{"a":[{}[]]}}"#, "[[]],{},".repeat(10_000));
        assert!(Relay::parse(&wide).is_ok());
    }

    #[test]
    fn a_too_deep_value_counts_even_under_a_repeated_key() {
        let deep = nested_candidate(MAX_NESTING_DEPTH, &[false]);
        let text = deep.replacen('{', r#"{"candidate":1,"#, 1);
        assert_eq!(Relay::parse(&text), Err(ParseError::TooDeep));
    }

    proptest::proptest! {
        #[test]
        fn accepted_exactly_up_to_the_limit(
            // serde_json's `Value`, the reference here, stops at 128 levels.
            levels in 0..(MAX_NESTING_DEPTH * 3 / 2),
            shape in proptest::collection::vec(proptest::bool::ANY, 1..5),
        ) {
            let text = nested_candidate(levels, &shape);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let depth = json_depth(&value);
            proptest::prop_assert_eq!(depth, levels + 1);
            let parsed = Relay::parse(&text);
            if depth <= MAX_NESTING_DEPTH {
                proptest::prop_assert_eq!(parsed.map(Relay::into_string), Ok(text));
            } else {
                proptest::prop_assert_eq!(parsed, Err(ParseError::TooDeep));
            }
        }

        #[test]
        fn compact_output_means_the_same_json(value in arb_object()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let r = Relay::parse(&pretty).unwrap();
            let back: serde_json::Value = serde_json::from_str(r.as_str()).unwrap();
            proptest::prop_assert_eq!(back, value.clone());
            proptest::prop_assert_eq!(r.as_str(), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn set_and_remove_keep_valid_json(value in arb_object(), key in "[a-zA-Z]{1,6}", id in ".{0,8}") {
            let mut r = Relay::parse(&serde_json::to_string(&value).unwrap()).unwrap();
            r.set_str(&key, &id);
            let mut expected = value.as_object().unwrap().clone();
            expected.insert(key.clone(), serde_json::Value::String(id.clone()));
            let back: serde_json::Value = serde_json::from_str(r.as_str()).unwrap();
            proptest::prop_assert_eq!(&back, &serde_json::Value::Object(expected.clone()));
            r.remove(&key);
            expected.remove(&key);
            let back: serde_json::Value = serde_json::from_str(r.as_str()).unwrap();
            proptest::prop_assert_eq!(back, serde_json::Value::Object(expected));
        }
    }

    /// Arrays and objects nested in `v`, itself included.
    fn json_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn arb_object() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,10}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z ]{0,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-zA-Z\"\\\\]{0,5}", value, 0..6)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }
}
