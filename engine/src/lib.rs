//! The hogstream engine: a timely dataflow that reads captured events from Kafka, processes them
//! as PostHog's pipeline does, and writes PostHog's ClickHouse tables with no loss and no
//! duplicates. All timely-specific code lives in this crate.

pub mod config;
pub mod dataflow;
pub mod destinations;
pub mod error;
mod json;
pub mod lag;
pub mod normalize;
pub mod plugins;
pub mod process;
pub mod record;
pub mod recovery;
pub mod shards;
pub mod source;
pub mod teams;
pub mod telemetry;
pub mod views;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use hogstream_sinks::{ClickHouseSink, DeadLetterProducer, Outputs, ProcessedProducer};

pub use config::{CheckpointConfig, ClusterConfig, EngineConfig, EngineSettings, KafkaConfig};
pub use error::EngineError;

/// The input partitions this process's workers read (`source::assigned_partitions`).
fn own_partitions(settings: &EngineSettings) -> Result<Vec<(String, i32)>, EngineError> {
    let workers = settings_workers(settings);
    let peers = workers * settings.cluster.processes.max(1);
    let first = settings.cluster.process * workers;
    let consumer = source::consumer(&settings.kafka)?;
    let mut out = Vec::new();
    for worker in first..first + workers {
        out.extend(source::assigned_partitions(
            &consumer,
            &settings.kafka.input_topics,
            worker,
            peers,
        )?);
    }
    Ok(out)
}

/// Worker threads of this process.
fn settings_workers(settings: &EngineSettings) -> usize {
    settings.engine.workers.max(1)
}

fn timely_config(settings: &EngineSettings) -> timely::Config {
    let threads = settings_workers(settings);
    let communication = if settings.cluster.processes > 1 {
        timely::CommunicationConfig::Cluster {
            threads,
            process: settings.cluster.process,
            addresses: settings.cluster.addresses.clone(),
            report: false,
            zerocopy: false,
        }
    } else if threads > 1 {
        timely::CommunicationConfig::Process(threads)
    } else {
        timely::CommunicationConfig::Thread
    };
    timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    }
}

