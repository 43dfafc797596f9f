//! The built-in views. Each is also an example to copy: a few differential operators from the
//! events collection to rows.

use super::{
    Column, DatedBy, Events, Input, Kind, Row, Rows, TableSpec, Value, View, ViewEvent,
    ViewRegistry,
};

pub(crate) fn register(registry: &mut ViewRegistry) {
    registry.register(DailyActivePersons);
    registry.register(WeeklyActivePersons);
    registry.register(EventsPerDay);
    registry.register(FirstSeen);
    registry.register(SessionsPerDay);
}

fn count_row(team_id: i64, key: Vec<Value>, count: isize) -> Row {
    Row {
        team_id,
        key,
        values: vec![Value::UInt(count.unsigned_abs() as u64)],
    }
}

/// Distinct persons per team and `period` (a day number) of their events.
fn active_persons<'s>(events: Events<'s>, period: fn(&ViewEvent) -> i32) -> Rows<'s> {
    events
        .map(move |e| (e.team_id, period(&e), e.person))
        .distinct()
        .map(|(team, period, _)| (team, period))
        .count()
        .map(|((team, period), n)| count_row(team, vec![Value::Date(period)], n))
}

/// Distinct persons with an event per team and UTC day. A merge moves the merged person's days
/// to the surviving person: a day both were active counts once.
#[derive(Debug, Clone, Copy)]
pub struct DailyActivePersons;

impl View for DailyActivePersons {
    fn name(&self) -> &'static str {
        "daily_active_persons"
    }

    fn dated_by(&self) -> Option<DatedBy> {
        Some(DatedBy {
            column: "day",
            reach_days: 0,
        })
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![Column::new("day", Kind::Date)],
            values: vec![Column::new("persons", Kind::UInt64)],
        }
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        active_persons(input.events, ViewEvent::day)
    }
}

/// Distinct persons with an event per team and UTC week (weeks start on Monday).
#[derive(Debug, Clone, Copy)]
pub struct WeeklyActivePersons;

impl View for WeeklyActivePersons {
    fn name(&self) -> &'static str {
        "weekly_active_persons"
    }

    fn dated_by(&self) -> Option<DatedBy> {
        Some(DatedBy {
            column: "week",
            reach_days: 6,
        })
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![Column::new("week", Kind::Date)],
            values: vec![Column::new("persons", Kind::UInt64)],
        }
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        active_persons(input.events, ViewEvent::week)
    }
}

/// Events per team, event name and UTC day.
#[derive(Debug, Clone, Copy)]
pub struct EventsPerDay;

impl View for EventsPerDay {
    fn name(&self) -> &'static str {
        "events_per_day"
    }

    fn dated_by(&self) -> Option<DatedBy> {
        Some(DatedBy {
            column: "day",
            reach_days: 0,
        })
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![
                Column::new("event", Kind::String),
                Column::new("day", Kind::Date),
            ],
            values: vec![Column::new("events", Kind::UInt64)],
        }
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input
            .events
            .map(|e| (e.team_id, e.day(), e.event))
            .count()
            .map(|((team, day, event), n)| {
                count_row(team, vec![Value::Str(event), Value::Date(day)], n)
            })
    }
}

/// Each person's first event (earliest timestamp, then smallest uuid): when, which, and its
/// `$referring_domain` (first touch). On a merge the surviving person gets the earlier of the
/// two first events and the merged person's row disappears.
#[derive(Debug, Clone, Copy)]
pub struct FirstSeen;

impl View for FirstSeen {
    fn name(&self) -> &'static str {
        "first_seen"
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![Column::new("person_id", Kind::Uuid)],
            values: vec![
                Column::new("first_seen", Kind::DateTime),
                Column::new("first_event", Kind::String),
                Column::new("initial_referring_domain", Kind::String),
            ],
        }
    }

    fn properties(&self) -> &'static [&'static str] {
        &["$referring_domain"]
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input
            .events
            .map(|e| {
                let domain = e.property_str("$referring_domain").unwrap_or_default();
                (
                    (e.team_id, e.person),
                    (e.timestamp, e.uuid, e.event, domain),
                )
            })
            // Values arrive sorted: the first is the earliest event.
            .reduce(|_person, events, first| first.push((events[0].0.clone(), 1)))
            .map(|((team, person), (at, _, event, domain))| Row {
                team_id: team,
                key: vec![Value::Uuid(person)],
                values: vec![Value::Time(at), Value::Str(event), Value::Str(domain)],
            })
    }
}

/// A session (its events' `$session_id`) that had at most one `$pageview`, no `$autocapture`
/// and lasted under this long is a bounce.
const BOUNCE_MICROS: i64 = 10_000_000;
const PAGEVIEW: u8 = 0;
const AUTOCAPTURE: u8 = 1;
const OTHER: u8 = 2;

/// Sessions per team and UTC day of their first event: how many, their total duration in
/// seconds (last event minus first), and how many bounced.
#[derive(Debug, Clone, Copy)]
pub struct SessionsPerDay;

impl View for SessionsPerDay {
    fn name(&self) -> &'static str {
        "sessions_per_day"
    }

    fn dated_by(&self) -> Option<DatedBy> {
        Some(DatedBy {
            column: "day",
            reach_days: 1,
        })
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![Column::new("day", Kind::Date)],
            values: vec![
                Column::new("sessions", Kind::UInt64),
                Column::new("duration_seconds", Kind::UInt64),
                Column::new("bounces", Kind::UInt64),
            ],
        }
    }

    fn properties(&self) -> &'static [&'static str] {
        &["$session_id"]
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input
            .events
            .flat_map(|e| {
                let session = e.property_str("$session_id").filter(|s| !s.is_empty())?;
                // Only what a session's summary needs: when, and whether a pageview or autocapture.
                let kind = match e.event.as_str() {
                    "$pageview" => PAGEVIEW,
                    "$autocapture" => AUTOCAPTURE,
                    _ => OTHER,
                };
                Some(((e.team_id, session), (e.timestamp, kind)))
            })
            .reduce(|_session, events, summary| {
                let (start, end) = (events[0].0.0, events[events.len() - 1].0.0);
                let count = |kind: u8| -> isize {
                    events
                        .iter()
                        .filter(|(e, _)| e.1 == kind)
                        .map(|(_, n)| *n)
                        .sum()
                };
                let bounce =
                    count(PAGEVIEW) <= 1 && count(AUTOCAPTURE) == 0 && end - start < BOUNCE_MICROS;
                let day = start.div_euclid(super::MICROS_PER_DAY);
                summary.push(((day, end - start, bounce), 1));
            })
            // Sums as differences: a changed session updates its day's totals without a pass
            // over the day's other sessions.
            .explode(|((team, _), (day, micros, bounce))| {
                let seconds = isize::try_from(micros / 1_000_000).unwrap_or(isize::MAX);
                Some(((team, day), (1isize, seconds, isize::from(bounce))))
            })
            .count()
            .map(|((team, day), (sessions, seconds, bounces))| Row {
                team_id: team,
                key: vec![Value::Date(i32::try_from(day).unwrap_or(i32::MIN))],
                values: vec![
                    Value::UInt(sessions.unsigned_abs() as u64),
                    Value::UInt(seconds.unsigned_abs() as u64),
                    Value::UInt(bounces.unsigned_abs() as u64),
                ],
            })
    }
}
