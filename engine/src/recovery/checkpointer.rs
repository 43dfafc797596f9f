//! The checkpoint schedule of one engine process: a thread of its own that takes a snapshot of
//! the store every `[checkpoints] interval` and uploads it, so ingestion never waits for it. An
//! object store that is down or refuses is retried with backoff and counted; the age of the
//! newest checkpoint and its margin to Kafka's retention are published for alerts.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hogstream_objects::Objects;
use hogstream_state::{
    StateStore,
    checkpoint::{Manifest, Snapshot, Source, Uploader},
};
use tokio::runtime::Handle;

use super::floors;
use crate::{EngineError, EngineSettings, config::CheckpointConfig, source, telemetry};

/// Longest wait between two attempts while the object store fails (unless the interval is
/// longer): a store that comes back is used again within a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a checkpoint waits for the messages at its floors (for their age).
const FLOOR_TIME_PATIENCE: Duration = Duration::from_secs(5);

/// The running schedule.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// The schedule, handed back when its thread ends.
    ended: std::sync::mpsc::Receiver<Schedule>,
}

struct Schedule {
    settings: EngineSettings,
    config: CheckpointConfig,
    objects: Objects,
    store: StateStore,
    runtime: Handle,
    /// Where snapshots are made: beside the store, on its file system.
    local: PathBuf,
    uploader: Option<Uploader>,
    /// When the newest checkpoint was made, and when the oldest message at its floors was.
    newest: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The input topics' shortest retention, in seconds.
    retention: Option<f64>,
    started: DateTime<Utc>,
}

