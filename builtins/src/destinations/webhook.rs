//! `webhook`: one HTTP request per event (PostHog's `composeWebhook`), with a templated body.
//! 2xx is delivered; 408, 429, 5xx and transport errors are retried with backoff; any other
//! status means the receiver refuses that event, which is logged, counted and skipped.

use std::{collections::BTreeMap, time::Duration};

use hogstream_plugin::{Batching, Destination, ExportError, PluginError, ProcessedEvent, settings};
use reqwest::{Method, blocking::Client};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The body template [default: the processed event as JSON].
    #[serde(default)]
    body: Option<Value>,
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    timeout: Duration,
}

fn post() -> String {
    "POST".into()
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

pub struct Webhook {
    settings: Settings,
    method: Method,
    /// Made on the destination's own thread: a blocking client may not live in an async context.
    client: Option<Client>,
    /// The batch being retried and how many of its events were already sent, so a retry does not
    /// send them again.
    sent: Option<(Uuid, usize)>,
}

impl Webhook {
    pub fn from_config(config: &Value) -> Result<Box<dyn Destination>, PluginError> {
        let settings: Settings = settings(config)?;
        let url = reqwest::Url::parse(&settings.url).map_err(|e| PluginError::Setting {
            key: "url".into(),
            reason: format!("`{}` is not a URL: {e}", settings.url),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PluginError::Setting {
                key: "url".into(),
                reason: "must be http or https".into(),
            });
        }
        let method = settings
            .method
            .to_uppercase()
            .parse::<Method>()
            .map_err(|e| PluginError::Setting {
                key: "method".into(),
                reason: e.to_string(),
            })?;
        Ok(Box::new(Self {
            settings,
            method,
            client: None,
            sent: None,
        }))
    }

    fn send(&mut self, event: &ProcessedEvent) -> Result<(), ExportError> {
        let client = match &self.client {
            Some(c) => c,
            None => self.client.insert(
                Client::builder()
                    .timeout(self.settings.timeout)
                    .build()
                    .map_err(|e| ExportError::Retry(format!("http client: {e}")))?,
            ),
        };
        let body = match &self.settings.body {
            Some(t) => template::render(t, event),
            None => serde_json::to_value(event).unwrap_or(Value::Null),
        };
        let mut request = client
            .request(self.method.clone(), &self.settings.url)
            .json(&body);
        for (k, v) in &self.settings.headers {
            request = request.header(k, v);
        }
        let status = match request.send() {
            Ok(r) => r.status(),
            Err(e) => return Err(ExportError::Retry(format!("{}: {e}", self.settings.url))),
        };
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            return Err(ExportError::Retry(format!(
                "{} answered {status}",
                self.settings.url
            )));
        }
        tracing::warn!(uuid = %event.uuid, %status, url = self.settings.url, "webhook refused an event; skipped");
        metrics::counter!("hogstream_webhook_refused_total").increment(1);
        Ok(())
    }
}

impl Destination for Webhook {
    fn batching(&self) -> Batching {
        Batching::ONE_BY_ONE
    }

    fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut done = match self.sent {
            Some((batch, n)) if batch == first.uuid => n,
            _ => 0,
        };
        while done < events.len() {
            if let Err(e) = self.send(&events[done]) {
                self.sent = Some((first.uuid, done));
                return Err(e);
            }
            done += 1;
        }
        self.sent = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked() {
        let err = |config: Value| {
            Webhook::from_config(&config)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(err(json!({"url": "not a url"})).contains("`not a url` is not a URL"));
        assert!(err(json!({"url": "ftp://x"})).contains("http or https"));
        assert!(err(json!({"url": "http://x", "method": "P OST"})).contains("method"));
        assert!(err(json!({"url": "http://x", "nope": 1})).contains("nope"));
        assert!(
            Webhook::from_config(
                &json!({"url": "http://127.0.0.1:1/hook", "body": {"a": "{event.event}"}})
            )
            .is_ok()
        );
    }

    #[test]
    fn an_unreachable_receiver_is_retried() {
        let mut hook =
            Webhook::from_config(&json!({"url": "http://127.0.0.1:1/hook", "timeout": "1s"}))
                .unwrap();
        let events = [hogstream_plugin::testing::processed("e", "u")];
        let out = hogstream_plugin::testing::deliver(hook.as_mut(), &events, 2);
        assert!(
            matches!(out, hogstream_plugin::Delivery::GaveUp { attempts: 2, .. }),
            "{out:?}"
        );
    }
}
