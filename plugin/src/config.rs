//! Which plugins a team runs, and the registry that turns configuration into running plugins.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    Batching, Chain, Context, Destination, PluginError, RetryPolicy, Storage, Task, Transform,
};

/// One `[[plugins]]` entry of the configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The registered name, e.g. `property-mask`.
    pub plugin: String,
    /// Names this entry's storage and, for a destination, its progress; unique. Defaults to the
    /// plugin name. Changing it makes a destination start over as a new one.
    #[serde(default)]
    pub id: Option<String>,
    /// Teams that run it; empty means every team.
    #[serde(default)]
    pub teams: Vec<i64>,
    /// The plugin's own settings, checked by the plugin at start.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Destinations: flush a batch at this many events [default: the plugin's].
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Destinations: flush a batch when its oldest event waited this long [default: the plugin's].
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// Destinations: attempts per batch before it is given up [default: 15].
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Destinations: wait after the first failed attempt; doubles up to 5 minutes [default: 1s].
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    /// Destinations: where a destination that has no progress yet begins.
    #[serde(default)]
    pub start: Start,
}

/// Where a new destination begins reading processed events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Events processed from its first start on.
    #[default]
    Latest,
    /// Every processed event the topic still holds.
    Earliest,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// How a registered plugin is built from its settings.
#[derive(Clone, Copy)]
pub enum Factory {
    Transform(fn(&Value) -> Result<Box<dyn Transform>, PluginError>),
    Destination(fn(&Value) -> Result<Box<dyn Destination>, PluginError>),
    Task(fn(&Value) -> Result<Box<dyn Task>, PluginError>),
}

/// Plugin names and how to build each from its settings.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Factory>,
}

/// A configuration error, with the entry it comes from.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("[[plugins]] entry {index} (`{plugin}`): {reason}")]
pub struct ConfigError {
    pub index: usize,
    pub plugin: String,
    pub reason: String,
}

/// A destination, ready to run.
pub struct DestinationPlugin {
    pub id: String,
    /// The teams whose events it receives.
    pub teams: HashSet<i64>,
    pub batching: Batching,
    pub retry: RetryPolicy,
    pub start: Start,
    pub destination: Box<dyn Destination>,
}

/// A scheduled task, ready to run.
pub struct TaskPlugin {
    pub context: Context,
    pub task: Box<dyn Task>,
}

/// Everything the configuration enables, set up.
#[derive(Default)]
pub struct Plugins {
    /// Each team's transforms, in configuration order.
    pub transforms: HashMap<i64, Chain>,
    pub destinations: Vec<DestinationPlugin>,
    pub tasks: Vec<TaskPlugin>,
}

impl Registry {
    /// A registry that knows no plugin yet (the binary adds the built-ins and its own).
    pub fn new() -> Self {
        Self::default()
    }

    /// The registered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// Adds a plugin under `name` (replacing one of the same name).
    pub fn register(&mut self, name: &'static str, factory: Factory) {
        self.factories.insert(name, factory);
    }

