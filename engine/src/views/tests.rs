//! The built-in views against a batch reference: for generated histories of events, copies and
//! merges, in any arrival order and batching, on one or two workers, each view's table equals
//! the aggregate computed at the end from the events, each joined to its final person (what
//! SQL over `events` joined through `person_distinct_id_overrides` computes).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use uuid::Uuid;

use super::{
    Column, DailyActivePersons, EventsPerDay, FirstSeen, Input, Kind, Properties, Row, Rows,
    SessionsPerDay, TableSpec, Value, View, ViewEvent, WeeklyActivePersons,
    testing::{Table, Update, run},
};

const DAY: i64 = 86_400_000_000;
const IDS: usize = 6;

#[derive(Debug, Clone)]
struct Spec {
    uuid: u8,
    id: usize,
    stored_person: u8,
    day: i64,
    micros: i64,
    event: &'static str,
    session: Option<u8>,
    domain: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..40,
        0..IDS,
        0u8..4,
        0i64..9,
        0i64..30_000_000,
        prop::sample::select(vec!["$pageview", "$autocapture", "click"]),
        prop::option::of(0u8..4),
        0u8..3,
    )
        .prop_map(
            |(uuid, id, stored_person, day, micros, event, session, domain)| Spec {
                uuid,
                id,
                stored_person,
                day,
                micros,
                event,
                session,
                domain,
            },
        )
}

fn event(s: &Spec) -> ViewEvent {
    let mut props = serde_json::Map::new();
    if let Some(session) = s.session {
        props.insert("$session_id".into(), format!("s{session}").into());
    }
    props.insert(
        "$referring_domain".into(),
        format!("d{}.com", s.domain).into(),
    );
    ViewEvent {
        team_id: 1 + (s.id % 2) as i64,
        // 2026-11-30, a Monday, plus up to 9 days: two weeks.
        timestamp: (20_422 + s.day) * DAY + s.micros,
        // Same uuid on another distinct id is another event in `events`' key, as here.
        uuid: Uuid::from_u128(u128::from(s.uuid)),
        event: s.event.into(),
        distinct_id: format!("d{}", s.id),
        person: Uuid::from_u128(100 + u128::from(s.stored_person)),
        properties: serde_json::Value::Object(props).to_string().as_str().into(),
    }
}

/// What the final tables hold after a history.
struct Final {
    /// Each event once (the `events` key; the last to arrive of a key wins, as under `FINAL`),
    /// with its final person.
    events: Vec<ViewEvent>,
    /// Each person's last properties (`person FINAL`), unless it is gone.
    persons: HashMap<(i64, Uuid), Properties>,
}

fn final_state(arrived: &[Vec<Update>]) -> Final {
    let mut persons = HashMap::new();
    let mut last_override: HashMap<String, Uuid> = HashMap::new();
    let mut by_key: BTreeMap<(i64, i32, String, String, Uuid), ViewEvent> = BTreeMap::new();
    for input in arrived.iter().flatten() {
        match input {
            Update::Event(e) => {
                by_key.insert(
                    (
                        e.team_id,
                        e.day(),
                        e.event.clone(),
                        e.distinct_id.clone(),
                        e.uuid,
                    ),
                    e.clone(),
                );
            }
            Update::Override {
                distinct_id,
                person,
                ..
            } => {
                last_override.insert(distinct_id.clone(), *person);
            }
            Update::Person {
                team_id,
                person,
                properties,
            } => match properties {
                Some(p) => {
                    persons.insert((*team_id, *person), p.clone());
                }
                None => {
                    persons.remove(&(*team_id, *person));
                }
            },
        }
    }
    let events = by_key
        .into_values()
        .map(|e| ViewEvent {
            person: last_override
                .get(&e.distinct_id)
                .copied()
                .unwrap_or(e.person),
            ..e
        })
        .collect();
    Final { events, persons }
}

fn counts<K: Ord>(items: impl Iterator<Item = (i64, K)>) -> BTreeMap<(i64, K), u64> {
    let mut out = BTreeMap::new();
    for k in items {
        *out.entry(k).or_default() += 1;
    }
    out
}

