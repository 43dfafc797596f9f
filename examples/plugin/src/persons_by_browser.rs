//! `persons_by_browser` (view): distinct persons per team, UTC day and `$browser`, kept right
//! when persons merge (two ids of one person on one browser count once).

use hogstream_engine::views::{Column, Input, Kind, Row, Rows, TableSpec, Value, View};

pub struct PersonsByBrowser;

impl View for PersonsByBrowser {
    fn name(&self) -> &'static str {
        "persons_by_browser"
    }

    fn table(&self) -> TableSpec {
        TableSpec {
            key: vec![
                Column::new("day", Kind::Date),
                Column::new("browser", Kind::String),
            ],
            values: vec![Column::new("persons", Kind::UInt64)],
        }
    }

    fn properties(&self) -> &'static [&'static str] {
        &["$browser"]
    }

    fn build<'s>(&self, input: Input<'s>) -> Rows<'s> {
        input
            .events
            .map(|e| {
                let browser = e
                    .property_str("$browser")
                    .unwrap_or_else(|| "unknown".into());
                (e.team_id, e.day(), browser, e.person)
            })
            .distinct()
            .map(|(team, day, browser, _person)| (team, day, browser))
            .count()
            .map(|((team, day, browser), persons)| Row {
                team_id: team,
                key: vec![Value::Date(day), Value::Str(browser)],
                values: vec![Value::UInt(persons as u64)],
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

    use super::PersonsByBrowser;

    const DAY: i64 = 86_400_000_000;

    fn event(n: u128, distinct_id: &str, person: u128, browser: &str) -> Update {
        Update::Event(ViewEvent {
            team_id: 1,
            timestamp: 20_000 * DAY + n as i64,
            uuid: Uuid::from_u128(n),
            event: "$pageview".into(),
            distinct_id: distinct_id.into(),
            person: Uuid::from_u128(person),
            properties: format!(r#"{{"$browser":"{browser}"}}"#).as_str().into(),
        })
    }

    fn persons(table: &hogstream_engine::views::testing::Table, browser: &str) -> Option<Value> {
        let key = (1, vec![Value::Date(20_000), Value::Str(browser.into())]);
        table.get(&key).map(|v| v[0].clone())
    }

    #[test]
    fn a_merge_counts_two_ids_of_one_person_once_in_any_order() {
        let anon = event(1, "anon", 100, "Firefox");
        let user = event(2, "user", 200, "Firefox");
        let chrome = event(3, "user", 200, "Chrome");
        // The login merges `user`'s person into `anon`'s.
        let merge = Update::Override {
            team_id: 1,
            distinct_id: "user".into(),
            person: Uuid::from_u128(100),
        };
        let orders = [
            vec![
                vec![anon.clone(), user.clone(), chrome.clone()],
                vec![merge.clone()],
            ],
            vec![
                vec![merge.clone()],
                vec![chrome.clone()],
                vec![user.clone(), anon.clone()],
            ],
            vec![vec![user, merge, chrome, anon]],
        ];
        for (i, epochs) in orders.into_iter().enumerate() {
            for workers in [1, 2] {
                let table = run(PersonsByBrowser, epochs.clone(), workers);
                assert_eq!(
                    persons(&table, "Firefox"),
                    Some(Value::UInt(1)),
                    "order {i}"
                );
                assert_eq!(persons(&table, "Chrome"), Some(Value::UInt(1)), "order {i}");
                assert_eq!(table.len(), 2, "order {i}: {table:?}");
            }
        }
    }

    #[test]
    fn events_without_a_browser_count_as_unknown() {
        let mut e = event(1, "d", 1, "x");
        if let Update::Event(ev) = &mut e {
            ev.properties = "{}".into();
        }
        let table = run(PersonsByBrowser, vec![vec![e]], 1);
        assert_eq!(persons(&table, "unknown"), Some(Value::UInt(1)));
    }
}
