//! `event-filter`: drops events by name, or by a property equal to a value.

use serde::Deserialize;
use serde_json::{Map, Value};

use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict, settings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Event names to drop.
    #[serde(default)]
    events: Vec<String>,
    /// Drop when any of these properties equals the given value.
    #[serde(default)]
    properties: Map<String, Value>,
}

pub struct EventFilter {
    settings: Settings,
}

impl EventFilter {
    pub fn from_config(config: &Value) -> Result<Box<dyn Transform>, PluginError> {
        let settings: Settings = settings(config)?;
        if settings.events.is_empty() && settings.properties.is_empty() {
            return Err(PluginError::Setting {
                key: "events / properties".into(),
                reason: "give at least one event name or property to filter on".into(),
            });
        }
        Ok(Box::new(Self { settings }))
    }
}

impl Transform for EventFilter {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
        let by_name = self.settings.events.contains(&event.event);
        let by_property = self
            .settings
            .properties
            .iter()
            .any(|(k, v)| event.properties.get(k) == Some(v));
        Ok(if by_name || by_property {
            Verdict::Drop
        } else {
            Verdict::Keep
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::{ChainOutcome, testing};
    use serde_json::json;

    #[test]
    fn drops_by_name_or_property_and_keeps_the_rest() {
        let f = EventFilter::from_config(
            &json!({"events": ["spam"], "properties": {"$browser": "bot"}}),
        )
        .unwrap();
        let run =
            |name: &str, props: Value| testing::run(f.as_ref(), testing::event(name, "u", props));
        assert_eq!(run("spam", json!({})), ChainOutcome::Dropped("test".into()));
        assert_eq!(
            run("$pageview", json!({"$browser": "bot"})),
            ChainOutcome::Dropped("test".into())
        );
        assert!(
            run("$pageview", json!({"$browser": "Chrome"}))
                .event()
                .is_some()
        );
        assert!(EventFilter::from_config(&json!({})).is_err());
    }
}
