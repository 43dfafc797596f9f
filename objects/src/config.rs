//! Where an object store is and how hogstream signs in to it: one shape for every use (state
//! checkpoints now, exports next), written in the TOML file as a table.
//!
//! ```toml
//! url = "s3://hogstream-state/prod"           # bucket and key prefix; or "file:///var/backups/hogstream"
//! endpoint = "https://s3.example.internal"    # an S3-compatible server; leave out for AWS
//! region = "eu-west-1"
//! access_key_id = "hogstream"
//! secret_access_key = { env = "HOGSTREAM_S3_SECRET_ACCESS_KEY" }  # or { file = "/run/secrets/s3" }
//! ca_file = "/etc/hogstream/s3-ca.pem"        # the CA an https endpoint must chain to
//! ```
//!
//! Without `access_key_id` and `secret_access_key`, credentials come from the environment the
//! AWS way (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, a web identity
//! token, or the instance's metadata service).

use std::{fmt, path::PathBuf};

use hogstream_event::security::Secret;
use serde::Deserialize;

use crate::ObjectsError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket/prefix`, or `file://` followed by a folder (absolute, or relative to the
    /// working directory) for tests and single-host setups.
    pub url: String,
    /// The address of an S3-compatible server (`http://127.0.0.1:8333`); AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// The CA (PEM) an `https://` endpoint must chain to; the system's roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// What `url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    S3 { bucket: String, prefix: String },
    Folder { path: PathBuf, prefix: String },
}

impl ObjectStoreConfig {
    /// A store of this shape at `url` with nothing else set (AWS defaults, or a folder).
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            endpoint: None,
            region: default_region(),
            access_key_id: None,
            secret_access_key: None,
            ca_file: None,
        }
    }

    /// Checks the settings without reading any secret or touching the network.
    pub fn validate(&self) -> Result<(), ObjectsError> {
        let location = self.location()?;
        if matches!(location, Location::Folder { .. })
            && (self.endpoint.is_some()
                || self.access_key_id.is_some()
                || self.secret_access_key.is_some()
                || self.ca_file.is_some())
        {
            return Err(self.invalid(
                "endpoint, credentials and ca_file are for s3:// stores, not a file:// folder",
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(self.invalid(
                "access_key_id and secret_access_key go together: set both, or neither to take credentials from the environment",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            if !scheme_ok {
                return Err(self.invalid(&format!(
                    "endpoint {endpoint:?} must start with http:// or https://"
                )));
            }
            if self.ca_file.is_some() && !endpoint.starts_with("https://") {
                return Err(self.invalid("ca_file needs an https:// endpoint"));
            }
        }
        Ok(())
    }

    fn invalid(&self, why: &str) -> ObjectsError {
        ObjectsError::Config(format!("object store {}: {why}", self.url))
    }

    pub(crate) fn location(&self) -> Result<Location, ObjectsError> {
        if let Some(rest) = self.url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(self.invalid("the url names no bucket (s3://bucket/prefix)"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(path) = self.url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(self.invalid("the url names no folder (file:///path)"));
            }
            return Ok(Location::Folder {
                path: PathBuf::from(path),
                prefix: String::new(),
            });
        }
        Err(self.invalid("the url must start with s3:// or file://"))
    }
}

/// Says where the store is and how hogstream signs in, never a secret.
impl fmt::Display for ObjectStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        if self.url.starts_with("s3://") {
            match (&self.access_key_id, &self.secret_access_key) {
                (Some(key), Some(secret)) => write!(f, " as key `{key}` (secret from {secret})")?,
                _ => write!(f, " with credentials from the environment")?,
            }
        }
        if let Some(ca) = &self.ca_file {
            write!(f, ", CA {}", ca.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ObjectStoreConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            store: ObjectStoreConfig,
        }
        // The message alone: the file loader reports the place without the line's text,
        // which may hold a secret.
        toml::from_str::<Wrapper>(toml_text)
            .map(|w| w.store)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn urls_name_a_bucket_and_prefix_or_a_folder() {
        let s3 = ObjectStoreConfig::at("s3://state/prod/eu/");
        assert_eq!(
            s3.location().unwrap(),
            Location::S3 {
                bucket: "state".into(),
                prefix: "prod/eu".into()
            }
        );
        assert_eq!(
            ObjectStoreConfig::at("s3://state").location().unwrap(),
            Location::S3 {
                bucket: "state".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            ObjectStoreConfig::at("file://.local/backups")
                .location()
                .unwrap(),
            Location::Folder {
                path: ".local/backups".into(),
                prefix: String::new()
            }
        );
        for bad in ["s3://", "file://", "gs://x", "state/prod"] {
            let err = ObjectStoreConfig::at(bad).validate().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn secrets_are_named_and_never_shown() {
        let c = parse(
            r#"[store]
url = "s3://b/p"
endpoint = "https://s3.local:8333"
access_key_id = "hogstream"
secret_access_key = { env = "S3_SECRET" }
ca_file = "/etc/ca.pem""#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.to_string(),
            "s3://b/p at https://s3.local:8333 as key `hogstream` (secret from $S3_SECRET), CA /etc/ca.pem"
        );
        let inline = parse(
            "[store]\nurl = \"s3://b\"\naccess_key_id = \"k\"\nsecret_access_key = \"hunter2\"",
        )
        .unwrap_err();
        assert!(
            inline.contains("never written inline") && !inline.contains("hunter2"),
            "{inline}"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_any_request() {
        let mut c = ObjectStoreConfig::at("s3://b");
        c.access_key_id = Some("k".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
        let mut c = ObjectStoreConfig::at("s3://b");
        c.endpoint = Some("127.0.0.1:8333".into());
        assert!(c.validate().unwrap_err().to_string().contains("http://"));
        let mut c = ObjectStoreConfig::at("s3://b");
        c.endpoint = Some("http://127.0.0.1:8333".into());
        c.ca_file = Some("/ca.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("https://"));
        let mut c = ObjectStoreConfig::at("file:///tmp/x");
        c.endpoint = Some("http://127.0.0.1:8333".into());
        assert!(c.validate().unwrap_err().to_string().contains("file://"));
        assert!(
            parse("[store]\nurl = \"s3://b\"\nbucket = \"b\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
