//! The ClickHouse connection: configuration, schema checks and inserts that retry until
//! ClickHouse acknowledges them (backpressure rather than loss when ClickHouse is down).

use std::{path::PathBuf, sync::Arc, time::Duration};
use tracing::Instrument;

use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Deserialize;
use tokio::sync::watch;

use crate::{error::SinkError, schema};

/// 1 when the last insert or readiness probe reached ClickHouse, 0 when it failed: measured on
/// every insert attempt (retries included, at least every `max_backoff` while one fails) and
/// by the engine's probe every 10 s.
pub const CLICKHOUSE_UP: &str = "hogstream_clickhouse_up";

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) address of ClickHouse (or of the project's chDB front).
    pub url: String,
    pub database: String,
    pub user: Option<String>,
    /// Prefer `HOGSTREAM_CLICKHOUSE_PASSWORD` or `password_file` to writing it here.
    pub password: Option<String>,
    /// A file holding the password (its trailing newline is dropped).
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` server's certificate must chain to; the public web
    /// CAs when unset.
    pub ca_file: Option<PathBuf>,
    /// The TLS client made from `ca_file` at start-up ([`ClickHouseConfig::resolve_secrets`]).
    #[serde(skip)]
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A batch is flushed when it holds this many event rows...
    pub max_rows: usize,
    /// ...or this many bytes of event data...
    pub max_bytes: usize,
    /// ...or when its oldest row has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// First retry delay after a failed insert; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Timeout of one insert request; a timed-out insert is retried with the same token.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "hogstream".into(),
            user: None,
            password: None,
            password_file: None,
            ca_file: None,
            tls: None,
            max_rows: 100_000,
            max_bytes: 64 << 20,
            flush_interval: Duration::from_millis(250),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Like the derived form, with the password hidden: configurations get printed and logged.
impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("max_rows", &self.max_rows)
            .field("max_bytes", &self.max_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Reads `password_file` and the CA file into what clients are made of; at start-up, so a
    /// missing file stops it with its name.
    pub fn resolve_secrets(&mut self) -> Result<(), SinkError> {
        let config = |m: String| SinkError::Config(format!("[clickhouse] {m}"));
        if let Some(path) = &self.password_file {
            if self.password.is_some() {
                return Err(config(
                    "password_file and a password (in the file or HOGSTREAM_CLICKHOUSE_PASSWORD) are both set: keep one".into(),
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| config(format!("password_file {}: {e}", path.display())))?;
            self.password = Some(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        let https = self.url.starts_with("https://");
        if self.ca_file.is_some() && !https {
            return Err(config(format!(
                "ca_file needs an https:// url, not {}",
                self.url
            )));
        }
        self.tls = https.then(|| self.tls_config()).transpose()?.map(Arc::new);
        Ok(())
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, SinkError> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let unreadable = |e: &dyn std::fmt::Display| {
                    SinkError::Config(format!("[clickhouse] ca_file {}: {e}", path.display()))
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                    roots
                        .add(cert.map_err(|e| unreadable(&e))?)
                        .map_err(|e| unreadable(&e))?;
                }
                if roots.is_empty() {
                    return Err(unreadable(&"no certificate in the file"));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        // ring, not aws-lc-rs: the latter would add post-quantum key exchange but needs a C
        // build of aws-lc; every ClickHouse server negotiates the classic groups ring has.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SinkError::Config(format!("[clickhouse] TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// One line for `config check`: where, as whom, and with which TLS, without the password.
    pub fn describe(&self) -> String {
        let user = self.user.as_deref().unwrap_or("default");
        let password = match (&self.password_file, &self.password) {
            (Some(file), _) => format!("password from {}", file.display()),
            (None, Some(_)) => "a password".into(),
            (None, None) => "no password".into(),
        };
        let tls = match (self.url.starts_with("https://"), &self.ca_file) {
            (false, _) => "plain HTTP".to_owned(),
            (true, Some(ca)) => format!("TLS, CA {}", ca.display()),
            (true, None) => "TLS, the public web CAs".to_owned(),
        };
        format!(
            "clickhouse: {} as `{user}` with {password}, {tls}",
            self.url
        )
    }

    /// A client without a default database, for DDL and bookkeeping. Every path to ClickHouse
    /// (migrate, the sink, readiness, the tools) is made here, with the same TLS and user.
    pub fn client(&self) -> Client {
        let mut c = match &self.tls {
            Some(tls) => https_client(Arc::clone(tls)),
            None => Client::default(),
        }
        .with_url(&self.url);
        if let Some(u) = &self.user {
            c = c.with_user(u);
        }
        if let Some(p) = &self.password {
            c = c.with_password(p);
        }
        c
    }
}

/// A client over a pooled HTTPS connection like the `clickhouse` crate's own, with our TLS
/// settings.
fn https_client(tls: Arc<rustls::ClientConfig>) -> Client {
    use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Client::with_http_client(
        HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(https),
    )
}

/// How long the sink waits at start-up for a ClickHouse that does not answer before it gives up.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub struct ClickHouseSink {
    config: ClickHouseConfig,
    client: Client,
    shutdown: watch::Receiver<bool>,
}

impl ClickHouseSink {
    /// Connects and checks that the schema is current; `shutdown` ends retry loops. A
    /// ClickHouse that does not answer (a restart, a dropped connection) is asked again with
    /// backoff for up to [`CONNECT_PATIENCE`]; an outdated schema fails at once.
    pub async fn connect(
        config: ClickHouseConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SinkError> {
        let admin = config.client();
        let started = std::time::Instant::now();
        let mut backoff = config.min_backoff;
        loop {
            match schema::check(&admin, &config.database).await {
                Err(SinkError::ClickHouse(
                    e @ (clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut),
                )) if started.elapsed() < CONNECT_PATIENCE && !*shutdown.borrow() => {
                    tracing::warn!(url = %config.url, error = %e, retry_in = ?backoff, "clickhouse does not answer yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
                result => break result?,
            }
        }
        let client = admin.with_database(&config.database);
        Ok(Self {
            config,
            client,
            shutdown,
        })
    }

    pub fn config(&self) -> &ClickHouseConfig {
        &self.config
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn insert_once<T>(
        &self,
        table: &str,
        rows: &[T],
        token: &str,
    ) -> clickhouse::error::Result<()>
    where
        T: Row + RowOwned + RowWrite,
    {
        let mut insert = self
            .client
            .insert::<T>(table)
            .await?
            .with_setting("insert_deduplication_token", token)
            .with_timeouts(
                Some(self.config.request_timeout),
                Some(self.config.request_timeout),
            );
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }

    /// Inserts `rows` into `table`, retrying with backoff until ClickHouse acknowledges them or
    /// the sink shuts down. Every attempt carries the same deduplication token, so an attempt
    /// that succeeded but whose answer was lost is not inserted twice.
    pub async fn insert<T>(
        &self,
        table: &'static str,
        rows: &[T],
        token: &str,
    ) -> Result<(), SinkError>
    where
        T: Row + RowOwned + RowWrite,
    {
        self.retrying(table, rows.len(), || self.insert_once(table, rows, token))
            .await
    }

    /// Inserts JSONEachRow `lines` into `table`, like [`ClickHouseSink::insert`]: for tables
    /// whose columns are known only at run time (views).
    pub async fn insert_json_lines(
        &self,
        table: &str,
        lines: &[String],
        token: &str,
    ) -> Result<(), SinkError> {
        let body = bytes::Bytes::from(lines.join("\n"));
        let sql = format!(
            "INSERT INTO `{}`.`{table}` FORMAT JSONEachRow",
            self.config.database
        );
        self.retrying(table, lines.len(), || async {
            let mut insert = self
                .client
                .insert_formatted_with(sql.clone())
                .with_setting("insert_deduplication_token", token)
                .with_timeouts(
                    Some(self.config.request_timeout),
                    Some(self.config.request_timeout),
                );
            insert.send(body.clone()).await?;
            insert.end().await
        })
        .await
    }

    /// Runs `attempt` until it succeeds or the sink shuts down, backing off between failures.
    async fn retrying<F, Fut>(
        &self,
        table: &str,
        rows: usize,
        mut attempt_once: F,
    ) -> Result<(), SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<()>>,
    {
        if rows == 0 {
            return Ok(());
        }
        // The error counter of every table written exists from its first insert: "no errors"
        // is a series at 0 that alerts and dashboards can see, not a missing one.
        let label = table.to_string();
        let errors =
            metrics::counter!("hogstream_sink_insert_errors_total", "table" => label.clone());
        errors.increment(0);
        let span = tracing::debug_span!("sink.insert", table, rows);
        async {
            let mut backoff = self.config.min_backoff;
            let mut shutdown = self.shutdown.clone();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let started = std::time::Instant::now();
                match attempt_once().await {
                    Ok(()) => {
                        metrics::gauge!(CLICKHOUSE_UP).set(1.0);
                        metrics::histogram!("hogstream_sink_insert_seconds", "table" => label.clone())
                            .record(started.elapsed().as_secs_f64());
                        metrics::histogram!("hogstream_sink_batch_rows", "table" => label.clone())
                            .record(rows as f64);
                        metrics::counter!("hogstream_sink_rows_total", "table" => label.clone())
                            .increment(rows as u64);
                        return Ok(());
                    }
                    Err(e) => {
                        metrics::gauge!(CLICKHOUSE_UP).set(0.0);
                        errors.increment(1);
                        tracing::warn!(table, attempt, rows, error = %e, retry_in = ?backoff, "insert failed");
                        let gave_up = |source| SinkError::GaveUp {
                            table: table.to_string(),
                            attempts: attempt,
                            source,
                        };
                        if *shutdown.borrow() {
                            return Err(gave_up(e));
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => return Err(gave_up(e)),
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}
