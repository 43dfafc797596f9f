//! `geoip`: PostHog's GeoIP transformation. Looks up the event's `$ip` in MaxMind-format
//! databases and adds the `$geoip_*` properties to the event and to `$set`, and `$initial_geoip_*`
//! to `$set_once`. Skipped when `$geoip_disable` is true or there is no usable `$ip`.
//!
//! Reads both record layouts in use: MaxMind's GeoIP2/GeoLite2 City (nested, localized names)
//! and ip-location-db's flat one (`country_code, state1, state2, city, postcode, latitude,
//! longitude, timezone`), which has no country or continent names.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use maxminddb::Reader;
use serde::Deserialize;
use serde_json::{Map, Value};

use hogstream_plugin::{PluginError, PluginEvent, Transform, Verdict, settings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `.mmdb` files, asked in order (e.g. an IPv4 and an IPv6 one).
    databases: Vec<PathBuf>,
}

type Database = Arc<Reader<Vec<u8>>>;

pub struct GeoIp {
    databases: Vec<Database>,
}

/// Databases are large and every team's instance reads the same files: load each once.
fn open(path: &PathBuf) -> Result<Database, PluginError> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Database>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(db) = open.get(path) {
        return Ok(Arc::clone(db));
    }
    let db = Reader::open_readfile(path).map_err(|e| PluginError::Setting {
        key: "databases".into(),
        reason: format!("cannot open {}: {e}", path.display()),
    })?;
    let db = Arc::new(db);
    open.insert(path.clone(), Arc::clone(&db));
    Ok(db)
}

impl GeoIp {
    pub fn from_config(config: &Value) -> Result<Box<dyn Transform>, PluginError> {
        let settings: Settings = settings(config)?;
        if settings.databases.is_empty() {
            return Err(PluginError::Setting {
                key: "databases".into(),
                reason: "name at least one .mmdb file".into(),
            });
        }
        let databases = settings
            .databases
            .iter()
            .map(open)
            .collect::<Result<_, _>>()?;
        Ok(Box::new(Self { databases }))
    }

    fn lookup(&self, ip: IpAddr) -> Result<Option<Value>, PluginError> {
        for db in &self.databases {
            let found = db
                .lookup(ip)
                .and_then(|r| r.decode::<Value>())
                .map_err(|e| PluginError::Failed(format!("geoip lookup of {ip}: {e}")))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

impl Transform for GeoIp {
    fn transform(&self, event: &mut PluginEvent) -> Result<Verdict, PluginError> {
        if event.properties.get("$geoip_disable") == Some(&Value::Bool(true)) {
            return Ok(Verdict::Keep);
        }
        let Some(ip) = event
            .properties
            .get("$ip")
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        else {
            return Ok(Verdict::Keep);
        };
        let Some(record) = self.lookup(ip)? else {
            return Ok(Verdict::Keep);
        };
        let geo = geoip_properties(&record);
        if geo.is_empty() {
            return Ok(Verdict::Keep);
        }
        let props = &mut event.properties;
        for (key, value) in &geo {
            props.insert(format!("$geoip_{key}"), value.clone());
        }
        let set = object(props, "$set");
        for (key, value) in &geo {
            set.insert(format!("$geoip_{key}"), value.clone());
        }
        let set_once = object(props, "$set_once");
        for (key, value) in geo {
            set_once.insert(format!("$initial_geoip_{key}"), value);
        }
        Ok(Verdict::Keep)
    }
}

/// `properties[key]` as an object, made one if it is missing or not an object.
fn object<'a>(properties: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = properties
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made an object above")
}

/// The `$geoip_` keys (without the prefix) of a database record, in either layout.
fn geoip_properties(record: &Value) -> Map<String, Value> {
    let at = |path: &[&str]| -> Option<Value> {
        let mut v = record;
        for p in path {
            v = v.get(*p)?;
        }
        (!v.is_null() && v.as_str() != Some("")).then(|| v.clone())
    };
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(key.to_owned(), v);
        }
    };
    if record.get("country_code").is_some() || record.get("state1").is_some() {
        // ip-location-db's flat layout.
        put("city_name", at(&["city"]));
        put("country_code", at(&["country_code"]));
        put("subdivision_1_name", at(&["state1"]));
        put("subdivision_2_name", at(&["state2"]));
        put("postal_code", at(&["postcode"]));
        put("latitude", at(&["latitude"]));
        put("longitude", at(&["longitude"]));
        put("time_zone", at(&["timezone"]));
        return out;
    }
    put("city_name", at(&["city", "names", "en"]));
    put("country_name", at(&["country", "names", "en"]));
    put("country_code", at(&["country", "iso_code"]));
    put("continent_name", at(&["continent", "names", "en"]));
    put("continent_code", at(&["continent", "code"]));
    put("postal_code", at(&["postal", "code"]));
    put("latitude", at(&["location", "latitude"]));
    put("longitude", at(&["location", "longitude"]));
    put("accuracy_radius", at(&["location", "accuracy_radius"]));
    put("time_zone", at(&["location", "time_zone"]));
    if let Some(Value::Array(subdivisions)) = record.get("subdivisions") {
        for (i, s) in subdivisions.iter().enumerate() {
            let n = i + 1;
            put(&format!("subdivision_{n}_code"), s.get("iso_code").cloned());
            put(
                &format!("subdivision_{n}_name"),
                s.get("names").and_then(|n| n.get("en")).cloned(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maxmind_layout() {
        let record = json!({
            "city": {"names": {"en": "London", "de": "London"}},
            "continent": {"code": "EU", "names": {"en": "Europe"}},
            "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 100, "time_zone": "Europe/London"},
            "postal": {"code": "EC2V"},
            "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        });
        let p = geoip_properties(&record);
        assert_eq!(p["city_name"], json!("London"));
        assert_eq!(p["country_name"], json!("United Kingdom"));
        assert_eq!(p["continent_code"], json!("EU"));
        assert_eq!(p["accuracy_radius"], json!(100));
        assert_eq!(p["subdivision_1_code"], json!("ENG"));
        assert_eq!(p["subdivision_1_name"], json!("England"));
        assert_eq!(p.len(), 12);
    }

    #[test]
    fn flat_layout_skips_empty_fields() {
        let record = json!({"country_code": "US", "state1": "California", "state2": "", "city": "Mountain View",
            "postcode": "94043", "latitude": 37.42, "longitude": -122.08, "timezone": "America/Los_Angeles"});
        let p = geoip_properties(&record);
        assert_eq!(p["city_name"], json!("Mountain View"));
        assert_eq!(p["subdivision_1_name"], json!("California"));
        assert!(!p.contains_key("subdivision_2_name"));
        assert_eq!(p.len(), 7);
    }

    #[test]
    fn a_missing_database_is_a_setting_error() {
        let err = GeoIp::from_config(&json!({"databases": ["/nonexistent.mmdb"]}))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("/nonexistent.mmdb"), "{err}");
    }
}
