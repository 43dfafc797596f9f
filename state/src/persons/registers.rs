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

/// How many earlier values each `$set` key of a distinct id keeps beside its latest write: an
/// event no older than a key's `HISTORY`-th latest change sees that key exactly as it was (see
/// `docs/persons-design.md`, "Persons on events").
pub const HISTORY: usize = 8;

/// A `$set`/`$unset` write: its stamp and value (`None` for `$unset`).
type Write = (Stamp, Option<String>);

/// The `$set`/`$unset` writes that lost to a later one, per key, oldest first: only the writes
/// that changed the key's value (a `$set` of the value the key already had adds nothing to what
/// any time saw), at most [`HISTORY`] per key. The last one may hold the latest write's value:
/// it is then where that value's final run began.
///
/// For writes arriving in any order this is the same list, with one exception that only late
/// writes can make: a write of another value landing between two writes of one value that were
/// folded together. The events between it and the next of those writes then see its value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Earlier(BTreeMap<String, Vec<Write>>);

impl Earlier {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records `lost`, a write of `key` that a later one beat.
    fn keep(&mut self, key: &str, lost: Write) {
        if !self.0.contains_key(key) {
            self.0.insert(key.to_owned(), Vec::new());
        }
        let list = self.0.get_mut(key).expect("inserted above");
        let Err(at) = list.binary_search_by_key(&lost.0, |(s, _)| *s) else {
            return;
        };
        // `$unset`s are never folded: they are rare, and keeping them keeps them exact.
        let folds = |other: &Write| lost.1.is_some() && other.1 == lost.1;
        if at > 0 && folds(&list[at - 1]) {
            // The value the key already had: nothing changed.
            return;
        }
        if list.get(at).is_some_and(folds) {
            // The next change had this value: it now starts here.
            list[at] = lost;
        } else if at > 0 || list.len() < HISTORY {
            list.insert(at, lost);
            if list.len() > HISTORY {
                list.remove(0);
            }
        }
    }

    /// Joins another record's earlier writes of the same distinct id.
    pub fn join(&mut self, other: &Earlier) {
        for (key, list) in &other.0 {
            for lost in list {
                self.keep(key, lost.clone());
            }
        }
    }

    /// The latest losing write of `key` stamped at or before `at`.
    fn at(&self, key: &str, at: Stamp) -> Option<(Stamp, &Option<String>)> {
        let list = self.0.get(key)?;
        list.iter()
            .rev()
            .find(|(s, _)| *s <= at)
            .map(|(s, v)| (*s, v))
    }

    /// Where the final run of `latest`'s value began: the last kept change when it holds the
    /// same value, else the latest write itself.
    fn run_start(&self, key: &str, latest: &Write) -> Stamp {
        match self.0.get(key).and_then(|l| l.last()) {
            Some((s, v)) if v.is_some() && *v == latest.1 => *s,
            _ => latest.0,
        }
    }
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
    /// Applies one event's writes. Within an event `$unset` beats `$set`. The `$set`/`$unset`
    /// writes that lose (now or to a write already held) go to `earlier`.
    pub fn write(
        &mut self,
        earlier: &mut Earlier,
        stamp: Stamp,
        set: &Map<String, Value>,
        set_once: &Map<String, Value>,
        unset: &[String],
    ) {
        for key in unset {
            self.set_latest(earlier, key, stamp, || None);
        }
        for (key, value) in set {
            if !unset.contains(key) {
                self.set_latest(earlier, key, stamp, || Some(json_text(value)));
            }
        }
        for (key, value) in set_once {
            join_earliest(&mut self.set_once, key, stamp, || json_text(value));
        }
    }

    /// [`join_latest`] for a `$set` register, keeping the losing write in `earlier`.
    fn set_latest(
        &mut self,
        earlier: &mut Earlier,
        key: &str,
        stamp: Stamp,
        v: impl FnOnce() -> Option<String>,
    ) {
        match self.set.get_mut(key) {
            // The same write again.
            Some(cur) if cur.0 == stamp => {}
            Some(cur) if cur.0 > stamp => earlier.keep(key, (stamp, v())),
            Some(cur) => {
                let lost = std::mem::replace(cur, (stamp, v()));
                earlier.keep(key, lost);
            }
            None => {
                self.set.insert(key.to_owned(), (stamp, v()));
            }
        }
    }

    /// [`Registers::join`], keeping the `$set` writes that lose in `earlier`.
    pub fn join_keeping(&mut self, earlier: &mut Earlier, other: &Registers) {
        for (key, (stamp, v)) in &other.set {
            self.set_latest(earlier, key, *stamp, || v.clone());
        }
        for (key, (stamp, v)) in &other.set_once {
            join_earliest(&mut self.set_once, key, *stamp, || v.clone());
        }
    }

    /// The registers as they were at `at`: only writes stamped at or before it, each `$set`
    /// key's from `earlier` when its latest write is later.
    pub fn as_of(&self, earlier: Option<&Earlier>, at: Stamp) -> Registers {
        let mut r = Registers::default();
        for (key, (stamp, v)) in &self.set {
            let kept = if *stamp <= at {
                Some((*stamp, v))
            } else {
                earlier.and_then(|e| e.at(key, at))
            };
            if let Some((stamp, v)) = kept {
                r.set.insert(key.clone(), (stamp, v.clone()));
            }
        }
        for (key, (stamp, v)) in &self.set_once {
            if *stamp <= at {
                r.set_once.insert(key.clone(), (*stamp, v.clone()));
            }
        }
        r
    }

