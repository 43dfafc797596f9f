//! Secure connections to Kafka, shared by every hogstream client of it (capture, the engine,
//! destinations, `replay`, `dlq`): TLS with a CA file and an optional client certificate, and
//! SASL with SCRAM or PLAIN. Secrets are named, never written inline: each comes from an
//! environment variable or a file, read once at start-up.
//!
//! ```toml
//! [kafka.security]
//! protocol = "sasl_ssl"
//! ca_file = "/etc/hogstream/kafka-ca.pem"
//! sasl_mechanism = "SCRAM-SHA-512"
//! username = "hogstream"
//! password = { env = "HOGSTREAM_KAFKA_PASSWORD" }   # or { file = "/run/secrets/kafka" }
//! ```

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Secret {
    /// An environment variable's value.
    Env(String),
    /// A file's content, without its trailing newline.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase", deny_unknown_fields)]
        enum Named {
            Env(String),
            File(PathBuf),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Named(Named),
            // Read only to recognise the mistake; the value itself is dropped unseen.
            Inline(#[allow(dead_code)] String),
        }
        match Form::deserialize(d)? {
            Form::Named(Named::Env(name)) => Ok(Secret::Env(name)),
            Form::Named(Named::File(path)) => Ok(Secret::File(path)),
            // Said plainly: the value is not echoed, it may be the secret itself.
            Form::Inline(_) => Err(serde::de::Error::custom(
                "a secret is never written inline: use { env = \"VARIABLE\" } or { file = \"/path\" }",
            )),
        }
    }
}

impl Secret {
    /// Reads the secret now; `what` names it in the error.
    pub fn read(&self, what: &str) -> Result<String, SecurityError> {
        let value = match self {
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                SecurityError(format!("{what}: environment variable {name} is not set"))
            })?,
            Secret::File(path) => std::fs::read_to_string(path).map_err(|e| {
                SecurityError(format!("{what}: cannot read {}: {e}", path.display()))
            })?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_owned();
        if value.is_empty() {
            return Err(SecurityError(format!("{what}: {self} is empty")));
        }
        Ok(value)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "${name}"),
            Secret::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn librdkafka(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// A SASL mechanism hogstream supports (no Kerberos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::Plain => "PLAIN",
        }
    }
}

/// `[kafka.security]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    pub protocol: Protocol,
    /// CA certificates (PEM) the brokers' certificates must chain to; the system's when unset.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for brokers that ask for one.
    pub certificate_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The client key's password, when it is encrypted.
    pub key_password: Option<Secret>,
    pub sasl_mechanism: Option<Mechanism>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// A configuration that cannot work, or a secret that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[kafka.security] {0}")]
pub struct SecurityError(pub String);

/// librdkafka settings made from [`KafkaSecurity`], secrets included; printed redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientSettings(Vec<(String, String)>);

impl ClientSettings {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let secret = k.ends_with("password");
                (k, if secret { "<redacted>" } else { v.as_str() })
            }))
            .finish()
    }
}