/// Runs the engine until `shutdown` is set, then drains within the configured bound;
/// `plugins` resolves the `[[plugins]]` entries of `settings`
/// (the built-ins plus whatever the binary registered).
pub fn run(
    settings: EngineSettings,
    plugins: &hogstream_plugin::Registry,
    views: &views::ViewRegistry,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    if settings.cluster.processes > 1
        && settings.cluster.addresses.len() < settings.cluster.processes
    {
        return Err(EngineError::Config(format!(
            "a cluster of {} processes needs {} addresses, got {}",
            settings.cluster.processes,
            settings.cluster.processes,
            settings.cluster.addresses.len()
        )));
    }
    let teams = teams::Teams::new(settings.teams.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("hogstream-sink")
        .build()?;
    let (stop_sink, sink_stopped) = tokio::sync::watch::channel(false);

    let created = runtime.block_on(source::ensure_topics(&settings.kafka))?;
    if !created.is_empty() {
        tracing::info!(?created, "created missing topics");
    }
    let sink = runtime.block_on(ClickHouseSink::connect(
        settings.clickhouse.clone(),
        sink_stopped,
    ))?;
    let dlq = DeadLetterProducer::new(
        source::client_config(&settings.kafka),
        &settings.kafka.dlq_topic,
    )?;
    std::fs::create_dir_all(&settings.engine.data_dir)?;
    let objects = match &settings.checkpoints {
        Some(c) => Some(
            hogstream_objects::Objects::connect(&c.store)
                .map_err(|e| EngineError::Config(format!("[checkpoints] store: {e}")))?,
        ),
        None => None,
    };
    let recovery::Opened { store, restored } =
        recovery::open_store(&settings, objects.as_ref(), runtime.handle())?;

    let team_ids: Vec<i64> = settings.teams.iter().map(|t| t.id).collect();
    let active_views = views
        .resolve(&settings.views, &team_ids)
        .map_err(EngineError::Config)?;
    for v in &active_views {
        runtime.block_on(hogstream_sinks::schema::check_view_table(
            sink.client(),
            &settings.clickhouse.database,
            &v.table(),
            &v.view.table().columns(),
        ))?;
    }
    // Before anything of this run is written: every row version of this run is above it.
    let started_version = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or_default();
    let views = match views::input::ViewInputs::new(&active_views, store.clone()) {
        None => None,
        Some(inputs) => {
            let started = std::time::Instant::now();
            let loaded_day = views::input::today();
            let loaded = inputs.load(loaded_day)?;
            tracing::info!(updates = loaded.len(), took = ?started.elapsed(), views = active_views.len(), "view input read from the store");
            Some(dataflow::ViewsContext {
                active: active_views,
                inputs,
                loaded: std::sync::Mutex::new(Some(loaded)),
                started_version,
                loaded_day,
            })
        }
    };
    let plugins = plugins.build(&settings.plugins, &team_ids, &|id| {
        Arc::new(plugins::RocksStorage::new(store.clone(), id))
    })?;
    let destination_teams: std::collections::HashSet<i64> = plugins
        .destinations
        .iter()
        .flat_map(|d| d.teams.iter().copied())
        .collect();
    let processed = if destination_teams.is_empty() {
        None
    } else {
        Some(ProcessedProducer::new(
            source::client_config(&settings.kafka),
            &settings.kafka.processed_topic,
            destination_teams,
        )?)
    };
    let place = (settings.cluster.process, settings.cluster.processes.max(1));
    let mut plugin_threads = plugins::start_destinations(
        plugins.destinations,
        &store,
        &settings.kafka,
        place,
        &shutdown,
    )?;
    // Tasks run once for the whole cluster: on its first process.
    let tasks = if settings.cluster.process == 0 {
        plugins.tasks
    } else {
        Vec::new()
    };
    plugin_threads.extend(plugins::start_scheduler(tasks, &shutdown)?);

    let state_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.engine.state_threads.max(1))
        .thread_name(|i| format!("hs-state-{i}"))
        .build()?;
    let config = timely_config(&settings);
    let shutdown_timeout = settings.engine.shutdown_timeout;
    if settings.cluster.processes > 1 {
        recovery::lost_peer::exit_when_a_peer_is_lost(
            settings.cluster.addresses.clone(),
            Arc::clone(&shutdown),
        );
    }
    let lag = lag::start(
        &settings.kafka,
        store.clone(),
        own_partitions(&settings)?,
        Arc::clone(&shutdown),
    )?;
    let checkpointer = match (objects, &settings.checkpoints) {
        (Some(objects), Some(config)) => Some(recovery::Checkpointer::start(
            &settings,
            config.clone(),
            objects,
            store.clone(),
            runtime.handle().clone(),
            restored.as_ref(),
        )?),
        _ => None,
    };
    let shared = Arc::new(dataflow::WorkerContext {
        rules: Arc::new(normalize::Rules {
            drop_events: settings.engine.drop_events.clone(),
            transforms: normalize::TeamTransforms(plugins.transforms),
        }),
        settings,
        teams: Arc::new(teams),
        store,
        state_pool: Arc::new(state_pool),
        runtime: runtime.handle().clone(),
        outputs: Outputs {
            clickhouse: sink,
            dlq,
            processed,
        },
        shutdown: Arc::clone(&shutdown),
        views,
        halted: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    });
    // Each worker reports its end as soon as its loop returns: timely then keeps stepping the
    // worker's dataflows until they complete, which after a failure may be never (a peer that
    // failed before building a dataflow can no longer take part in it).
    let (ended, reports) = std::sync::mpsc::channel::<(usize, Result<(), EngineError>)>();
    let local_workers = settings_workers(&shared.settings);
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dataflow::run_worker(worker, &shared)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(EngineError::Worker {
                worker: index,
                message,
            })
        });
        if result.is_err() {
            // One failed worker stops the others, so the process exits instead of hanging.
            shared.failed.store(true, Ordering::Relaxed);
            shared.shutdown.store(true, Ordering::Relaxed);
        }
        let _ = ended.send((index, result));
    })
    .map_err(EngineError::Timely)?;

    let mut first_error = None;
    let mut finished = 0;
    let mut give_up: Option<std::time::Instant> = None;
    while finished < local_workers {
        let wait = give_up.map_or(std::time::Duration::from_secs(1), |at| {
            at.saturating_duration_since(std::time::Instant::now())
        });
        match reports.recv_timeout(wait) {
            Ok((worker, result)) => {
                finished += 1;
                if let Err(err) = result {
                    tracing::error!(worker, error = %err, "worker failed");
                    first_error.get_or_insert(err);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if give_up.is_some() => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if give_up.is_none() && (first_error.is_some() || shutdown.load(Ordering::Relaxed)) {
            give_up = Some(std::time::Instant::now() + shutdown_timeout * 2);
        }
    }
    if first_error.is_none() && finished == local_workers {
        drop(guards);
    } else {
        // A failed or stuck cluster: the workers' threads are left to the process's exit.
        first_error.get_or_insert(EngineError::Stopped(format!(
            "with {} of {local_workers} workers finished",
            finished
        )));
        std::mem::forget(guards);
    }
    // Destinations and tasks stop on the same flag; they flush and record their place.
    shutdown.store(true, Ordering::Relaxed);
    for thread in plugin_threads {
        let _ = thread.join();
    }
    let _ = lag.join();
    if let Some(checkpointer) = checkpointer {
        // A drained engine's last checkpoint resumes exactly where it stopped (a move to
        // another host replays nothing).
        checkpointer.stop(first_error.is_none(), shutdown_timeout);
    }
    let _ = stop_sink.send(true);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    first_error.map_or(Ok(()), Err)
}
