//! Transforms in their configured order, isolated from each other and from ingestion.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::Value;

use crate::{PluginEvent, Transform, Verdict};

/// The transforms one team runs, in order.
#[derive(Default)]
pub struct Chain {
    transforms: Vec<(String, Box<dyn Transform>)>,
}

/// What a chain did with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    /// The event goes on; `failed` names the plugins that failed or panicked on it.
    Kept {
        event: PluginEvent,
        failed: Vec<String>,
    },
    /// Dropped by the named plugin.
    Dropped(String),
}

impl ChainOutcome {
    pub fn event(&self) -> Option<&PluginEvent> {
        match self {
            ChainOutcome::Kept { event, .. } => Some(event),
            ChainOutcome::Dropped(_) => None,
        }
    }
}

impl Chain {
    pub fn push(&mut self, name: impl Into<String>, transform: Box<dyn Transform>) {
        self.transforms.push((name.into(), transform));
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }

    pub fn len(&self) -> usize {
        self.transforms.len()
    }

    /// Runs every transform on a copy of the event: a transform that fails or panics leaves
    /// the event as it was before it ran. Records `$plugins_succeeded` / `$plugins_failed`.
    pub fn run(&self, event: PluginEvent) -> ChainOutcome {
        run_in_order(
            self.transforms
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_ref())),
            event,
        )
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for (_, transform) in &mut self.transforms {
            transform.teardown();
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// [`Chain::run`] over borrowed transforms (the harness runs a plugin it does not own).
pub(crate) fn run_in_order<'a>(
    transforms: impl IntoIterator<Item = (&'a str, &'a dyn Transform)>,
    mut event: PluginEvent,
) -> ChainOutcome {
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for (name, transform) in transforms {
        let name = name.to_owned();
        let mut work = event.clone();
        let result = catch_unwind(AssertUnwindSafe(|| transform.transform(&mut work)));
        match result {
            Ok(Ok(Verdict::Keep)) => {
                // The team is not the plugin's to change, whatever it did to its copy.
                work.team_id = event.team_id;
                event = work;
                succeeded.push(Value::String(name));
            }
            Ok(Ok(Verdict::Drop)) => return ChainOutcome::Dropped(name),
            Ok(Err(e)) => {
                tracing::warn!(plugin = name, error = %e, "plugin failed; event kept as it was");
                failed.push(name);
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::warn!(
                    plugin = name,
                    panic = message,
                    "plugin panicked; event kept as it was"
                );
                failed.push(name);
            }
        }
    }
    if !succeeded.is_empty() {
        event
            .properties
            .insert("$plugins_succeeded".into(), Value::Array(succeeded));
    }
    if !failed.is_empty() {
        let names = failed.iter().cloned().map(Value::String).collect();
        event
            .properties
            .insert("$plugins_failed".into(), Value::Array(names));
    }
    ChainOutcome::Kept { event, failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PluginError, testing};
    use serde_json::json;

    struct SetKey(&'static str);
    impl Transform for SetKey {
        fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
            event.properties.insert(self.0.into(), json!(true));
            event.team_id = 99;
            Ok(Verdict::Keep)
        }
    }

    struct Panics;
    impl Transform for Panics {
        fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
            event.properties.insert("half-done".into(), json!(1));
            panic!("boom");
        }
    }

    #[test]
    fn a_panicking_plugin_leaves_the_event_as_it_was_and_the_chain_goes_on() {
        let mut chain = Chain::default();
        chain.push("first", Box::new(SetKey("a")));
        chain.push("panics", Box::new(Panics));
        chain.push("last", Box::new(SetKey("b")));
        let out = chain.run(testing::event("e", "u", json!({})));
        let ChainOutcome::Kept { event, failed } = out else {
            panic!("kept")
        };
        assert_eq!(failed, vec!["panics".to_string()]);
        assert!(event.properties.get("half-done").is_none());
        assert_eq!(event.properties["a"], json!(true));
        assert_eq!(event.properties["b"], json!(true));
        assert_eq!(
            event.properties["$plugins_succeeded"],
            json!(["first", "last"])
        );
        assert_eq!(event.properties["$plugins_failed"], json!(["panics"]));
        assert_eq!(
            event.team_id(),
            testing::TEAM_ID,
            "a plugin cannot move an event to another team"
        );
    }
}
