//! `tag-internal`: marks events of internal users with `internal: true`, or drops them.

use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    domains: Vec<String>,
    #[serde(default)]
    drop: bool,
}

pub struct TagInternal {
    settings: Settings,
}

impl TagInternal {
    /// Builds the plugin from its `[plugins.config]`; a bad setting stops start-up.
    pub fn from_config(config: &Value) -> Result<Box<dyn Transform>, PluginError> {
        let settings: Settings = hogstream_plugin::settings(config)?;
        if settings.domains.is_empty() {
            return Err(PluginError::Setting {
                key: "domains".into(),
                reason: "list at least one email domain".into(),
            });
        }
        Ok(Box::new(Self { settings }))
    }

    fn is_internal(&self, event: &PluginEvent) -> bool {
        let email = event
            .properties
            .get("email")
            .or_else(|| event.properties.get("$set").and_then(|s| s.get("email")));
        email.and_then(Value::as_str).is_some_and(|e| {
            self.settings
                .domains
                .iter()
                .any(|d| e.rsplit_once('@').is_some_and(|(_, host)| host == d))
        })
    }
}

impl Transform for TagInternal {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
        let internal = self.is_internal(event);
        if internal && self.settings.drop {
            return Ok(Verdict::Drop);
        }
        event
            .properties
            .insert("internal".into(), Value::Bool(internal));
        Ok(Verdict::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::{ChainOutcome, testing};
    use serde_json::json;

    #[test]
    fn tags_internal_users_by_email_domain() {
        let plugin = TagInternal::from_config(&json!({"domains": ["example.com"]})).unwrap();
        let out = testing::run(
            plugin.as_ref(),
            testing::event(
                "$pageview",
                "u1",
                json!({"$set": {"email": "ann@example.com"}}),
            ),
        );
        assert_eq!(out.event().unwrap().properties["internal"], json!(true));
        let out = testing::run(
            plugin.as_ref(),
            testing::event("$pageview", "u2", json!({"email": "bob@customer.io"})),
        );
        assert_eq!(out.event().unwrap().properties["internal"], json!(false));
    }

    #[test]
    fn can_drop_instead_and_refuses_bad_settings() {
        let plugin =
            TagInternal::from_config(&json!({"domains": ["example.com"], "drop": true})).unwrap();
        let out = testing::run(
            plugin.as_ref(),
            testing::event("$pageview", "u1", json!({"email": "ann@example.com"})),
        );
        assert_eq!(out, ChainOutcome::Dropped("test".into()));
        assert!(TagInternal::from_config(&json!({"domains": []})).is_err());
        assert!(TagInternal::from_config(&json!({"domain": ["x"]})).is_err());
    }
}
