//! JSON text into serde_json's `Value`, with the outer objects sized up front.
//!
//! serde_json builds every object from an empty map, so an event's `data` and its `properties`
//! (tens of keys from a web SDK) regrow their entries and their hash table several times while
//! they are parsed: a visible share of the engine's CPU in profiles. This visitor builds the
//! same values, only with room for [`OUTER_KEYS`] keys in the two outer levels; deeper objects
//! (`$set`, elements) are small and grow as serde_json's do. One difference, on purpose: with
//! its `raw_value` feature serde_json reads an object whose first key is its private raw-value
//! marker as that raw value; here it is an ordinary key, as it is in the event.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Keys the outer two levels of objects have room for before they grow.
const OUTER_KEYS: usize = 32;

/// Parses `text` as [`serde_json::from_str`] would parse it into a [`Value`].
pub fn parse(text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = ValueAt { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A value at `depth` (0 for the text's outermost value).
#[derive(Clone, Copy)]
struct ValueAt {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueAt {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueAt {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = ValueAt {
            depth: self.depth + 1,
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = ValueAt {
            depth: self.depth + 1,
        };
        let room = if self.depth < 2 { OUTER_KEYS } else { 0 };
        let mut map = Map::with_capacity(access.size_hint().unwrap_or(room));
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(inner)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_as_serde_json(text: &str) {
        let ours = parse(text).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
        // Key order too: `Value`'s equality does not look at it.
        if let (Ok(a), Ok(b)) = (&ours, &theirs) {
            assert_eq!(a.to_string(), b.to_string());
        }
    }

    #[test]
    fn every_kind_of_value_parses_as_serde_json_parses_it() {
        for text in [
            r#"{"event":"$pageview","properties":{"$browser":"Firefox","n":-3,"u":18446744073709551615,"f":1.5e3,"b":true,"z":null,"a":[1,"x",{"k":[]}],"o":{"deep":{"deeper":{}}},"esc":"\"\\u00e9\n","dup":1,"dup":2}}"#,
            "[]",
            "\"text\"",
            "12",
            " {} ",
            "{\"a\":1} trailing",
            "{\"a\":",
            "{\"a\":1,}",
            "1e400",
            "",
        ] {
            same_as_serde_json(text);
        }
    }

    proptest! {
        #[test]
        fn any_value_round_trips_as_serde_json_parses_it(v in arbitrary_json()) {
            same_as_serde_json(&v.to_string());
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 40, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(("[a-z$]{0,6}", inner), 0..40)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}