    /// The stamp of the latest change held, if any: the start of each `$set` key's final run
    /// of one value, and each `$set_once` write. An event stamped at or after it sees the
    /// registers as they are.
    pub fn latest_change(&self, earlier: Option<&Earlier>) -> Option<Stamp> {
        let set = self.set.iter().map(|(key, latest)| match earlier {
            Some(e) => e.run_start(key, latest),
            None => latest.0,
        });
        set.chain(self.set_once.values().map(|(s, _)| *s)).max()
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
                r.write(&mut Earlier::default(), *st, set, once, unset);
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
            &mut Earlier::default(),
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
            &mut Earlier::default(),
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
            &mut Earlier::default(),
            s(5),
            &obj(json!({"k": 1})),
            &obj(json!({"k": 0})),
            &["k".into()],
        );
        assert_eq!(r.visible(), Map::new());
        r.write(
            &mut Earlier::default(),
            s(6),
            &Map::new(),
            &obj(json!({"k": 9})),
            &[],
        );
        assert_eq!(
            r.visible(),
            Map::new(),
            "the earlier tombstone still hides k"
        );
        r.write(
            &mut Earlier::default(),
            s(7),
            &obj(json!({"k": 2})),
            &Map::new(),
            &[],
        );
        assert_eq!(r.visible(), obj(json!({"k": 2})));
    }

    #[test]
    fn join_is_the_same_as_writing_both() {
        let mut a = Registers::default();
        a.write(
            &mut Earlier::default(),
            s(1),
            &obj(json!({"x": "a"})),
            &obj(json!({"y": "a"})),
            &[],
        );
        let mut b = Registers::default();
        b.write(
            &mut Earlier::default(),
            s(2),
            &obj(json!({"x": "b"})),
            &obj(json!({"y": "b"})),
            &[],
        );
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.visible(), obj(json!({"x": "b", "y": "a"})));
    }

    /// Every order of the same writes keeps the same earlier writes, and the registers as of
    /// any time are those of the writes made up to then (while within [`HISTORY`]).
    #[test]
    fn earlier_writes_give_the_registers_at_any_time_in_any_order() {
        let writes: Vec<(Stamp, Map<String, Value>, Vec<String>)> = (0..12)
            .map(|i| {
                let set = obj(json!({"k": i, "double": i * 2}));
                let unset = if i == 7 {
                    vec!["k".to_string()]
                } else {
                    vec![]
                };
                (s(i * 10), set, unset)
            })
            .collect();
        let apply = |order: &[usize]| {
            let (mut r, mut e) = (Registers::default(), Earlier::default());
            for &i in order {
                let (st, set, unset) = &writes[i];
                r.write(&mut e, *st, set, &Map::new(), unset);
            }
            (r, e)
        };
        let forward: Vec<usize> = (0..12).collect();
        let (r, e) = apply(&forward);
        let mut shuffled = forward.clone();
        crate::persons::reference::Rng(3).shuffle(&mut shuffled);
        let again: Vec<usize> = shuffled.iter().chain(&[4, 9, 0]).copied().collect();
        assert_eq!((r.clone(), e.clone()), apply(&again));
        for at in 0..120 {
            // The writes up to `at`, in order: what the registers held then.
            let upto: Vec<usize> = forward.iter().copied().filter(|i| i * 10 <= at).collect();
            let oldest_kept = 12 - 1 - HISTORY;
            if upto.last().is_some_and(|i| *i >= oldest_kept) {
                assert_eq!(
                    r.as_of(Some(&e), s(at as i64)).visible(),
                    apply(&upto).0.visible(),
                    "at {at}"
                );
            }
        }
        assert_eq!(r.as_of(Some(&e), s(200)), r);
    }

    /// A `$set` of the value a key already has is folded into the write that set it: a
    /// constant property costs one kept write however often it is sent, in any order, and
    /// every time still sees the right value.
    #[test]
    fn writes_of_the_same_value_fold_into_the_change_that_made_it() {
        let value = |i: i64| if (5..12).contains(&i) { "b" } else { "a" };
        let apply = |order: &[i64]| {
            let (mut r, mut e) = (Registers::default(), Earlier::default());
            for &i in order {
                let set = obj(json!({"k": value(i)}));
                r.write(&mut e, s(i * 10), &set, &Map::new(), &[]);
            }
            (r, e)
        };
        let forward: Vec<i64> = (0..20).collect();
        let (r, e) = apply(&forward);
        assert_eq!(
            e.0["k"].iter().map(|(s, _)| s.ts_us).collect::<Vec<_>>(),
            [0, 50, 120]
        );
        assert_eq!(
            r.latest_change(Some(&e)),
            Some(s(120)),
            "where the final run began"
        );
        let mut shuffled = forward.clone();
        crate::persons::reference::Rng(5).shuffle(&mut shuffled);
        assert_eq!((r.clone(), e.clone()), apply(&shuffled));
        for at in 0..200 {
            let want = value((at / 10).min(19));
            assert_eq!(
                r.as_of(Some(&e), s(at)).visible()["k"],
                json!(want),
                "at {at}"
            );
        }
        // The one case folding cannot know: a late other value between two folded writes of
        // one value. Times after it see it until the next change that was kept.
        let (mut r, mut e) = apply(&[0, 1, 2]);
        r.write(&mut e, s(15), &obj(json!({"k": "late"})), &Map::new(), &[]);
        assert_eq!(
            r.as_of(Some(&e), s(17)).visible()["k"],
            json!("late"),
            "exact"
        );
        assert_eq!(
            r.as_of(Some(&e), s(19)).visible()["k"],
            json!("late"),
            "a@10 was folded"
        );
        assert_eq!(
            r.as_of(Some(&e), s(20)).visible()["k"],
            json!("a"),
            "the latest write"
        );
    }
}
