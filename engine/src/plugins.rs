//! Plugins at run time: each entry's storage in the process's RocksDB, the destination threads
//! and the scheduler of tasks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use hogstream_plugin::{DestinationPlugin, PluginError, Storage, TaskPlugin, TaskRun, run_if_due};
use hogstream_state::StateStore;
use serde_json::Value;

use crate::{config::KafkaConfig, destinations::Runner, error::EngineError};

/// A plugin entry's storage: its own keys in the process's store.
pub struct RocksStorage {
    store: StateStore,
    id: String,
}

impl RocksStorage {
    pub fn new(store: StateStore, id: &str) -> Self {
        Self {
            store,
            id: id.to_owned(),
        }
    }
}

fn storage_error(e: impl std::fmt::Display) -> PluginError {
    PluginError::Storage(e.to_string())
}

impl Storage for RocksStorage {
    fn get(&self, key: &str) -> Result<Option<Value>, PluginError> {
        match self
            .store
            .plugin_get(&self.id, key)
            .map_err(storage_error)?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(storage_error),
            None => Ok(None),
        }
    }
    fn set(&self, key: &str, value: &Value) -> Result<(), PluginError> {
        let bytes = serde_json::to_vec(value).map_err(storage_error)?;
        self.store
            .plugin_put(&self.id, key, Some(&bytes))
            .map_err(storage_error)
    }
    fn delete(&self, key: &str) -> Result<(), PluginError> {
        self.store
            .plugin_put(&self.id, key, None)
            .map_err(storage_error)
    }
}

/// Starts one thread per destination. A destination whose thread fails stops alone: ingestion
/// goes on, and it resumes from its stored place at the next start.
pub fn start_destinations(
    destinations: Vec<DestinationPlugin>,
    store: &StateStore,
    kafka: &KafkaConfig,
    place: (usize, usize),
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, EngineError> {
    let mut threads = Vec::new();
    for plugin in destinations {
        let id = plugin.id.clone();
        let runner = Runner::new(plugin, store.clone(), kafka, place, Arc::clone(stop))?;
        let thread = std::thread::Builder::new()
            .name(format!("dest-{id}"))
            .spawn(move || {
                if let Err(e) = runner.run() {
                    metrics::counter!("hogstream_destination_stopped_total", "destination" => id.clone()).increment(1);
                    tracing::error!(destination = id, error = %e, "destination stopped; ingestion goes on");
                }
            })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// Runs scheduled tasks, each once per period, until `stop`, then tears them down.
pub fn start_scheduler(
    mut tasks: Vec<TaskPlugin>,
    stop: &Arc<AtomicBool>,
) -> Result<Option<JoinHandle<()>>, EngineError> {
    if tasks.is_empty() {
        return Ok(None);
    }
    let stop = Arc::clone(stop);
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for t in &mut tasks {
                    let id = &t.context.id;
                    match run_if_due(t.task.as_mut(), &t.context, SystemTime::now()) {
                        TaskRun::NotDue => {}
                        TaskRun::Ran => {
                            metrics::counter!("hogstream_task_runs_total", "task" => id.clone())
                                .increment(1);
                            tracing::info!(task = id, "scheduled task ran");
                        }
                        TaskRun::Failed(e) => {
                            metrics::counter!("hogstream_task_failures_total", "task" => id.clone()).increment(1);
                            tracing::warn!(task = id, error = e, "scheduled task failed");
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            for t in &mut tasks {
                t.task.teardown();
            }
        })?;
    Ok(Some(thread))
}
