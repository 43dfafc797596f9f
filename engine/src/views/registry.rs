//! Which views exist (the built-ins and those a binary registers) and which teams run them.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use serde::Deserialize;

use super::{View, builtin, value::is_identifier};

/// One `[[views]]` entry of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// The registered name, e.g. `daily_active_persons`.
    pub view: String,
    /// Teams whose events it counts; empty means every team.
    #[serde(default)]
    pub teams: Vec<i64>,
    /// Keep the view's state to this many UTC days (today included): older days' rows are
    /// final and their events leave the view's memory. Absent: every day, forever.
    #[serde(default)]
    pub window_days: Option<u32>,
}

/// The views a binary knows, by name.
#[derive(Clone)]
pub struct ViewRegistry {
    views: BTreeMap<&'static str, Arc<dyn View>>,
}

/// A view and the teams it runs for (`None`: every team).
#[derive(Clone)]
pub struct ActiveView {
    pub view: Arc<dyn View>,
    pub teams: Option<HashSet<i64>>,
    pub window: Option<Window>,
}

/// A view's window: how many days it keeps, and how its rows are dated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u32,
    /// The dating column's place among the key columns.
    pub key_index: usize,
    pub reach_days: u32,
}

impl Window {
    pub(crate) fn reach(&self) -> i32 {
        i32::try_from(self.reach_days).unwrap_or(i32::MAX)
    }

    /// The first day of the window on `today` (a UTC day number).
    pub fn first_open_day(&self, today: i32) -> i32 {
        today.saturating_sub(i32::try_from(self.days).unwrap_or(i32::MAX)) + 1
    }

    /// Whether `row` is final on `today`: every day it counts events of left the window.
    pub fn is_final(&self, row: &super::Row, today: i32) -> bool {
        matches!(row.key.get(self.key_index), Some(super::Value::Date(d)) if d.saturating_add(self.reach()) < self.first_open_day(today))
    }

    /// The first day whose events the view still holds on `today`: an event of an older day
    /// touches only final rows (dated at most `reach` days after it).
    pub fn first_held_day(&self, today: i32) -> i32 {
        self.first_open_day(today)
            .saturating_sub(self.reach().saturating_mul(2))
    }
}

impl std::fmt::Debug for ActiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveView")
            .field("view", &self.view.name())
            .field("teams", &self.teams)
            .field("window", &self.window)
            .finish()
    }
}

impl ActiveView {
    pub fn counts(&self, team: i64) -> bool {
        self.teams.as_ref().is_none_or(|t| t.contains(&team))
    }

    /// Its ClickHouse table.
    pub fn table(&self) -> String {
        table_name(self.view.name())
    }

    /// The statement removing what earlier runs wrote and this one, started on `today`, did
    /// not rewrite; a windowed view's final rows are left as written (see
    /// `TableSpec::sweep_statement`).
    pub fn sweep_statement(&self, version: u64, today: i32) -> String {
        let spec = self.view.table();
        let open_from = self.window.map(|w| {
            let column = spec.key[w.key_index].name;
            (column, w.first_open_day(today).saturating_sub(w.reach()))
        });
        spec.sweep_statement(&self.table(), version, open_from)
    }

    /// The statement creating its table (`{db}` and `{dedup}` to be filled in).
    pub fn create_statement(&self) -> String {
        self.view.table().create_statement(&self.table())
    }
}

pub(crate) fn table_name(view: &str) -> String {
    format!("view_{view}")
}

impl Default for ViewRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ViewRegistry {
    /// The built-in views.
    pub fn new() -> Self {
        let mut r = Self {
            views: BTreeMap::new(),
        };
        builtin::register(&mut r);
        r
    }

    /// Adds `view` under its name; a second view of one name replaces the first.
    pub fn register(&mut self, view: impl View) {
        self.views.insert(view.name(), Arc::new(view));
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.views.keys().copied().collect()
    }