fn reference(view: &str, end: &Final) -> Table {
    let events = &end.events;
    match view {
        "daily_active_persons" | "weekly_active_persons" => {
            let period = |e: &ViewEvent| {
                if view.starts_with("daily") {
                    e.day()
                } else {
                    e.week()
                }
            };
            let distinct: BTreeSet<(i64, i32, Uuid)> = events
                .iter()
                .map(|e| (e.team_id, period(e), e.person))
                .collect();
            counts(distinct.into_iter().map(|(t, p, _)| (t, p)))
                .into_iter()
                .map(|((t, p), n)| ((t, vec![Value::Date(p)]), vec![Value::UInt(n)]))
                .collect()
        }
        "events_per_day" => counts(
            events
                .iter()
                .map(|e| (e.team_id, (e.event.clone(), e.day()))),
        )
        .into_iter()
        .map(|((t, (name, day)), n)| {
            (
                (t, vec![Value::Str(name), Value::Date(day)]),
                vec![Value::UInt(n)],
            )
        })
        .collect(),
        "first_seen" => {
            let mut first: BTreeMap<(i64, Uuid), &ViewEvent> = BTreeMap::new();
            for e in events {
                let slot = first.entry((e.team_id, e.person)).or_insert(e);
                if (e.timestamp, e.uuid, &e.event) < (slot.timestamp, slot.uuid, &slot.event) {
                    *slot = e;
                }
            }
            first
                .into_iter()
                .map(|((t, p), e)| {
                    (
                        (t, vec![Value::Uuid(p)]),
                        vec![
                            Value::Time(e.timestamp),
                            Value::Str(e.event.clone()),
                            Value::Str(e.property_str("$referring_domain").unwrap_or_default()),
                        ],
                    )
                })
                .collect()
        }
        "sessions_per_day" => {
            let mut sessions: BTreeMap<(i64, String), Vec<&ViewEvent>> = BTreeMap::new();
            for e in events {
                if let Some(s) = e.property_str("$session_id") {
                    sessions.entry((e.team_id, s)).or_default().push(e);
                }
            }
            let mut days: BTreeMap<(i64, i32), (u64, u64, u64)> = BTreeMap::new();
            for ((team, _), evs) in sessions {
                let start = evs.iter().map(|e| e.timestamp).min().unwrap();
                let end = evs.iter().map(|e| e.timestamp).max().unwrap();
                let n = |name: &str| evs.iter().filter(|e| e.event == name).count();
                let bounce =
                    n("$pageview") <= 1 && n("$autocapture") == 0 && end - start < 10_000_000;
                let day = i32::try_from(start.div_euclid(DAY)).unwrap();
                let d = days.entry((team, day)).or_default();
                d.0 += 1;
                d.1 += ((end - start) / 1_000_000) as u64;
                d.2 += u64::from(bounce);
            }
            days.into_iter()
                .map(|((t, day), (s, secs, b))| {
                    (
                        (t, vec![Value::Date(day)]),
                        vec![Value::UInt(s), Value::UInt(secs), Value::UInt(b)],
                    )
                })
                .collect()
        }
        "events_per_plan" => counts(events.iter().filter_map(|e| {
            let plan = end.persons.get(&(e.team_id, e.person))?.string("plan")?;
            Some((e.team_id, (plan, e.day())))
        }))
        .into_iter()
        .map(|((t, (plan, day)), n)| {
            (
                (t, vec![Value::Str(plan), Value::Date(day)]),
                vec![Value::UInt(n)],
            )
        })
        .collect(),
        other => panic!("no reference for {other}"),
    }
}