    /// Builds and sets up every entry; `teams` are the configured team ids and `storage` gives
    /// each entry id its storage. Any unknown plugin, unknown team, duplicate id, misplaced
    /// option, bad setting or failed setup is an error: start-up stops.
    pub fn build(
        &self,
        entries: &[PluginConfig],
        teams: &[i64],
        storage: &dyn Fn(&str) -> Arc<dyn Storage>,
    ) -> Result<Plugins, ConfigError> {
        let mut plugins = Plugins::default();
        let mut ids = HashSet::new();
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
            let id = entry.id.clone().unwrap_or_else(|| entry.plugin.clone());
            if !ids.insert(id.clone()) {
                return Err(error(format!(
                    "another entry has the id `{id}`; give one of them its own `id`"
                )));
            }
            let destination_options = entry.batch_size.is_some()
                || entry.flush_interval.is_some()
                || entry.max_attempts.is_some()
                || entry.retry_backoff.is_some()
                || entry.start != Start::Latest;
            if destination_options && !matches!(factory, Factory::Destination(_)) {
                return Err(error(
                    "batch_size, flush_interval, max_attempts, retry_backoff and start apply to destinations only".into(),
                ));
            }
            let context = Context {
                id: id.clone(),
                storage: storage(&id),
            };
            let targets = if entry.teams.is_empty() {
                teams
            } else {
                &entry.teams
            };
            let built = |e: PluginError| error(e.to_string());
            let set_up = |e: PluginError| error(format!("setup failed: {e}"));
            match factory {
                Factory::Transform(make) => {
                    for team in targets {
                        let mut transform = make(&entry.config).map_err(built)?;
                        transform.setup(&context).map_err(set_up)?;
                        plugins
                            .transforms
                            .entry(*team)
                            .or_default()
                            .push(&entry.plugin, transform);
                    }
                }
                Factory::Destination(make) => {
                    let mut destination = make(&entry.config).map_err(built)?;
                    destination.setup(&context).map_err(set_up)?;
                    let mut batching = destination.batching();
                    if let Some(n) = entry.batch_size {
                        if n == 0 {
                            return Err(error("batch_size must be at least 1".into()));
                        }
                        batching.max_events = n;
                    }
                    if let Some(wait) = entry.flush_interval {
                        batching.max_wait = wait;
                    }
                    let mut retry = RetryPolicy::default();
                    if let Some(n) = entry.max_attempts {
                        retry.max_attempts = n.max(1);
                    }
                    if let Some(b) = entry.retry_backoff {
                        retry.backoff = b;
                    }
                    plugins.destinations.push(DestinationPlugin {
                        id,
                        teams: targets.iter().copied().collect(),
                        batching,
                        retry,
                        start: entry.start,
                        destination,
                    });
                }
                Factory::Task(make) => {
                    if !entry.teams.is_empty() {
                        return Err(error(
                            "a scheduled task runs once for the whole pipeline; remove `teams`"
                                .into(),
                        ));
                    }
                    let mut task = make(&entry.config).map_err(built)?;
                    task.setup(&context).map_err(set_up)?;
                    plugins.tasks.push(TaskPlugin { context, task });
                }
            }
        }
        Ok(plugins)
    }

    /// [`Registry::build`] with in-memory storage: checks a configuration without touching the
    /// engine's state (`hogstream config check`, tools).
    pub fn check(&self, entries: &[PluginConfig], teams: &[i64]) -> Result<Plugins, ConfigError> {
        self.build(entries, teams, &|_| {
            Arc::new(crate::MemoryStorage::default()) as Arc<dyn Storage>
        })
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
    use crate::{PluginEvent, Verdict};
    use serde_json::json;

    /// Test transforms with settings of their own: `drop` (a list) and `events` (a list).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Drop {
        #[allow(dead_code)]
        drop: Vec<String>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Filter {
        #[allow(dead_code)]
        events: Vec<String>,
    }

    struct Pass;

    impl Transform for Pass {
        fn transform(&self, _: &mut PluginEvent) -> Result<Verdict, PluginError> {
            Ok(Verdict::Keep)
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(
            "mask",
            Factory::Transform(|v| {
                settings::<Drop>(v).map(|_| Box::new(Pass) as Box<dyn Transform>)
            }),
        );
        r.register(
            "filter",
            Factory::Transform(|v| {
                settings::<Filter>(v).map(|_| Box::new(Pass) as Box<dyn Transform>)
            }),
        );
        r
    }

    fn entry(plugin: &str, teams: Vec<i64>, config: Value) -> PluginConfig {
        PluginConfig {
            plugin: plugin.into(),
            id: None,
            teams,
            config,
            batch_size: None,
            flush_interval: None,
            max_attempts: None,
            retry_backoff: None,
            start: Start::Latest,
        }
    }

    fn reason(r: &Registry, entries: &[PluginConfig]) -> String {
        r.check(entries, &[1]).err().expect("refused").to_string()
    }

    #[test]
    fn unknown_plugins_teams_ids_options_and_settings_are_refused_clearly() {
        let r = registry();
        let err = reason(&r, &[entry("geo", vec![], json!({}))]);
        assert!(err.starts_with("[[plugins]] entry 1 (`geo`)"), "{err}");
        assert!(err.contains("unknown plugin; known: filter, mask"), "{err}");
        let err = reason(&r, &[entry("mask", vec![7], json!({}))]);
        assert!(err.contains("team 7"), "{err}");
        let err = reason(
            &r,
            &[entry("mask", vec![], json!({"drop": "x", "nope": 1}))],
        );
        assert!(err.contains("`mask`"), "{err}");
        let mask = entry("mask", vec![], json!({"drop": ["a"]}));
        let err = reason(&r, &[mask.clone(), mask.clone()]);
        assert!(
            err.contains("entry 2") && err.contains("id `mask`"),
            "{err}"
        );
        let batched = PluginConfig {
            batch_size: Some(10),
            ..mask
        };
        let err = reason(&r, &[batched]);
        assert!(err.contains("destinations only"), "{err}");
    }

    #[test]
    fn chains_follow_configuration_order_per_team() {
        let r = registry();
        let plugins = r
            .build(
                &[
                    entry("mask", vec![1], json!({"drop": ["a"]})),
                    entry("filter", vec![], json!({"events": ["spam"]})),
                ],
                &[1, 2],
                &|_| Arc::new(crate::MemoryStorage::default()),
            )
            .unwrap();
        let chains = plugins.transforms;
        assert_eq!(chains.len(), 2);
        assert_eq!((chains[&1].len(), chains[&2].len()), (2, 1));
    }
}
