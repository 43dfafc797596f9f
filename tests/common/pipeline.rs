//! A whole pipeline for one test: its own topics, ClickHouse database, data directory and
//! capture port, running the real `hogstream` binary as separate capture and engine processes so
//! a test can SIGKILL the engine.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use clickhouse::Client;
use serde_json::{Value, json};

use super::{free_port, free_port_outside, free_ports, require_clickhouse, require_kafka, unique};

pub const TOKEN: &str = "phc_test_token";

/// Where a pipeline's broker and ClickHouse are, and how it reaches them.
pub struct Endpoints {
    /// What the pipeline's configuration names.
    pub brokers: String,
    /// What the test itself uses to read and delete topics (the same broker, plaintext).
    pub admin_brokers: String,
    pub clickhouse: String,
    /// Lines for the `[clickhouse]` section (user, password_file, ca_file).
    pub clickhouse_settings: String,
}

impl Endpoints {
    /// `brokers` and the shared ClickHouse, without security.
    pub fn plain(brokers: String) -> Self {
        Endpoints {
            admin_brokers: brokers.clone(),
            brokers,
            clickhouse: super::clickhouse_url(),
            clickhouse_settings: String::new(),
        }
    }
}
pub const TEAM_ID: i64 = 42;

pub struct Pipeline {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub database: String,
    pub topic: String,
    pub dlq_topic: String,
    pub capture_url: String,
    /// Where `hogstream engine` serves `/metrics`.
    pub metrics_url: String,
    /// Cluster process `p` serves metrics on the range's start + `p`.
    metrics_ports: std::ops::Range<u16>,
    pub brokers: String,
    capture: Mutex<Option<Child>>,
    engine: Mutex<Option<Child>>,
    cluster: Mutex<Vec<Child>>,
}

/// The largest engine cluster a test starts.
const MAX_PROCESSES: u16 = 4;

impl Pipeline {
    /// Writes a config for fresh topics and a fresh database, and migrates them.
    pub fn new(workers: usize, partitions: i32) -> Self {
        Self::with_teams(workers, partitions, &[])
    }

    /// Like [`Pipeline::new`], with `(id, token)` teams configured besides [`TEAM_ID`].
    pub fn with_teams(workers: usize, partitions: i32, extra_teams: &[(i64, &str)]) -> Self {
        Self::build(workers, partitions, extra_teams, "")
    }

    /// Like [`Pipeline::new`], with `extra` TOML appended to the configuration.
    pub fn with_config(workers: usize, partitions: i32, extra: &str) -> Self {
        Self::build(workers, partitions, &[], extra)
    }

    /// Like [`Pipeline::new`], on the broker at `brokers` instead of the shared one.
    pub fn on_broker(brokers: &str, workers: usize, partitions: i32) -> Self {
        Self::build_on(
            Endpoints::plain(brokers.to_owned()),
            workers,
            partitions,
            &[],
            "",
        )
    }

    /// Like [`Pipeline::new`], through the given endpoints: `clickhouse` is appended to the
    /// `[clickhouse]` section, `extra` to the file.
    pub fn through(endpoints: Endpoints, workers: usize, partitions: i32, extra: &str) -> Self {
        Self::build_on(endpoints, workers, partitions, &[], extra)
    }

    /// Like [`Pipeline::with_teams`], with `extra` TOML appended to the configuration.
    pub fn with_teams_and_config(
        workers: usize,
        partitions: i32,
        extra_teams: &[(i64, &str)],
        extra: &str,
    ) -> Self {
        Self::build(workers, partitions, extra_teams, extra)
    }