/// A history: events (some copies of others) and merges, arrived in a shuffled order (each
/// distinct id's overrides keep their order, as one worker writes them), cut into epochs.
fn history() -> impl Strategy<Value = Vec<Vec<Update>>> {
    (
        prop::collection::vec(spec(), 1..40),
        prop::collection::vec((0..IDS, 0u8..4), 0..8),
        prop::collection::vec((1i64..3, 0u8..4, prop::option::of(0u8..3)), 0..10),
        any::<u64>(),
        1usize..6,
    )
        .prop_map(|(specs, overrides, persons, seed, epochs)| {
            let events: Vec<ViewEvent> = specs.iter().map(event).collect();
            let mut inputs: Vec<Update> = events.iter().cloned().map(Update::Event).collect();
            // Overrides go in their own order at random places among the events.
            let mut rng = seed;
            let mut next = || {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (rng >> 33) as usize
            };
            for i in (1..inputs.len()).rev() {
                inputs.swap(i, next() % (i + 1));
            }
            for (id, p) in &overrides {
                let at = next() % (inputs.len() + 1);
                let latest_same = inputs.iter().rposition(|x| {
                    matches!(x, Update::Override { distinct_id, .. } if *distinct_id == format!("d{id}"))
                });
                let at = at.max(latest_same.map_or(0, |l| l + 1));
                inputs.insert(
                    at,
                    Update::Override {
                        team_id: 1 + (id % 2) as i64,
                        distinct_id: format!("d{id}"),
                        person: Uuid::from_u128(100 + u128::from(*p)),
                    },
                );
            }
            // Person changes (a plan set, or the person gone) at random places too.
            for (team_id, p, plan) in persons {
                let at = next() % (inputs.len() + 1);
                let properties = plan.map(|plan| Properties::from(format!(r#"{{"plan":"p{plan}","other":1}}"#).as_str()));
                inputs.insert(
                    at,
                    Update::Person {
                        team_id,
                        person: Uuid::from_u128(100 + u128::from(p)),
                        properties,
                    },
                );
            }
            let per = inputs.len().div_ceil(epochs).max(1);
            inputs.chunks(per).map(<[Update]>::to_vec).collect()
        })
}

/// A history over twelve days whose epochs come with a UTC day that moves on (by 0 to 2 days
/// per epoch), sessions over at most two days (`sessions_per_day` reaches one day).
fn dated_history() -> impl Strategy<Value = Vec<(i32, Vec<Update>)>> {
    (history(), prop::collection::vec(0i32..3, 1..6)).prop_map(|(epochs, steps)| {
        let mut today = 20_422;
        epochs
            .into_iter()
            .enumerate()
            .map(|(i, batch)| {
                today += steps[i % steps.len()];
                let batch = batch
                    .into_iter()
                    .map(|u| match u {
                        Update::Event(mut e) => {
                            if let Some(s) = e.property_str("$session_id") {
                                let day = e.day();
                                let mut props = serde_json::Map::new();
                                props.insert("$session_id".into(), format!("{s}-{day}").into());
                                if let Some(d) = e.property("$referring_domain") {
                                    props.insert("$referring_domain".into(), d);
                                }
                                e.properties = Properties::from(
                                    serde_json::Value::Object(props).to_string().as_str(),
                                );
                            }
                            Update::Event(e)
                        }
                        other => other,
                    })
                    .collect();
                (today, batch)
            })
            .collect()
    })
}

/// The rows that are not final on `today`: those a window keeps exact.
fn open_rows(table: Table, window: super::registry::Window, today: i32) -> Table {
    table
        .into_iter()
        .filter(|((team, key), values)| {
            let row = Row {
                team_id: *team,
                key: key.clone(),
                values: values.clone(),
            };
            !window.is_final(&row, today)
        })
        .collect()
}

fn check_windowed(
    view: impl View + Clone,
    days: u32,
    history: &[(i32, Vec<Update>)],
    workers: usize,
) {
    let window = super::registry::window_of(&view, days).unwrap();
    let today = history.last().map_or(0, |(d, _)| *d);
    let batches: Vec<Vec<Update>> = history.iter().map(|(_, b)| b.clone()).collect();
    let expected = open_rows(
        reference(view.name(), &final_state(&batches)),
        window,
        today,
    );
    let got = open_rows(
        super::testing::run_windowed(view.clone(), days, history.to_vec(), workers),
        window,
        today,
    );
    assert_eq!(
        got,
        expected,
        "{} with a window of {days} days on day {today}",
        view.name()
    );
}

fn check(view: impl View + Clone, workers: usize, history: &[Vec<Update>]) {
    let expected = reference(view.name(), &final_state(history));
    let got = run(view.clone(), history.to_vec(), workers);
    assert_eq!(got, expected, "{} on {workers} worker(s)", view.name());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn views_equal_the_batch_reference(h in history(), workers in 1usize..3) {
        check(DailyActivePersons, workers, &h);
        check(WeeklyActivePersons, workers, &h);
        check(EventsPerDay, workers, &h);
        check(FirstSeen, workers, &h);
        check(SessionsPerDay, workers, &h);
        check(EventsPerPlan, workers, &h);
    }

    #[test]
    fn windowed_views_keep_the_days_in_their_window_exact(
        h in dated_history(),
        days in 1u32..9,
        workers in 1usize..3,
    ) {
        check_windowed(DailyActivePersons, days, &h, workers);
        check_windowed(WeeklyActivePersons, days, &h, workers);
        check_windowed(EventsPerDay, days, &h, workers);
        check_windowed(SessionsPerDay, days, &h, workers);
    }
}

/// A view that reads persons: events per team, the person's `plan` and UTC day.
#[derive(Clone)]
struct EventsPerPlan;

impl View for EventsPerPlan {
    fn name(&self) -> &'static str {
        "events_per_plan"
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![
                Column::new("plan", Kind::String),
                Column::new("day", Kind::Date),
            ],
            values: vec![Column::new("events", Kind::UInt64)],
        }
    }

    fn person_properties(&self) -> &'static [&'static str] {
        &["plan"]
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        let plans = input
            .persons
            .flat_map(|p| Some(((p.team_id, p.person), p.property_str("plan")?)));
        input
            .events
            .map(|e| ((e.team_id, e.person), e.day()))
            .join_map(plans, |(team, _), day, plan| (*team, plan.clone(), *day))
            .count()
            .map(|((team, plan, day), n)| Row {
                team_id: team,
                key: vec![Value::Str(plan), Value::Date(day)],
                values: vec![Value::UInt(n.unsigned_abs() as u64)],
            })
    }
}