impl KafkaSecurity {
    /// Checks that the settings fit together and their files exist.
    pub fn validate(&self) -> Result<(), SecurityError> {
        let p = self.protocol;
        if !p.tls()
            && (self.ca_file.is_some()
                || self.certificate_file.is_some()
                || self.key_file.is_some())
        {
            return Err(SecurityError(format!(
                "ca_file, certificate_file and key_file need protocol \"ssl\" or \"sasl_ssl\", not {:?}",
                p.librdkafka()
            )));
        }
        if self.certificate_file.is_some() != self.key_file.is_some() {
            return Err(SecurityError(
                "certificate_file and key_file go together".into(),
            ));
        }
        if p.sasl() {
            if self.sasl_mechanism.is_none() || self.username.is_none() || self.password.is_none() {
                return Err(SecurityError(format!(
                    "protocol {:?} needs sasl_mechanism, username and password (password = {{ env = \"…\" }} or {{ file = \"…\" }})",
                    p.librdkafka()
                )));
            }
        } else if self.sasl_mechanism.is_some()
            || self.username.is_some()
            || self.password.is_some()
        {
            return Err(SecurityError(format!(
                "sasl_mechanism, username and password need protocol \"sasl_plaintext\" or \"sasl_ssl\", not {:?}",
                p.librdkafka()
            )));
        }
        for (what, path) in [
            ("ca_file", &self.ca_file),
            ("certificate_file", &self.certificate_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(SecurityError(format!(
                    "{what} {} does not exist or is not a file",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// The librdkafka settings, with the secrets read from their environment variables or files.
    pub fn client_settings(&self) -> Result<ClientSettings, SecurityError> {
        self.validate()?;
        let mut out = vec![(
            "security.protocol".to_owned(),
            self.protocol.librdkafka().to_owned(),
        )];
        let mut set = |k: &str, v: String| out.push((k.to_owned(), v));
        if self.protocol.tls() {
            // Brokers are verified against their host names as well as the CA.
            set("ssl.endpoint.identification.algorithm", "https".into());
            if let Some(ca) = &self.ca_file {
                set("ssl.ca.location", ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&self.certificate_file, &self.key_file) {
                set("ssl.certificate.location", cert.display().to_string());
                set("ssl.key.location", key.display().to_string());
            }
            if let Some(secret) = &self.key_password {
                set("ssl.key.password", secret.read("key_password")?);
            }
        }
        if let (Some(mechanism), Some(username), Some(password)) =
            (self.sasl_mechanism, &self.username, &self.password)
        {
            set("sasl.mechanisms", mechanism.name().into());
            set("sasl.username", username.clone());
            set("sasl.password", password.read("password")?);
        }
        Ok(ClientSettings(out))
    }
}

impl fmt::Display for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol.librdkafka())?;
        if let (Some(mechanism), Some(username), Some(password)) =
            (self.sasl_mechanism, &self.username, &self.password)
        {
            write!(
                f,
                ", {} as `{username}` (password from {password})",
                mechanism.name()
            )?;
        }
        if self.protocol.tls() {
            match &self.ca_file {
                Some(ca) => write!(f, ", CA {}", ca.display())?,
                None => f.write_str(", the system's CAs")?,
            }
            if let Some(cert) = &self.certificate_file {
                write!(f, ", client certificate {}", cert.display())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        security: KafkaSecurity,
    }

    fn parse(toml_text: &str) -> KafkaSecurity {
        serde_json::from_value::<File>(toml_like(toml_text))
            .unwrap()
            .security
    }

    /// The tests write TOML-shaped JSON: this crate does not depend on a TOML parser.
    fn toml_like(json: &str) -> serde_json::Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn sasl_ssl_with_a_secret_from_the_environment() {
        let s = parse(
            r#"{"security": {"protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512",
                "username": "hogstream", "password": {"env": "HOGSTREAM_TEST_KAFKA_SECRET"}}}"#,
        );
        // SAFETY: no other test of this crate reads this variable.
        unsafe { std::env::set_var("HOGSTREAM_TEST_KAFKA_SECRET", "s3cret\n") };
        let settings = s.client_settings().unwrap();
        let map: std::collections::BTreeMap<_, _> = settings.iter().collect();
        assert_eq!(map["security.protocol"], "sasl_ssl");
        assert_eq!(map["sasl.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(
            map["sasl.password"], "s3cret",
            "the trailing newline is dropped"
        );
        let shown = format!("{settings:?} {s}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("$HOGSTREAM_TEST_KAFKA_SECRET"), "{shown}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_what_is_wrong() {
        let missing = parse(r#"{"security": {"protocol": "sasl_ssl"}}"#);
        assert!(
            missing
                .validate()
                .unwrap_err()
                .0
                .contains("needs sasl_mechanism")
        );
        let ca_without_tls = parse(r#"{"security": {"ca_file": "/etc/hosts"}}"#);
        assert!(
            ca_without_tls
                .validate()
                .unwrap_err()
                .0
                .contains("need protocol")
        );
        let no_file =
            parse(r#"{"security": {"protocol": "ssl", "ca_file": "/nonexistent/ca.pem"}}"#);
        assert!(no_file.validate().unwrap_err().0.contains("does not exist"));
        let unset = parse(
            r#"{"security": {"protocol": "sasl_plaintext", "sasl_mechanism": "PLAIN",
                "username": "u", "password": {"env": "HOGSTREAM_TEST_UNSET_VARIABLE"}}}"#,
        );
        assert!(
            unset
                .client_settings()
                .unwrap_err()
                .0
                .contains("HOGSTREAM_TEST_UNSET_VARIABLE is not set")
        );
        let inline: Result<File, _> = serde_json::from_value(toml_like(
            r#"{"security": {"protocol": "sasl_ssl", "password": "inline"}}"#,
        ));
        assert!(inline.is_err(), "a password is never written inline");
    }
}
