//! Person properties as per-key registers whose join is commutative, associative and
//! idempotent, so any order of writes (and any repeat after a crash) gives the same result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::input::Stamp;

/// Values are kept as JSON text: the store's encoding needs no self-describing format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registers {
    /// `$set` / `$unset`: the latest stamp wins; `None` is an `$unset` tombstone.
    set: BTreeMap<String, (Stamp, Option<String>)>,
    /// `$set_once`: the earliest stamp wins.
    set_once: BTreeMap<String, (Stamp, String)>,
}

/// A value's compact JSON text. `serde_json::to_string` writes into a byte buffer; `Display`
/// goes through the formatter one fragment at a time, which is several times slower here.
pub(super) fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Keeps the write with the latest stamp (shared by person and group properties). The value
/// is made only when it is kept: most writes of a busy person lose to a stored one.
pub(super) fn join_latest<V>(
    slot: &mut BTreeMap<String, (Stamp, V)>,
    key: &str,
    stamp: Stamp,
    v: impl FnOnce() -> V,
) {
    match slot.get_mut(key) {
        Some(cur) if cur.0 >= stamp => {}
        Some(cur) => *cur = (stamp, v()),
        None => {
            slot.insert(key.to_owned(), (stamp, v()));
        }
    }
}

fn join_earliest(
    slot: &mut BTreeMap<String, (Stamp, String)>,
    key: &str,
    stamp: Stamp,
    v: impl FnOnce() -> String,
) {
    match slot.get_mut(key) {
        Some(cur) if cur.0 <= stamp => {}
        Some(cur) => *cur = (stamp, v()),
        None => {
            slot.insert(key.to_owned(), (stamp, v()));
        }
    }
}

impl Registers {
    /// Applies one event's writes. Within an event `$unset` beats `$set`.
    pub fn write(
        &mut self,
        stamp: Stamp,
        set: &Map<String, Value>,
        set_once: &Map<String, Value>,
        unset: &[String],
    ) {
        for key in unset {
            join_latest(&mut self.set, key, stamp, || None);
        }
        for (key, value) in set {
            if !unset.contains(key) {
                join_latest(&mut self.set, key, stamp, || Some(json_text(value)));
            }
        }
        for (key, value) in set_once {
            join_earliest(&mut self.set_once, key, stamp, || json_text(value));
        }
    }

    #[cfg(test)]
    pub fn write_once(&mut self, stamp: Stamp, key: &str, value: &Value) {
        join_earliest(&mut self.set_once, key, stamp, || json_text(value));
    }

    pub fn join(&mut self, other: &Registers) {
        for (key, (stamp, v)) in &other.set {
            join_latest(&mut self.set, key, *stamp, || v.clone());
        }
        for (key, (stamp, v)) in &other.set_once {
            join_earliest(&mut self.set_once, key, *stamp, || v.clone());
        }
    }

