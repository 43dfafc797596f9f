//! `active_persons_by_plan` (view): distinct persons per team, UTC day and the person's current
//! `plan` property. It reads persons: when a person's plan changes, or two persons merge, the
//! days they were active move to the new plan or the surviving person.

use hogstream_engine::views::{Column, Input, Kind, Row, Rows, TableSpec, Value, View};

pub struct ActivePersonsByPlan;

impl View for ActivePersonsByPlan {
    fn name(&self) -> &'static str {
        "active_persons_by_plan"
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![
                Column::new("day", Kind::Date),
                Column::new("plan", Kind::String),
            ],
            values: vec![Column::new("persons", Kind::UInt64)],
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
            .distinct()
            .join_map(plans, |(team, _person), day, plan| {
                (*team, *day, plan.clone())
            })
            .count()
            .map(|((team, day, plan), persons)| Row {
                team_id: team,
                key: vec![Value::Date(day), Value::Str(plan)],
                values: vec![Value::UInt(persons.unsigned_abs() as u64)],
            })
    }
}

#[cfg(test)]
mod tests {
    use hogstream_engine::views::{
        Value, ViewEvent,
        testing::{Update, run},
    };
    use uuid::Uuid;

    use super::ActivePersonsByPlan;

    const DAY: i64 = 86_400_000_000;

    fn event(n: u128, distinct_id: &str, person: u128) -> Update {
        Update::Event(ViewEvent {
            team_id: 1,
            timestamp: 20_000 * DAY + n as i64,
            uuid: Uuid::from_u128(n),
            event: "$pageview".into(),
            distinct_id: distinct_id.into(),
            person: Uuid::from_u128(person),
            properties: Default::default(),
        })
    }

    fn plan(person: u128, plan: Option<&str>) -> Update {
        Update::Person {
            team_id: 1,
            person: Uuid::from_u128(person),
            properties: plan.map(|p| format!(r#"{{"plan":"{p}","email":"x@y"}}"#).as_str().into()),
        }
    }

    fn persons(table: &hogstream_engine::views::testing::Table, plan: &str) -> Option<Value> {
        let key = (1, vec![Value::Date(20_000), Value::Str(plan.into())]);
        table.get(&key).map(|v| v[0].clone())
    }

    #[test]
    fn a_plan_change_and_a_merge_move_the_active_persons_in_any_order() {
        let merge = Update::Override {
            team_id: 1,
            distinct_id: "user".into(),
            person: Uuid::from_u128(10),
        };
        let inputs = [
            event(1, "anon", 10),
            event(2, "user", 20),
            plan(10, Some("free")),
            plan(20, Some("pro")),
            merge,
            // The survivor upgrades; the merged person is gone.
            plan(20, None),
            plan(10, Some("pro")),
        ];
        // Person changes keep their order (one worker writes a person's rows in order); the
        // events and the merge go anywhere.
        for split in 1..inputs.len() {
            let (a, b) = inputs.split_at(split);
            for workers in [1, 2] {
                let table = run(ActivePersonsByPlan, vec![a.to_vec(), b.to_vec()], workers);
                assert_eq!(
                    persons(&table, "pro"),
                    Some(Value::UInt(1)),
                    "split {split}"
                );
                assert_eq!(persons(&table, "free"), None, "split {split}: {table:?}");
            }
        }
        let shuffled = vec![
            vec![plan(10, Some("free")), event(2, "user", 20)],
            vec![Update::Override {
                team_id: 1,
                distinct_id: "user".into(),
                person: Uuid::from_u128(10),
            }],
            vec![
                plan(20, Some("pro")),
                plan(20, None),
                event(1, "anon", 10),
                plan(10, Some("pro")),
            ],
        ];
        let table = run(ActivePersonsByPlan, shuffled, 2);
        assert_eq!(persons(&table, "pro"), Some(Value::UInt(1)));
        assert_eq!(table.len(), 1, "{table:?}");
    }
}
