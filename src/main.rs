//! The `hogstream` binary: CLI wiring, handing each service subcommand over to a library crate,
//! and the operator tools (`replay`, `dlq`) in their own modules.

mod config;
mod connections;
mod dlq;
mod engine_http;
mod kafka_tools;
mod plugins;
mod replay;
mod state_tool;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use hogstream_engine::{ClusterConfig, EngineSettings};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "hogstream",
    version,
    about = "A PostHog-compatible events pipeline: capture → Kafka → timely dataflow → ClickHouse"
)]
struct Cli {
    /// Configuration file (TOML). Without it every setting has its default.
    #[arg(long, short, global = true, env = "HOGSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HOGSTREAM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone, Default)]
struct ClusterArgs {
    /// Number of engine processes in the timely cluster.
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,
    /// Index of this process in the cluster (0-based).
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,
    /// File with one `host:port` per line, one line per process. Without it, processes use
    /// 127.0.0.1:2101 and up.
    #[arg(long)]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn to_config(&self) -> Result<ClusterConfig> {
        if self.process >= self.processes.max(1) {
            bail!(
                "--process {} is outside a cluster of {} processes",
                self.process,
                self.processes
            );
        }
        let addresses = match &self.hostfile {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read hostfile {}", f.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(self.processes)
                .map(str::to_owned)
                .collect(),
            None => (0..self.processes)
                .map(|i| format!("127.0.0.1:{}", 2101 + i))
                .collect(),
        };
        Ok(ClusterConfig {
            processes: self.processes,
            process: self.process,
            addresses,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Capture and engine in one process: the whole pipeline.
    Run {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Only the HTTP capture service.
    Capture,
    /// Only the engine (Kafka → ClickHouse), optionally as one process of a timely cluster.
    Engine {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Create or migrate the ClickHouse schema and the Kafka topics.
    Migrate,
    /// Re-process a topic range: re-produce it into the engine's main input topic (idempotent).
    ///
    /// Re-reads a range of a topic and re-produces the selected messages (value, key, headers
    /// unchanged) into the engine's main input topic, so the pipeline processes them again.
    /// Idempotent: the pipeline deduplicates events by uuid (ReplacingMergeTree + FINAL).
    Replay(replay::ReplayArgs),
    /// Dead letters in `[kafka] dlq_topic`: list, show, and redrive them once.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Engine state tools: move person state for a new cluster size.
    State {
        #[command(subcommand)]
        command: state_tool::StateCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print it as the engine sees it.
    Check,
}

/// `90s` → `1m 30s`, as the configuration file writes durations.
fn humantime_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

fn init_logging(format: LogFormat) {
    // object_store logs each retry at info; its failures reach the log through hogstream's own
    // messages, once.
    let filter = EnvFilter::try_from_env("HOGSTREAM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,object_store=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn engine_settings(config: &Config, cluster: &ClusterArgs) -> Result<EngineSettings> {
    Ok(EngineSettings {
        engine: config.engine.clone(),
        kafka: config.kafka.clone(),
        clickhouse: config.clickhouse.clone(),
        teams: config.teams.clone(),
        plugins: config.plugins.clone(),
        views: config.views.clone(),
        cluster: cluster.to_config()?,
        checkpoints: config.checkpoints.clone(),
    })
}

/// SIGTERM and SIGINT, listened for before a long-running command starts anything: one that
/// arrives while the engine or capture is still starting stops it gracefully too, instead of
/// killing it. (Short commands keep the default: Ctrl-C stops them at once.)
struct Signals {
    term: Signal,
    interrupt: Signal,
}

impl Signals {
    fn listen() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Resolves when SIGTERM or SIGINT has arrived, and raises `flag` for the engine's threads.
    async fn shutdown(mut self, flag: Arc<AtomicBool>) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        flag.store(true, Ordering::Relaxed);
    }
}

/// Runs the engine on its own threads; returns when it has drained.
fn spawn_engine(
    settings: EngineSettings,
    flag: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || {
        hogstream_engine::run(settings, &plugins::registry(), &plugins::views(), flag).map_err(
            |e| match e {
                // A refusal is already one line that says which process, why and what to do.
                hogstream_engine::EngineError::Refused(_) => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context("engine"),
            },
        )
    })
}

async fn migrate(config: &Config) -> Result<()> {
    let client = config.clickhouse.client();
    let applied = hogstream_sinks::schema::migrate(&client, &config.clickhouse.database)
        .await
        .with_context(|| format!("migrating ClickHouse at {}", config.clickhouse.url))?;
    let team_ids: Vec<i64> = config.teams.iter().map(|t| t.id).collect();
    let views = plugins::views()
        .resolve(&config.views, &team_ids)
        .map_err(|e| anyhow::anyhow!(e))?;
    for v in &views {
        let table = v.table();
        hogstream_sinks::schema::create_view_table(
            &client,
            &config.clickhouse.database,
            &v.create_statement(),
        )
        .await
        .with_context(|| format!("creating view table {table}"))?;
        hogstream_sinks::schema::check_view_table(
            &client,
            &config.clickhouse.database,
            &table,
            &v.view.table().columns(),
        )
        .await?;
        println!("clickhouse: view table `{table}` is ready");
    }
    if applied.is_empty() {
        println!(
            "clickhouse: database `{}` is up to date",
            config.clickhouse.database
        );
    } else {
        println!(
            "clickhouse: applied migrations {applied:?} to database `{}`",
            config.clickhouse.database
        );
    }
    let created = hogstream_engine::source::ensure_topics(&config.kafka)
        .await
        .with_context(|| format!("creating topics on {}", config.kafka.brokers))?;
    println!(
        "kafka: {}",
        if created.is_empty() {
            "all topics exist".to_owned()
        } else {
            format!("created {}", created.join(", "))
        }
    );
    Ok(())
}

/// What a command does when a server it needs does not answer at start-up (misconfigured
/// connections stop every command).
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfAbsent {
    /// Start anyway: the command waits for the server by itself.
    Wait,
    /// Stop: the command cannot do its work without it.
    Stop,
}

/// Checks the Kafka connection of `hop` before it starts.
fn check_kafka(hop: &str, kafka: &hogstream_engine::KafkaConfig, absent: IfAbsent) -> Result<()> {
    match connections::kafka(hop, kafka)? {
        connections::Reach::Ready => Ok(()),
        connections::Reach::Unreachable(detail) if absent == IfAbsent::Wait => {
            tracing::warn!(
                hop,
                brokers = kafka.brokers,
                detail,
                "kafka does not answer yet"
            );
            Ok(())
        }
        connections::Reach::Unreachable(detail) => anyhow::bail!(
            "kafka ({hop}, {}): no broker answered: {detail}",
            kafka.brokers
        ),
    }
}

/// Checks the ClickHouse connection of `hop` before it starts.
async fn check_clickhouse(hop: &str, config: &Config, absent: IfAbsent) -> Result<()> {
    match connections::clickhouse(hop, &config.clickhouse).await? {
        connections::Reach::Ready => Ok(()),
        connections::Reach::Unreachable(detail) if absent == IfAbsent::Wait => {
            tracing::warn!(
                hop,
                url = config.clickhouse.url,
                detail,
                "clickhouse does not answer yet"
            );
            Ok(())
        }
        connections::Reach::Unreachable(detail) => anyhow::bail!(
            "clickhouse ({hop}, {}): no answer: {detail}",
            config.clickhouse.url
        ),
    }
}

/// The Kafka settings capture's producer uses, for its check.
fn capture_kafka(config: &Config) -> hogstream_engine::KafkaConfig {
    let mut kafka = config.kafka.clone();
    kafka.brokers = config.capture.kafka.bootstrap_servers.clone();
    kafka.extra = config.capture.kafka.extra.clone();
    kafka
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = Config::load(cli.config.as_deref())?;
    let flag = Arc::new(AtomicBool::new(false));

    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            println!("{config:#?}");
            println!(
                "kafka: {} at {}",
                config.kafka.security, config.kafka.brokers
            );
            println!("{}", config.clickhouse.describe());
            match &config.checkpoints {
                Some(c) => println!(
                    "checkpoints: every {} to {}, keep {}, restore {}",
                    humantime_duration(c.interval),
                    c.store,
                    c.keep,
                    if c.restore { "on" } else { "off" }
                ),
                None => println!(
                    "checkpoints: none ([checkpoints] is not configured: a lost data_dir cannot be restored)"
                ),
            }
            println!("configuration is valid");
        }
        Command::Migrate => {
            check_kafka("migrate", &config.kafka, IfAbsent::Stop)?;
            check_clickhouse("migrate", &config, IfAbsent::Stop).await?;
            migrate(&config).await?
        }
        Command::Replay(args) => {
            check_kafka("replay", &config.kafka, IfAbsent::Stop)?;
            replay::run(&config, args).await?
        }
        Command::Dlq { command } => {
            check_kafka("dlq", &config.kafka, IfAbsent::Stop)?;
            check_clickhouse("dlq", &config, IfAbsent::Stop).await?;
            dlq::run(&config, command).await?
        }
        Command::State { command } => state_tool::run(&config, command).await?,
        Command::Capture => {
            check_kafka("capture", &capture_kafka(&config), IfAbsent::Wait)?;
            let signals = Signals::listen()?;
            hogstream_capture::serve(config.capture.clone(), signals.shutdown(Arc::clone(&flag)))
                .await
                .context("capture")?;
        }
        Command::Engine { cluster } => {
            check_kafka("engine", &config.kafka, IfAbsent::Stop)?;
            check_clickhouse("engine", &config, IfAbsent::Wait).await?;
            let signals = Signals::listen()?;
            let settings = engine_settings(&config, &cluster)?;
            // Processes of one cluster may share a host: each takes the next port.
            let mut address = config.engine.metrics_address;
            if address.port() != 0 {
                address.set_port(address.port() + settings.cluster.process as u16);
            }
            engine_http::serve(address, &config.kafka, &config.clickhouse).await?;
            let engine = spawn_engine(settings, Arc::clone(&flag));
            tokio::spawn(signals.shutdown(Arc::clone(&flag)));
            engine.await.context("engine thread")??;
        }
        Command::Run { cluster } => {
            check_kafka("capture", &capture_kafka(&config), IfAbsent::Wait)?;
            check_kafka("engine", &config.kafka, IfAbsent::Stop)?;
            check_clickhouse("engine", &config, IfAbsent::Wait).await?;
            let signals = Signals::listen()?;
            engine_http::watch_readiness(&config.kafka, &config.clickhouse)?;
            let settings = engine_settings(&config, &cluster)?;
            let engine = spawn_engine(settings, Arc::clone(&flag));
            let signal = signals.shutdown(Arc::clone(&flag));
            let (engine_down, engine_stopped) = tokio::sync::oneshot::channel::<()>();
            // Capture serves until a signal, or until the engine stops: accepting events that
            // nothing processes would hide the engine's failure behind 200s.
            let capture = tokio::spawn(hogstream_capture::serve(
                config.capture.clone(),
                async move {
                    tokio::select! {
                        _ = signal => {}
                        _ = engine_stopped => tracing::error!("the engine stopped; stopping capture"),
                    }
                },
            ));
            // And the other way round: capture that stopped on its own (a fatal producer error)
            // stops the engine too, so the process exits and its supervisor restarts both.
            let capture = {
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let result = capture.await;
                    if !flag.swap(true, Ordering::Relaxed) {
                        tracing::error!("capture stopped; stopping the engine");
                    }
                    result
                })
            };
            let engine_result = engine.await.context("engine thread").and_then(|r| r);
            flag.store(true, Ordering::Relaxed);
            let _ = engine_down.send(());
            let captured = capture
                .await
                .context("capture task")?
                .context("capture task")?
                .context("capture");
            engine_result?;
            captured?;
        }
    }
    Ok(())
}
