//! `chaos`: panics on events with the configured names. For fault-isolation tests:
//!
//! ```toml
//! [[plugins]]
//! plugin = "chaos"
//! [plugins.config]
//! panic_on = ["boom"]
//! ```

use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    panic_on: Vec<String>,
}

pub struct Chaos {
    settings: Settings,
}

impl Chaos {
    pub fn from_config(config: &Value) -> Result<Box<dyn Transform>, PluginError> {
        Ok(Box::new(Self {
            settings: hogstream_plugin::settings(config)?,
        }))
    }
}

impl Transform for Chaos {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
        if self.settings.panic_on.contains(&event.event) {
            panic!("chaos: told to panic on `{}`", event.event);
        }
        Ok(Verdict::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::{ChainOutcome, testing};
    use serde_json::json;

    #[test]
    fn a_panic_leaves_the_event_whole_and_recorded() {
        let plugin = Chaos::from_config(&json!({"panic_on": ["boom"]})).unwrap();
        let out = testing::run(
            plugin.as_ref(),
            testing::event("boom", "u", json!({"a": 1})),
        );
        let ChainOutcome::Kept { event, failed } = out else {
            panic!("kept")
        };
        assert_eq!(failed, vec!["test".to_string()]);
        assert_eq!(event.properties["a"], json!(1));
        assert_eq!(event.properties["$plugins_failed"], json!(["test"]));
    }
}