    /// Rewrites the configuration file (for the next process started).
    pub fn rewrite_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
    }

    fn build(workers: usize, partitions: i32, extra_teams: &[(i64, &str)], extra: &str) -> Self {
        Self::build_on(
            Endpoints::plain(require_kafka()),
            workers,
            partitions,
            extra_teams,
            extra,
        )
    }

    fn build_on(
        endpoints: Endpoints,
        workers: usize,
        partitions: i32,
        extra_teams: &[(i64, &str)],
        extra: &str,
    ) -> Self {
        let _ = require_clickhouse();
        let Endpoints {
            brokers,
            admin_brokers,
            clickhouse: ch,
            clickhouse_settings,
        } = endpoints;
        let name = unique("e2e");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let topic = format!("{name}_events");
        let dlq_topic = format!("{name}_dlq");
        let port = free_port();
        // Cluster process `p` serves metrics on metrics_port + p: keep that range off every
        // other port the pipeline picks.
        let metrics_ports = free_ports(MAX_PROCESSES, std::slice::from_ref(&(port..port + 1)));
        let metrics_port = metrics_ports.start;
        let config = dir.join("hogstream.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{brokers}"
input_topics = ["{topic}", "{topic}_overflow", "{topic}_historical"]
dlq_topic = "{dlq_topic}"
processed_topic = "{topic}_processed"
default_partitions = {partitions}
group_id = "{name}"

[capture]
bind_address = "127.0.0.1:{port}"

[capture.kafka]
message_timeout_ms = 60000

[capture.topics]
main = "{topic}"
overflow = "{topic}_overflow"
historical = "{topic}_historical"
dlq = "{dlq_topic}"

[engine]
workers = {workers}
data_dir = "{data}"
epoch = "50ms"
shutdown_timeout = "20s"
metrics_address = "127.0.0.1:{metrics_port}"

[clickhouse]
url = "{ch}"
database = "{name}"
flush_interval = "200ms"
{clickhouse_settings}

[[teams]]
id = {TEAM_ID}
token = "{TOKEN}"
{more_teams}
{extra}"#,
                data = dir.join("engine").display(),
                more_teams = extra_teams
                    .iter()
                    .map(|(id, token)| format!("\n[[teams]]\nid = {id}\ntoken = \"{token}\"\n"))
                    .collect::<String>(),
            ),
        )
        .unwrap();
        let p = Pipeline {
            dir,
            config,
            database: name,
            topic,
            dlq_topic,
            capture_url: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            metrics_ports,
            brokers: admin_brokers,
            capture: Mutex::new(None),
            engine: Mutex::new(None),
            cluster: Mutex::new(Vec::new()),
        };
        let status = p
            .command(&["migrate"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "hogstream migrate failed");
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hogstream"));
        c.arg("--config").arg(&self.config).args(args).env(
            "HOGSTREAM_LOG",
            "warn,hogstream_engine=info,hogstream_capture::producer=debug",
        );
        // Tests choose their own endpoints; the environment of the shell must not override them.
        for v in [
            "HOGSTREAM_KAFKA_BROKERS",
            "HOGSTREAM_CLICKHOUSE_URL",
            "HOGSTREAM_DATA_DIR",
            "HOGSTREAM_CAPTURE_ADDRESS",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// Runs `hogstream <args>` with this pipeline's configuration to completion and returns its
    /// exit status and output (stderr holds errors without backtraces).
    pub fn hogstream(&self, args: &[&str]) -> std::process::Output {
        self.command(args)
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn spawn(&self, args: &[&str], log: &str) -> Child {
        self.spawn_with(args, log, &[])
    }

    fn spawn_with(&self, args: &[&str], log: &str, env: &[(&str, &PathBuf)]) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .unwrap();
        let mut command = self.command(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    pub fn start_capture(&self) {
        *self.capture.lock().unwrap() = Some(self.spawn(&["capture"], "capture.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::blocking::get(format!("{}/_readiness", self.capture_url))
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "capture did not become ready; see {}",
            self.dir.join("capture.log").display()
        );
    }

    /// SIGTERM to capture and wait until it has flushed and exited.
    pub fn stop_capture(&self) {
        let mut child = self
            .capture
            .lock()
            .unwrap()
            .take()
            .expect("capture running");
        signal_term(&child);
        assert!(
            child.wait().unwrap().success(),
            "capture exits cleanly on SIGTERM"
        );
    }

    pub fn start_engine(&self) {
        let mut engine = self.engine.lock().unwrap();
        assert!(engine.is_none(), "engine already running");
        *engine = Some(self.spawn(&["engine"], "engine.log"));
    }

    /// Starts the engine: one process, or a cluster of `processes` (see
    /// [`Pipeline::start_engine_cluster`]).
    pub fn start_engines(&self, processes: usize) {
        if processes == 1 {
            self.start_engine();
        } else {
            self.start_engine_cluster(processes);
        }
    }

    /// Starts the engine as a timely cluster of `processes` processes, one worker each as
    /// configured, connected through a hostfile of free local ports.
    pub fn start_engine_cluster(&self, processes: usize) {
        self.start_engine_cluster_on(&vec![None; processes]);
    }

    /// Starts a cluster of `data_dirs.len()` processes; process `i` keeps its store under
    /// `data_dirs[i]` when given (another host's disk), else under the configured data_dir.
    pub fn start_engine_cluster_on(&self, data_dirs: &[Option<PathBuf>]) {
        let processes = data_dirs.len();
        assert!(
            processes <= usize::from(MAX_PROCESSES),
            "at most {MAX_PROCESSES} processes"
        );
        let hostfile = self.dir.join("hostfile");
        let mut taken = vec![self.metrics_ports.clone()];
        let hosts: Vec<String> = (0..processes)
            .map(|_| {
                let port = free_port_outside(&taken);
                taken.push(port..port + 1);
                format!("127.0.0.1:{port}")
            })
            .collect();
        std::fs::write(&hostfile, hosts.join("\n")).unwrap();
        let mut cluster = self.cluster.lock().unwrap();
        assert!(cluster.is_empty(), "a cluster is already running");
        for (i, data_dir) in data_dirs.iter().enumerate() {
            let (n, p, h) = (
                processes.to_string(),
                i.to_string(),
                hostfile.display().to_string(),
            );
            let args = ["engine", "-n", &n, "-p", &p, "--hostfile", &h];
            let log = format!("engine-{i}.log");
            cluster.push(match data_dir {
                Some(dir) => self.spawn_with(&args, &log, &[("HOGSTREAM_DATA_DIR", dir)]),
                None => self.spawn(&args, &log),
            });
        }
    }

    /// SIGKILL to process `i` of the running cluster.
    pub fn kill_cluster_process(&self, i: usize) {
        let mut cluster = self.cluster.lock().unwrap();
        let child = &mut cluster[i];
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits up to `timeout` for process `i` of the cluster to exit; its status, if it did.
    pub fn wait_cluster_process(
        &self,
        i: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.cluster.lock().unwrap()[i].try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to every process of the cluster, and waits for each; returns whether all
    /// exited cleanly.
    pub fn stop_engine_cluster(&self) -> bool {
        let mut cluster = self.cluster.lock().unwrap();
        for child in cluster.iter() {
            signal_term(child);
        }
        // Every process is waited for, whatever the others did.
        let clean: Vec<bool> = cluster
            .drain(..)
            .map(|mut c| c.wait().unwrap().success())
            .collect();
        clean.into_iter().all(|ok| ok)
    }

    /// Forgets a cluster whose processes all exited (SIGKILL or on their own).
    pub fn clear_cluster(&self) {
        let mut cluster = self.cluster.lock().unwrap();
        for child in cluster.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        cluster.clear();
    }

    /// Runs the single-process engine to its exit (an engine that refuses to start exits at
    /// once) and returns its status and stderr; killed after `timeout` if it is still running.
    pub fn run_engine_expecting_exit(&self, timeout: Duration) -> (Option<i32>, String) {
        let log = self.dir.join("engine-refused.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = self
            .command(&["engine"])
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// Whether the single-process engine started by [`Pipeline::start_engine`] is still running.
    pub fn engine_running(&self) -> bool {
        self.engine
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// `/_readiness` of the single-process engine.
    pub fn engine_readiness_url(&self) -> String {
        format!("http://127.0.0.1:{}/_readiness", self.metrics_ports.start)
    }

    /// SIGKILL: no drain, no flush, no offset store.
    pub fn kill_engine(&self) {
        let mut child = self.engine.lock().unwrap().take().expect("engine running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the graceful exit; returns whether it exited cleanly. The signal is
    /// sent once the engine answers `/_liveness`: one that arrives before the process has even
    /// reached `main` kills it, as it would any program.
    pub fn stop_engine(&self) -> bool {
        let mut child = self.engine.lock().unwrap().take().expect("engine running");
        let liveness = format!("http://127.0.0.1:{}/_liveness", self.metrics_ports.start);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline
            && child.try_wait().unwrap().is_none()
            && !reqwest::blocking::get(&liveness).is_ok_and(|r| r.status().is_success())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_term(&child);
        child.wait().unwrap().success()
    }

    /// Every topic this pipeline's configuration names (they exist once `migrate` ran).
    pub fn topics(&self) -> Vec<String> {
        vec![
            self.topic.clone(),
            format!("{}_overflow", self.topic),
            format!("{}_historical", self.topic),
            format!("{}_processed", self.topic),
            self.dlq_topic.clone(),
        ]
    }

    /// Every engine log of this pipeline, concatenated.
    pub fn engine_log(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("engine") && n.ends_with(".log"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(self.dir.join(n)).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn clickhouse(&self) -> Client {
        Client::default()
            .with_url(super::clickhouse_url())
            .with_database(&self.database)
    }

    /// Sends events through capture's `/batch` and returns the final HTTP status. Like PostHog's
    /// SDKs, it sends the same events again after a 503; a retried batch may reach Kafka twice,
    /// which the pipeline must deduplicate.
    pub fn send_batch(&self, events: &[Value]) -> u16 {
        self.send_batch_with_token(TOKEN, events)
    }

    /// [`Pipeline::send_batch`] with another project token.
    pub fn send_batch_with_token(&self, token: &str, events: &[Value]) -> u16 {
        let body = json!({ "api_key": token, "batch": events });
        let client = reqwest::blocking::Client::new();
        let mut status = 0;
        for attempt in 0..8 {
            status = client
                .post(format!("{}/batch", self.capture_url))
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status != 503 {
                break;
            }
            eprintln!("capture answered 503 (attempt {attempt}); sending the batch again");
            std::thread::sleep(Duration::from_secs(1));
        }
        status
    }

    /// Runs `sql` and returns every row.
    pub fn rows<T: clickhouse::RowOwned + clickhouse::RowRead>(&self, sql: &str) -> Vec<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.clickhouse().query(sql).fetch_all::<T>())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Waits until the team has some event stored (before a crash that must leave something to
    /// recover); `label` names the case in the failure.
    pub fn wait_until_something_is_stored(&self, label: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let sql = format!("SELECT count() FROM events WHERE team_id = {TEAM_ID}");
        while self.query_u64(&sql).unwrap_or(0) == 0 {
            assert!(
                Instant::now() < deadline,
                "{label}: nothing stored within a minute"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter of the single-process engine's `/metrics`, summed over its series (0 when it
    /// has none); `name` may carry labels (`name{label="value"}`).
    pub fn counter(&self, name: &str) -> u64 {
        let text = reqwest::blocking::get(&self.metrics_url)
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Runs `sql` returning one UInt64.
    pub fn query_u64(&self, sql: &str) -> Result<u64, clickhouse::error::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.clickhouse().query(sql).fetch_one::<u64>())
    }

    /// Runs a statement that returns nothing (DDL, `TRUNCATE`, ...).
    pub fn execute(&self, sql: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.clickhouse().query(sql).execute())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Polls `sql` (one UInt64) until it equals `want` or the timeout passes; returns the last value.
    pub fn wait_for(&self, sql: &str, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = 0;
        while Instant::now() < deadline {
            if let Ok(v) = self.query_u64(sql) {
                last = v;
                if v == want {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        last
    }
}

pub fn signal_term(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Lock poisoning must not leave processes behind: a panicking test still cleans up.
        let take = |m: &Mutex<Option<Child>>| m.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut children: Vec<Child> = self
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        children.extend(take(&self.capture));
        children.extend(take(&self.engine));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A passing test leaves nothing behind on the shared broker and ClickHouse; a failing
        // one (or any, with HOGSTREAM_TEST_KEEP=1) keeps its topics, database and logs.
        if std::thread::panicking() || std::env::var_os("HOGSTREAM_TEST_KEEP").is_some() {
            eprintln!(
                "kept for inspection: topics {}*, database {}, logs in {}",
                self.topic,
                self.database,
                self.dir.display()
            );
            return;
        }
        let topics = self.topics();
        super::capture::delete(
            &self.brokers,
            &topics.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let drop_database = format!("DROP DATABASE IF EXISTS `{}`", self.database);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        if let Err(e) = rt.block_on(
            Client::default()
                .with_url(super::clickhouse_url())
                .query(&drop_database)
                .execute(),
        ) {
            eprintln!("{drop_database}: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn event(i: usize, uuid: uuid::Uuid) -> Value {
    json!({
        "event": "e2e",
        "distinct_id": format!("user-{}", i % 97),
        "uuid": uuid.to_string(),
        "properties": { "i": i, "$current_url": "https://example.com/e2e" },
    })
}

/// `count() * 1e6 + uniqExact(uuid)` of the team's events after deduplication, so one poll
/// checks both numbers.
pub fn counts_sql() -> String {
    format!(
        "SELECT toUInt64(count() * 1000000 + uniqExact(uuid)) FROM events FINAL WHERE team_id = {TEAM_ID}"
    )
}

pub fn assert_exactly_once(p: &Pipeline, n: usize) {
    let got = p.wait_for(
        &counts_sql(),
        n as u64 * 1_000_001,
        Duration::from_secs(180),
    );
    let (count, unique) = (got / 1_000_000, got % 1_000_000);
    assert_eq!(
        (count, unique),
        (n as u64, n as u64),
        "count() and uniqExact(uuid) in events FINAL; engine log:\n{}",
        p.engine_log()
    );
}

/// Sends `n` events in batches of 50, calling `between(round)` after every `every` batches;
/// every batch must be answered 200.
pub fn send_events(p: &Pipeline, n: usize, every: usize, mut between: impl FnMut(usize)) {
    let mut batch = Vec::new();
    let mut sent_batches = 0;
    for i in 0..n {
        batch.push(event(i, uuid::Uuid::now_v7()));
        if batch.len() == 50 || i + 1 == n {
            let status = p.send_batch(&batch);
            assert_eq!(
                status, 200,
                "capture answered {status} to batch {sent_batches}"
            );
            batch.clear();
            sent_batches += 1;
            if sent_batches % every == 0 {
                between(sent_batches / every);
            }
        }
    }
}
