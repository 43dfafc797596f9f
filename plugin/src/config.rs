//! Which plugins a team runs, and the registry that turns configuration into transforms.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::{Chain, PluginError, Transform, builtins};

/// One `[[plugins]]` entry of the configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The registered name, e.g. `property-mask`.
    pub plugin: String,
    /// Teams that run it; empty means every team.
    #[serde(default)]
    pub teams: Vec<i64>,
    /// The plugin's own settings, checked by the plugin at start.
    #[serde(default = "empty_object")]
    pub config: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

type Factory = fn(&Value) -> Result<Box<dyn Transform>, PluginError>;

/// Plugin names and how to build each from its settings.
pub struct Registry {
    factories: BTreeMap<&'static str, Factory>,
}

/// A configuration error, with the entry it comes from.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("[[plugins]] entry {index} (`{plugin}`): {reason}")]
pub struct ConfigError {
    pub index: usize,
    pub plugin: String,
    pub reason: String,
}

impl Registry {
    /// The built-in plugins.
    pub fn builtins() -> Self {
        let mut r = Self {
            factories: BTreeMap::new(),
        };
        r.register("property-mask", builtins::PropertyMask::from_config);
        r.register("event-filter", builtins::EventFilter::from_config);
        r
    }

    /// Adds a plugin under `name` (replacing one of the same name).
    pub fn register(&mut self, name: &'static str, factory: Factory) {
        self.factories.insert(name, factory);
    }

    /// Builds each team's chain, in configuration order; `teams` are the configured team ids.
    /// Any unknown plugin, unknown team or bad setting is an error: start-up stops.
    pub fn chains(
        &self,
        entries: &[PluginConfig],
        teams: &[i64],
    ) -> Result<HashMap<i64, Chain>, ConfigError> {
        let mut chains: HashMap<i64, Chain> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let error = |reason: String| ConfigError {
                index: index + 1,
                plugin: entry.plugin.clone(),
                reason,
            };
            let factory = self.factories.get(entry.plugin.as_str()).ok_or_else(|| {
                let known: Vec<&str> = self.factories.keys().copied().collect();
                error(format!("unknown plugin; known: {}", known.join(", ")))
            })?;
            if let Some(t) = entry.teams.iter().find(|t| !teams.contains(t)) {
                return Err(error(format!("team {t} is not configured in [[teams]]")));
            }
            let targets = if entry.teams.is_empty() {
                teams
            } else {
                &entry.teams
            };
            for team in targets {
                let transform = factory(&entry.config).map_err(|e| error(e.to_string()))?;
                chains
                    .entry(*team)
                    .or_default()
                    .push(&entry.plugin, transform);
            }
        }
        Ok(chains)
    }
}

/// Reads a plugin's `[plugins.config]` into its own settings type, naming the bad field in the
/// error. For plugin constructors.
pub fn settings<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, PluginError> {
    serde_json::from_value(config.clone()).map_err(|e| PluginError::Setting {
        key: "config".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(plugin: &str, teams: Vec<i64>, config: Value) -> PluginConfig {
        PluginConfig {
            plugin: plugin.into(),
            teams,
            config,
        }
    }

    #[test]
    fn unknown_plugins_teams_and_settings_are_refused_clearly() {
        let r = Registry::builtins();
        let err = r
            .chains(&[entry("geo", vec![], json!({}))], &[1])
            .err()
            .unwrap();
        assert_eq!(err.index, 1);
        assert!(
            err.reason
                .contains("unknown plugin; known: event-filter, property-mask"),
            "{err}"
        );
        let err = r
            .chains(&[entry("property-mask", vec![7], json!({}))], &[1])
            .err()
            .unwrap();
        assert!(err.reason.contains("team 7"), "{err}");
        let err = r
            .chains(
                &[entry(
                    "property-mask",
                    vec![],
                    json!({"drop": "x", "nope": 1}),
                )],
                &[1],
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("property-mask"), "{err}");
    }

    #[test]
    fn chains_follow_configuration_order_per_team() {
        let r = Registry::builtins();
        let chains = r
            .chains(
                &[
                    entry("property-mask", vec![1], json!({"drop": ["a"]})),
                    entry("event-filter", vec![], json!({"events": ["spam"]})),
                ],
                &[1, 2],
            )
            .unwrap();
        assert_eq!(chains.len(), 2);
        assert!(!chains[&1].is_empty() && !chains[&2].is_empty());
    }
}
