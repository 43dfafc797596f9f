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
}

impl std::fmt::Debug for ActiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveView")
            .field("view", &self.view.name())
            .field("teams", &self.teams)
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

    /// The statement removing what earlier runs wrote and this one did not rewrite (see
    /// `TableSpec::sweep_statement`).
    pub fn sweep_statement(&self, version: u64) -> String {
        self.view.table().sweep_statement(&self.table(), version)
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
            active.push(ActiveView {
                view: Arc::clone(view),
                teams: (!entry.teams.is_empty()).then(|| entry.teams.iter().copied().collect()),
            });
        }
        Ok(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(view: &str, teams: &[i64]) -> ViewConfig {
        ViewConfig {
            view: view.into(),
            teams: teams.to_vec(),
        }
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