#[test]
fn a_merge_after_counting_moves_the_days_and_the_first_event() {
    let at = |n: u128, id: &str, person: u128, day: i64| {
        Update::Event(ViewEvent {
            team_id: 1,
            timestamp: (20_422 + day) * DAY + n as i64,
            uuid: Uuid::from_u128(n),
            event: "$pageview".into(),
            distinct_id: id.into(),
            person: Uuid::from_u128(person),
            properties: "{}".into(),
        })
    };
    let merge = Update::Override {
        team_id: 1,
        distinct_id: "user".into(),
        person: Uuid::from_u128(1),
    };
    let epochs = vec![
        vec![
            at(1, "anon", 1, 0),
            at(2, "user", 2, 0),
            at(3, "user", 2, 1),
        ],
        vec![merge],
    ];
    let dap = run(DailyActivePersons, epochs.clone(), 2);
    assert_eq!(
        dap.get(&(1, vec![Value::Date(20_422)])),
        Some(&vec![Value::UInt(1)])
    );
    assert_eq!(
        dap.get(&(1, vec![Value::Date(20_423)])),
        Some(&vec![Value::UInt(1)])
    );
    let first = run(FirstSeen, epochs, 1);
    assert_eq!(first.len(), 1, "the merged person's row is gone: {first:?}");
    assert!(first.contains_key(&(1, vec![Value::Uuid(Uuid::from_u128(1))])));
}

#[test]
fn a_day_that_leaves_the_window_keeps_its_last_result_and_leaves_memory() {
    let at = |n: u128, person: u128, day: i32| {
        Update::Event(ViewEvent {
            team_id: 1,
            timestamp: i64::from(day) * DAY + n as i64,
            uuid: Uuid::from_u128(n),
            event: "$pageview".into(),
            distinct_id: format!("d{person}"),
            person: Uuid::from_u128(person),
            properties: Properties::default(),
        })
    };
    let (d0, d3) = (20_422, 20_425);
    let epochs = vec![
        (d0, vec![at(1, 1, d0), at(2, 2, d0)]),
        // Day 0 left the 2-day window: its events leave the view, its row stays as written.
        (d3, vec![at(3, 1, d3)]),
        // Too late for the window: not counted.
        (d3, vec![at(4, 3, d0)]),
    ];
    let table = super::testing::run_windowed(DailyActivePersons, 2, epochs, 2);
    assert_eq!(
        table.get(&(1, vec![Value::Date(d0)])),
        Some(&vec![Value::UInt(2)])
    );
    assert_eq!(
        table.get(&(1, vec![Value::Date(d3)])),
        Some(&vec![Value::UInt(1)])
    );
    assert_eq!(table.len(), 2);
}