    /// The views `config` enables, checked: each exists, has a valid table, is enabled once, and
    /// names only configured teams.
    pub fn resolve(
        &self,
        config: &[ViewConfig],
        team_ids: &[i64],
    ) -> Result<Vec<ActiveView>, String> {
        let mut seen = BTreeSet::new();
        let mut active = Vec::new();
        for entry in config {
            let view = self.views.get(entry.view.as_str()).ok_or_else(|| {
                format!(
                    "[[views]] view = {:?} is not a known view (known: {})",
                    entry.view,
                    self.names().join(", ")
                )
            })?;
            if !seen.insert(entry.view.as_str()) {
                return Err(format!(
                    "[[views]] view = {:?} is enabled twice: list all its teams in one entry",
                    entry.view
                ));
            }
            if !is_identifier(view.name()) {
                return Err(format!(
                    "view {:?}: a view's name is lower-case letters, digits and _",
                    view.name()
                ));
            }
            if let Some(problem) = view.table().problem() {
                return Err(format!("view {:?}: {problem}", view.name()));
            }
            if let Some(t) = entry.teams.iter().find(|t| !team_ids.contains(t)) {
                return Err(format!(
                    "[[views]] view = {:?} names team {t}, which is not in [[teams]]",
                    entry.view
                ));
            }
            let window = match entry.window_days {
                None => None,
                Some(days) => Some(window_of(&**view, days)?),
            };
            active.push(ActiveView {
                view: Arc::clone(view),
                teams: (!entry.teams.is_empty()).then(|| entry.teams.iter().copied().collect()),
                window,
            });
        }
        Ok(active)
    }
}

/// The window of `days` for `view`, or why it cannot have one.
pub(crate) fn window_of(view: &dyn View, days: u32) -> Result<Window, String> {
    let name = view.name();
    if days == 0 {
        return Err(format!(
            "[[views]] view = {name:?}: window_days must be at least 1"
        ));
    }
    let dated = view.dated_by().ok_or_else(|| {
        format!("[[views]] view = {name:?} takes no window: its rows are not dated by a day (remove window_days)")
    })?;
    let key_index = view
        .table()
        .key
        .iter()
        .position(|c| c.name == dated.column && c.kind == super::Kind::Date)
        .ok_or_else(|| {
            format!(
                "view {name:?} is dated by `{}`, which is not one of its Date key columns",
                dated.column
            )
        })?;
    Ok(Window {
        days,
        key_index,
        reach_days: dated.reach_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(view: &str, teams: &[i64]) -> ViewConfig {
        ViewConfig {
            view: view.into(),
            teams: teams.to_vec(),
            window_days: None,
        }
    }

    #[test]
    fn windows_need_a_dated_view_and_say_which_days_are_final() {
        let r = ViewRegistry::new();
        let windowed = |view: &str, days| ViewConfig {
            window_days: Some(days),
            ..entry(view, &[])
        };
        let active = r
            .resolve(&[windowed("weekly_active_persons", 14)], &[1])
            .unwrap();
        let w = active[0].window.unwrap();
        assert_eq!((w.days, w.key_index, w.reach_days), (14, 0, 6));
        assert_eq!(w.first_open_day(100), 87);
        assert_eq!(w.first_held_day(100), 75);
        let row = |day| super::super::Row {
            team_id: 1,
            key: vec![super::super::Value::Date(day)],
            values: vec![],
        };
        // The week of day 80 ends on day 86, before the window: final; the next one is not.
        assert!(w.is_final(&row(80), 100) && !w.is_final(&row(81), 100));
        // After a restart on day 100, only rows still open are swept; final ones stay.
        let sweep = active[0].sweep_statement(7, 100);
        assert!(
            sweep.contains("WHERE _version < 7 AND `week` >= toDate32('1970-03-23')"),
            "{sweep}"
        );
        let unwindowed = r
            .resolve(&[entry("weekly_active_persons", &[])], &[1])
            .unwrap();
        assert!(
            unwindowed[0]
                .sweep_statement(7, 100)
                .ends_with("WHERE _version < 7")
        );
        let err = r.resolve(&[windowed("first_seen", 7)], &[1]).unwrap_err();
        assert!(err.contains("takes no window"), "{err}");
        let err = r
            .resolve(&[windowed("daily_active_persons", 0)], &[1])
            .unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn configuration_is_checked_with_clear_messages() {
        let r = ViewRegistry::new();
        let ok = r
            .resolve(
                &[
                    entry("daily_active_persons", &[1]),
                    entry("events_per_day", &[]),
                ],
                &[1, 2],
            )
            .unwrap();
        assert!(ok[0].counts(1) && !ok[0].counts(2));
        assert!(ok[1].counts(2));
        assert_eq!(ok[0].table(), "view_daily_active_persons");
        let err = r.resolve(&[entry("nope", &[])], &[1]).unwrap_err();
        assert!(
            err.contains("not a known view") && err.contains("first_seen"),
            "{err}"
        );
        let err = r
            .resolve(&[entry("first_seen", &[]), entry("first_seen", &[1])], &[1])
            .unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = r.resolve(&[entry("first_seen", &[3])], &[1]).unwrap_err();
        assert!(err.contains("team 3"), "{err}");
    }
}