impl Checkpointer {
    /// Starts the schedule for the process's `store`. `restored` is the checkpoint the store
    /// was just restored from, if it was.
    pub fn start(
        settings: &EngineSettings,
        config: CheckpointConfig,
        objects: Objects,
        store: StateStore,
        runtime: Handle,
        restored: Option<&Manifest>,
    ) -> Result<Self, EngineError> {
        let local = settings
            .engine
            .data_dir
            .join(format!(".checkpoint-process-{}", settings.cluster.process));
        metrics::gauge!(telemetry::CHECKPOINT_INTERVAL).set(config.interval.as_secs_f64());
        metrics::counter!(telemetry::CHECKPOINTS, "outcome" => "ok").increment(0);
        metrics::counter!(telemetry::CHECKPOINTS, "outcome" => "failed").increment(0);
        let schedule = Schedule {
            settings: settings.clone(),
            config,
            objects,
            store,
            runtime,
            local,
            uploader: None,
            newest: restored.map(|m| (m.created, m.floor_time.unwrap_or(m.created))),
            retention: None,
            started: Utc::now(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (hand_back, ended) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hs-checkpoints".into())
            .spawn(move || {
                let _ = hand_back.send(schedule.run(&flag));
            })?;
        Ok(Self { stop, ended })
    }

    /// Stops the schedule; with `last` (the engine drained and stored every offset), takes a
    /// final checkpoint first. Both within `patience`: a schedule still busy then (a broker
    /// that does not answer) is left behind, and the newest checkpoint stays the restore point.
    pub fn stop(self, last: bool, patience: Duration) {
        let started = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        let Ok(mut schedule) = self.ended.recv_timeout(patience) else {
            tracing::warn!("the checkpoint schedule did not stop in time; no final checkpoint");
            return;
        };
        let patience = patience.saturating_sub(started.elapsed());
        if last {
            match schedule.checkpoint(Source::Shutdown, Some(patience), None) {
                Ok(m) => tracing::info!(checkpoint = %m.id, "final checkpoint at shutdown"),
                Err(e) => {
                    tracing::warn!(error = %e, "no final checkpoint at shutdown; the newest one stays the restore point")
                }
            }
        }
    }
}

impl Schedule {
    fn run(mut self, stop: &AtomicBool) -> Self {
        let interval = self.config.interval;
        let mut next = Instant::now() + interval;
        let mut failures = 0u32;
        while !stop.load(Ordering::Relaxed) {
            self.publish();
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_secs(1)));
                continue;
            }
            match self.checkpoint(Source::Engine, None, Some(stop)) {
                Ok(_) => {
                    failures = 0;
                    next = now + interval;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures, interval);
                    tracing::warn!(error = %e, failures, retry_in = ?wait, "checkpoint failed; ingestion goes on");
                    next = Instant::now() + wait;
                }
            }
        }
        self
    }

    /// Takes and uploads one checkpoint, within `patience` if given; an upload still running
    /// when `stop` is raised is abandoned (a large first upload must not hold up a shutdown).
    fn checkpoint(
        &mut self,
        source: Source,
        patience: Option<Duration>,
        stop: Option<&AtomicBool>,
    ) -> Result<Manifest, EngineError> {
        let started = Instant::now();
        let result = self.try_checkpoint(source, patience, stop);
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(telemetry::CHECKPOINTS, "outcome" => outcome).increment(1);
        if let Ok(m) = &result {
            metrics::histogram!(telemetry::CHECKPOINT_SECONDS)
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!(telemetry::CHECKPOINT_BYTES, "kind" => "store").set(m.size() as f64);
            metrics::gauge!(telemetry::CHECKPOINT_BYTES, "kind" => "uploaded")
                .set(m.uploaded_bytes as f64);
            tracing::info!(
                checkpoint = %m.id,
                files = m.files.len(),
                megabytes = m.size() as f64 / 1e6,
                uploaded_megabytes = m.uploaded_bytes as f64 / 1e6,
                took = ?started.elapsed(),
                "checkpoint uploaded"
            );
            self.publish();
        }
        result
    }

    fn try_checkpoint(
        &mut self,
        source: Source,
        patience: Option<Duration>,
        stop: Option<&AtomicBool>,
    ) -> Result<Manifest, EngineError> {
        let error = |e: hogstream_state::checkpoint::CheckpointError| {
            EngineError::Checkpoint(e.to_string())
        };
        let process = self.settings.cluster.process as u64;
        if self.uploader.is_none() {
            let opened = self.runtime.block_on(Uploader::open(
                &self.objects,
                process,
                self.store.lineage()?,
                self.store.restored_from()?.as_deref(),
                self.config.keep,
            ));
            let uploader = opened.map_err(error)?;
            if self.newest.is_none()
                && let Some(m) = uploader.kept().first()
            {
                self.newest = Some((m.created, m.floor_time.unwrap_or(m.created)));
            }
            self.uploader = Some(uploader);
        }
        let kafka = &self.settings.kafka;
        let consumer = source::consumer(kafka)?;
        let partitions = source::all_partitions(&consumer, &kafka.input_topics)?;
        let logs = source::watermarks(&consumer, &partitions)?;
        let floors = floors::floors(&consumer, &self.store, &partitions, &logs)?;
        let snapshot = Snapshot::take(&self.store, &self.local).map_err(error)?;
        let floor_time = floors::floor_time(kafka, &floors, &logs, FLOOR_TIME_PATIENCE)?;
        let uploader = self.uploader.as_mut().expect("opened above");
        let upload = uploader.upload(&snapshot, floors, floor_time, source);
        let limit = patience.unwrap_or(Duration::MAX);
        let stopped = async {
            while !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let manifest = self
            .runtime
            .block_on(async {
                tokio::select! {
                    done = tokio::time::timeout(limit, upload) => done.map_err(|_| {
                        EngineError::Checkpoint(format!("not uploaded within {limit:?}"))
                    }),
                    () = stopped => Err(EngineError::Checkpoint("abandoned: the engine is stopping".into())),
                }
            })?
            .map_err(error)?;
        self.newest = Some((manifest.created, floor_time.unwrap_or(manifest.created)));
        match self
            .runtime
            .block_on(floors::retention(kafka, &kafka.input_topics))
        {
            Ok(r) => self.retention = r,
            Err(e) => tracing::debug!(error = %e, "cannot read the topics' retention"),
        }
        Ok(manifest)
    }

    /// The age of the newest checkpoint and its margin to Kafka's retention.
    fn publish(&self) {
        let now = Utc::now();
        let (created, floor_time) = self.newest.unwrap_or((self.started, self.started));
        let age = (now - created).num_milliseconds() as f64 / 1000.0;
        metrics::gauge!(telemetry::CHECKPOINT_AGE).set(age);
        if let Some(retention) = self.retention {
            metrics::gauge!(telemetry::KAFKA_RETENTION).set(retention);
            let at_risk = (now - floor_time).num_milliseconds() as f64 / 1000.0;
            metrics::gauge!(telemetry::CHECKPOINT_RETENTION_MARGIN).set(retention - at_risk);
        }
    }
}

/// The wait before attempt `failures + 1`: doubling from 5 s, at most the interval or a
/// minute, whichever is longer.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let doubled = Duration::from_secs(5).saturating_mul(1 << failures.saturating_sub(1).min(10));
    doubled.min(interval.max(MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checkpoints_back_off_to_a_bound() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(1, minute), Duration::from_secs(5));
        assert_eq!(backoff(2, minute), Duration::from_secs(10));
        assert_eq!(backoff(4, minute), Duration::from_secs(40));
        assert_eq!(backoff(30, minute), minute);
        assert_eq!(backoff(30, Duration::from_secs(1)), minute);
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(30, hour), hour);
    }
}
