//! The hogstream configuration file: one TOML file with a section per component, plus
//! environment overrides for what differs between machines.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hogstream_capture::CaptureConfig;
use hogstream_engine::{EngineConfig, KafkaConfig, teams::Team};
use hogstream_sinks::ClickHouseConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Brokers, topics and consumer group of the engine; capture uses the same brokers unless
    /// `[capture.kafka]` names others.
    pub kafka: KafkaConfig,
    pub capture: CaptureConfig,
    pub engine: EngineConfig,
    pub clickhouse: ClickHouseConfig,
    pub teams: Vec<Team>,
    /// Plugin transforms per team, run in this order (see the plugin guide).
    pub plugins: Vec<hogstream_plugin::PluginConfig>,
    /// Views per team, kept current in their ClickHouse tables (docs/views.md).
    pub views: Vec<hogstream_engine::views::ViewConfig>,
    /// Checkpoints of the engine's state in an object store, and restores from them.
    pub checkpoints: Option<hogstream_engine::CheckpointConfig>,
}

/// Environment variables that override the file, for deployment-specific values.
const ENV_OVERRIDES: &[&str] = &[
    "HOGSTREAM_KAFKA_BROKERS",
    "HOGSTREAM_CLICKHOUSE_URL",
    "HOGSTREAM_CLICKHOUSE_DATABASE",
    "HOGSTREAM_CLICKHOUSE_USER",
    "HOGSTREAM_CLICKHOUSE_PASSWORD",
    "HOGSTREAM_CAPTURE_ADDRESS",
    "HOGSTREAM_ENGINE_WORKERS",
    "HOGSTREAM_DATA_DIR",
];

/// Where and why a configuration file does not parse, without quoting the offending line: it
/// may hold a secret written inline, which is exactly what is being refused.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let place = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(", line {line}, column {column}")
    });
    anyhow::anyhow!(
        "invalid config file {}{}: {}",
        path.display(),
        place.unwrap_or_default(),
        e.message()
    )
}

impl Config {
    /// Reads `path` (or the defaults when `None`), applies environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config: Config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text).map_err(|e| parse_error(p, &text, &e))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        if config.capture.kafka.bootstrap_servers
            == hogstream_capture::config::ProducerConfig::default().bootstrap_servers
        {
            config.capture.kafka.bootstrap_servers = config.kafka.brokers.clone();
        }
        config.validate()?;
        // Secrets are read once, here, so a missing one stops start-up with its name.
        config.kafka.resolve_security()?;
        config.capture.kafka.client_settings = config.kafka.client_settings.clone();
        config.clickhouse.resolve_secrets()?;
        Ok(config)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        for name in ENV_OVERRIDES {
            let Some(v) = get(name) else { continue };
            match *name {
                "HOGSTREAM_KAFKA_BROKERS" => {
                    self.kafka.brokers = v.clone();
                    self.capture.kafka.bootstrap_servers = v;
                }
                "HOGSTREAM_CLICKHOUSE_URL" => self.clickhouse.url = v,
                "HOGSTREAM_CLICKHOUSE_DATABASE" => self.clickhouse.database = v,
                "HOGSTREAM_CLICKHOUSE_USER" => self.clickhouse.user = Some(v),
                "HOGSTREAM_CLICKHOUSE_PASSWORD" => self.clickhouse.password = Some(v),
                "HOGSTREAM_CAPTURE_ADDRESS" => {
                    self.capture.bind_address = v.parse().with_context(|| {
                        format!("{name}={v} is not an address like 127.0.0.1:8010")
                    })?;
                }
                "HOGSTREAM_ENGINE_WORKERS" => {
                    self.engine.workers = v
                        .parse()
                        .with_context(|| format!("{name}={v} is not a number"))?;
                }
                "HOGSTREAM_DATA_DIR" => self.engine.data_dir = v.into(),
                _ => unreachable!("every override is handled"),
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        self.capture
            .validate()
            .map_err(|e| anyhow::anyhow!("[capture] {e}"))?;
        self.kafka.security.validate()?;
        hogstream_engine::teams::Teams::new(self.teams.clone()).context("[[teams]]")?;
        let team_ids: Vec<i64> = self.teams.iter().map(|t| t.id).collect();
        crate::plugins::registry().check(&self.plugins, &team_ids)?;
        crate::plugins::views()
            .resolve(&self.views, &team_ids)
            .map_err(|e| anyhow::anyhow!(e))?;
        if self.engine.workers == 0 {
            bail!("[engine] workers must be at least 1");
        }
        if self.kafka.input_topics.is_empty() {
            bail!("[kafka] input_topics is empty");
        }
        if self.clickhouse.max_rows == 0 || self.clickhouse.max_bytes == 0 {
            bail!("[clickhouse] max_rows and max_bytes must be positive");
        }
        if let Some(c) = &self.checkpoints {
            c.store
                .validate()
                .map_err(|e| anyhow::anyhow!("[checkpoints.store] {e}"))?;
            if c.interval < std::time::Duration::from_secs(1) {
                bail!("[checkpoints] interval must be at least 1s");
            }
        }
        if self.teams.is_empty() {
            tracing::warn!(
                "no [[teams]] configured: the engine will drop every event as invalid_token"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_env_overrides_win() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/hogstream.example.toml"
        ))
        .unwrap();
        let mut c: Config = toml::from_str(&text).unwrap();
        c.apply_env(|k| (k == "HOGSTREAM_KAFKA_BROKERS").then(|| "h:1".to_owned()))
            .unwrap();
        assert_eq!(c.kafka.brokers, "h:1");
        assert_eq!(c.capture.kafka.bootstrap_servers, "h:1");
        assert!(!c.teams.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[engine]\nwrokers = 2").is_err());
        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "HOGSTREAM_ENGINE_WORKERS").then(|| "many".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("HOGSTREAM_ENGINE_WORKERS=many"));
        c.engine.workers = 0;
        assert!(c.validate().unwrap_err().to_string().contains("workers"));
    }

    #[test]
    fn a_parse_error_names_the_place_but_never_quotes_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"b:1\"\n\n[kafka.security]\nprotocol = \"sasl_ssl\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(
            err.contains("line 6, column 12") && err.contains("never written inline"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn printed_configuration_hides_the_clickhouse_password() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "HOGSTREAM_CLICKHOUSE_PASSWORD").then(|| "s3cret".to_owned()))
            .unwrap();
        assert_eq!(c.clickhouse.password.as_deref(), Some("s3cret"));
        let printed = format!("{c:#?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
