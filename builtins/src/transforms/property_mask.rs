//! `property-mask`: drops listed properties or replaces them by a salted SHA-256, in the event's
//! properties and in its `$set` / `$set_once`, so masked values never reach persons either.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict, settings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    hash: Vec<String>,
    /// Mixed into every hash so masked values cannot be looked up in a table of known ones.
    #[serde(default)]
    salt: String,
}

pub struct PropertyMask {
    settings: Settings,
}

impl PropertyMask {
    pub fn from_config(config: &Value) -> Result<Box<dyn Transform>, PluginError> {
        let settings: Settings = settings(config)?;
        if settings.drop.is_empty() && settings.hash.is_empty() {
            return Err(PluginError::Setting {
                key: "drop / hash".into(),
                reason: "list at least one property to drop or hash".into(),
            });
        }
        if let Some(both) = settings.drop.iter().find(|k| settings.hash.contains(k)) {
            return Err(PluginError::Setting {
                key: both.clone(),
                reason: "is listed under both `drop` and `hash`".into(),
            });
        }
        Ok(Box::new(Self { settings }))
    }

    fn mask(&self, map: &mut Map<String, Value>) -> Result<(), PluginError> {
        for key in &self.settings.drop {
            map.remove(key);
        }
        for key in &self.settings.hash {
            let Some(v) = map.get_mut(key) else { continue };
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(PluginError::Failed(format!(
                        "property `{key}` is not a scalar and cannot be hashed"
                    )));
                }
            };
            let digest = Sha256::digest(format!("{}{text}", self.settings.salt));
            *v = Value::String(hex::encode(digest));
        }
        Ok(())
    }
}

impl Transform for PropertyMask {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
        self.mask(&mut event.properties)?;
        for nested in ["$set", "$set_once"] {
            if let Some(Value::Object(m)) = event.properties.get_mut(nested) {
                self.mask(m)?;
            }
        }
        Ok(Verdict::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::testing;
    use serde_json::json;

    #[test]
    fn drops_and_hashes_also_inside_set() {
        let mask =
            PropertyMask::from_config(&json!({"drop": ["$ip"], "hash": ["email"], "salt": "s"}))
                .unwrap();
        let out = testing::run(
            mask.as_ref(),
            testing::event(
                "$pageview",
                "u",
                json!({"$ip": "1.2.3.4", "email": "a@b", "$set": {"email": "a@b"}, "k": 1}),
            ),
        );
        let e = out.event().unwrap();
        let expected = hex::encode(Sha256::digest("sa@b"));
        assert!(e.properties.get("$ip").is_none());
        assert_eq!(e.properties["email"], json!(expected));
        assert_eq!(e.properties["$set"]["email"], json!(expected));
        assert_eq!(e.properties["k"], json!(1));
        assert_eq!(e.properties["$plugins_succeeded"], json!(["test"]));
    }

    #[test]
    fn a_value_it_cannot_hash_fails_the_plugin_and_keeps_the_event_whole() {
        let mask = PropertyMask::from_config(&json!({"drop": ["$ip"], "hash": ["email"]})).unwrap();
        let out = testing::run(
            mask.as_ref(),
            testing::event(
                "$pageview",
                "u",
                json!({"$ip": "1.2.3.4", "email": {"nested": true}}),
            ),
        );
        let e = out.event().unwrap();
        assert_eq!(
            e.properties["$ip"],
            json!("1.2.3.4"),
            "nothing of a failed run is kept"
        );
        assert_eq!(e.properties["$plugins_failed"], json!(["test"]));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(PropertyMask::from_config(&json!({})).is_err());
        assert!(PropertyMask::from_config(&json!({"drop": ["a"], "hash": ["a"]})).is_err());
        let err = PropertyMask::from_config(&json!({"drop": ["a"], "typo": 1}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("typo"), "{err}");
    }
}