    /// The visible properties as `(key, JSON text)`, sorted by key: the `$set` register when
    /// written (a tombstone hides the key), else the `$set_once` one. `once` is one more
    /// `$set_once` write `(key, stamp, text)`, seen as if [`Registers::write_once`] had made it.
    fn visible_texts<'a>(
        &'a self,
        once: Option<(&'a str, Stamp, &'a str)>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut keys: Vec<&str> = self
            .set
            .keys()
            .chain(self.set_once.keys())
            .map(String::as_str)
            .chain(once.map(|(k, _, _)| k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter().filter_map(move |k| {
            let v = match self.set.get(k) {
                Some((_, Some(v))) => v.as_str(),
                Some((_, None)) => return None,
                None => {
                    let stored = self.set_once.get(k).map(|(s, v)| (*s, v.as_str()));
                    let extra = once.filter(|(key, _, _)| *key == k).map(|(_, s, v)| (s, v));
                    match (stored, extra) {
                        (Some((a, v)), Some((b, _))) if a <= b => v,
                        (_, Some((_, v))) => v,
                        (Some((_, v)), None) => v,
                        (None, None) => return None,
                    }
                }
            };
            Some((k, v))
        })
    }

    /// The visible properties, sorted by key (what [`Registers::visible_json`] writes).
    #[cfg(test)]
    pub fn visible(&self) -> Map<String, Value> {
        self.visible_texts(None)
            .map(|(k, v)| (k.to_owned(), serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect()
    }

    /// [`Registers::visible`] as a JSON object's text, written straight from the stored texts
    /// (which are serde_json's own compact output), without parsing them again.
    #[cfg(test)]
    pub fn visible_json(&self) -> String {
        self.visible_json_with_once(None)
    }

    /// [`Registers::visible_json`] after one more `$set_once` write `(key, stamp, value)`,
    /// without changing (or copying) the registers.
    pub fn visible_json_with_once(&self, once: Option<(&str, Stamp, &Value)>) -> String {
        let once_text = once.map(|(_, _, v)| json_text(v));
        let once = once
            .zip(once_text.as_deref())
            .map(|((k, s, _), text)| (k, s, text));
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (i, (k, v)) in self.visible_texts(once).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a `&str` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'}');
        // Keys are escaped UTF-8 and values are serde_json's own output: valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(ts: i64) -> Stamp {
        Stamp { ts_us: ts, uuid: 0 }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn writes_commute_and_repeat_harmlessly() {
        let writes = [
            (
                s(1),
                obj(json!({"a": 1, "b": 1})),
                obj(json!({"c": 1})),
                vec![],
            ),
            (
                s(2),
                obj(json!({"a": 2})),
                obj(json!({"c": 2, "d": 2})),
                vec!["b".to_string()],
            ),
            (s(3), obj(json!({"b": 3})), obj(json!({})), vec![]),
        ];
        let apply = |order: &[usize]| {
            let mut r = Registers::default();
            for &i in order {
                let (st, set, once, unset) = &writes[i];
                r.write(*st, set, once, unset);
            }
            r
        };
        let a = apply(&[0, 1, 2]);
        assert_eq!(a, apply(&[2, 1, 0]));
        assert_eq!(a, apply(&[1, 2, 0, 1, 2]));
        assert_eq!(a.visible(), obj(json!({"a": 2, "b": 3, "c": 1, "d": 2})));
    }

    #[test]
    fn visible_json_is_the_visible_map_serialized() {
        let mut r = Registers::default();
        r.write(
            s(1),
            &obj(json!({"q\"uote": "a\nb", "n": 1.5, "o": {"x": [1, null]}, "gone": true})),
            &obj(json!({"once": "é", "n": 0})),
            &["gone".into()],
        );
        let text = r.visible_json();
        assert_eq!(text, Value::Object(r.visible()).to_string());
        assert_eq!(Registers::default().visible_json(), "{}");
    }

    #[test]
    fn visible_json_with_once_equals_writing_once_first() {
        let mut r = Registers::default();
        r.write(
            s(5),
            &obj(json!({"set": 1})),
            &obj(json!({"early": "stored", "late": "stored"})),
            &["gone".into()],
        );
        for (key, stamp) in [
            ("early", 9),
            ("late", 1),
            ("new", 3),
            ("set", 0),
            ("gone", 0),
        ] {
            let value = json!(format!("{key}@{stamp}"));
            let mut written = r.clone();
            written.write_once(s(stamp), key, &value);
            assert_eq!(
                r.visible_json_with_once(Some((key, s(stamp), &value))),
                written.visible_json(),
                "{key}"
            );
        }
    }

    #[test]
    fn a_tombstone_hides_a_set_once_and_unset_beats_set_in_one_event() {
        let mut r = Registers::default();
        r.write(
            s(5),
            &obj(json!({"k": 1})),
            &obj(json!({"k": 0})),
            &["k".into()],
        );
        assert_eq!(r.visible(), Map::new());
        r.write(s(6), &Map::new(), &obj(json!({"k": 9})), &[]);
        assert_eq!(
            r.visible(),
            Map::new(),
            "the earlier tombstone still hides k"
        );
        r.write(s(7), &obj(json!({"k": 2})), &Map::new(), &[]);
        assert_eq!(r.visible(), obj(json!({"k": 2})));
    }

    #[test]
    fn join_is_the_same_as_writing_both() {
        let mut a = Registers::default();
        a.write(s(1), &obj(json!({"x": "a"})), &obj(json!({"y": "a"})), &[]);
        let mut b = Registers::default();
        b.write(s(2), &obj(json!({"x": "b"})), &obj(json!({"y": "b"})), &[]);
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.visible(), obj(json!({"x": "b", "y": "a"})));
    }
}
