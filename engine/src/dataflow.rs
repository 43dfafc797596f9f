//! The timely dataflow and each worker's driver loop.
//!
//! ```text
//! Kafka (assigned partitions) ─▶ input ─▶ exchange by identity ─▶ process ─▶ clickhouse-sink ─▶ probe
//! ```
//!
//! Time is a coarse ingestion epoch that every worker advances on its own clock. The sink holds
//! a capability for the oldest epoch of every batch until ClickHouse (and the dead-letter topic)
//! acknowledged it, so the probe's frontier is exactly "every output of earlier epochs is
//! stored". Only then are the offsets read in those epochs written to RocksDB: a crash replays
//! from there, at least once, and the idempotent sink makes the replay harmless.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use hogstream_sinks::{OutputBatch, Outputs};
use hogstream_state::{PartitionOffset, StateStore, persons::PendingWrites};
use rdkafka::Message;
use timely::{
    container::CapacityContainerBuilder,
    dataflow::{
        Stream,
        channels::pact::Pipeline,
        operators::{
            Capability, Concat, Exchange, Input, Probe,
            core::{Map, Partition},
            generic::Operator,
        },
    },
    worker::Worker,
};
use tracing::Instrument;

use crate::{
    config::EngineSettings,
    error::EngineError,
    normalize::Rules,
    process::Processor,
    record::SourceRecord,
    recovery, shards, source,
    teams::Teams,
    views::{self, input::Routed, registry::ActiveView},
};

/// The views of this process: which run, and their input.
pub struct ViewsContext {
    pub active: Vec<ActiveView>,
    pub inputs: views::input::ViewInputs,
    /// What the views counted before this start, given to the first worker of the process at
    /// its first epoch.
    pub loaded: std::sync::Mutex<Option<Vec<(Routed, isize)>>>,
    /// A version below every row this run writes and above every row earlier runs wrote.
    pub started_version: u64,
    /// The UTC day `loaded` was read for (its windows).
    pub loaded_day: i32,
}

impl ViewsContext {
    /// Once the rebuilt results are stored: deletes the rows of earlier runs that no longer
    /// hold (a result that vanished while no run could write its deletion, e.g. before a
    /// SIGKILL), in every view table.
    fn sweep(&self, shared: &WorkerContext) -> Result<(), EngineError> {
        let database = &shared.settings.clickhouse.database;
        let client = shared.outputs.clickhouse.client();
        for v in &self.active {
            let sql = v
                .sweep_statement(self.started_version, self.loaded_day)
                .replace("{db}", &format!("`{database}`"));
            shared
                .runtime
                .block_on(client.query(&sql).execute())
                .map_err(|e| EngineError::Sink(e.into()))?;
        }
        Ok(())
    }
}

/// What the workers of one process share.
pub struct WorkerContext {
    pub settings: EngineSettings,
    pub teams: Arc<Teams>,
    pub rules: Arc<Rules>,
    pub store: StateStore,
    /// Where person state is read and resolved (see `hogstream_state::persons`).
    pub state_pool: Arc<rayon::ThreadPool>,
    pub runtime: tokio::runtime::Handle,
    pub outputs: Outputs,
    pub shutdown: Arc<AtomicBool>,
    /// `None` when no view is enabled.
    pub views: Option<ViewsContext>,
    /// Set when a stage cannot go on safely (e.g. view input could not be recorded): from then
    /// on no offset is committed, so everything since the last commit is read again after a
    /// restart.
    pub halted: AtomicBool,
    /// Set when a worker of this process failed: the others stop waiting for it (a signal only
    /// sets `shutdown`, and lets a start-up that is under way finish, then drain).
    pub failed: AtomicBool,
}

type Epoch = u64;

/// What the process stage emits: work for the sink, or an update of the views' input.
#[derive(Clone)]
enum Processed {
    Work(WorkBatch),
    View(Routed, Epoch, isize),
}

/// What one process step hands the sink: rows, and the person-state writes to commit once
/// those rows are stored.
#[derive(Clone, Default)]
struct WorkBatch {
    out: OutputBatch,
    state: Vec<PendingWrites>,
}

/// A batch being written: its capability is released, and its state committed, only when it
/// and every batch before it are stored.
struct Inflight {
    id: u64,
    /// Held only to be dropped: that releases the batch's oldest epoch.
    _cap: Capability<Epoch>,
    state: Vec<PendingWrites>,
    stored: bool,
}

/// Batches output of the worker and writes it to ClickHouse off the worker thread; holds the
/// oldest epoch of each batch until the write is acknowledged and the batch's person state is
/// committed, in batch order (state must never run ahead of what ClickHouse holds).
fn clickhouse_sink<'s>(
    stream: Stream<'s, Epoch, Vec<WorkBatch>>,
    shared: &Arc<WorkerContext>,
) -> Stream<'s, Epoch, Vec<()>> {
    let scope = stream.scope();
    let shared = Arc::clone(shared);
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "clickhouse-sink", move |_cap, info| {
        let activator = scope.activator_for(info.address.clone());
        let woken = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
        let (ack_tx, ack_rx) = mpsc::channel::<u64>();
        let cfg = shared.settings.clickhouse.clone();
        let max_inflight = shared.settings.engine.max_inflight_flushes.max(1);
        let mut buffer = OutputBatch::default();
        // The buffer's oldest epoch is all that must be held: a batch is acknowledged whole.
        let mut held: Option<Capability<Epoch>> = None;
        let mut since: Option<Instant> = None;
        let mut state: Vec<PendingWrites> = Vec::new();
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut next_id = 0u64;

        move |(input, frontier), _output| {
            input.for_each_stamp(|cap, data| {
                for container in data {
                    for batch in container.drain(..) {
                        buffer.append(batch.out);
                        state.extend(batch.state);
                    }
                }
                if let Some(c) = cap.retain_least(0)
                    && held.as_ref().is_none_or(|h| c.time() < h.time())
                {
                    held = Some(c);
                }
                since.get_or_insert_with(Instant::now);
            });
            while let Ok(id) = ack_rx.try_recv() {
                if let Some(b) = inflight.iter_mut().find(|b| b.id == id) {
                    b.stored = true;
                }
            }
            while inflight.front().is_some_and(|b| b.stored) {
                let done = inflight.pop_front().expect("checked");
                if let Err(e) = PendingWrites::commit_all(&done.state, &shared.store) {
                    // The capability stays held, so nothing from this batch on is committed.
                    tracing::error!(error = %e, "cannot commit person state; stopping");
                    shared.shutdown.store(true, Ordering::Relaxed);
                    inflight.push_front(done);
                    return;
                }
            }
            if buffer.is_empty() && state.is_empty() {
                return;
            }
            let waited = since.map_or(Duration::ZERO, |t| t.elapsed());
            let due = buffer.events.len() >= cfg.max_rows
                || buffer.bytes >= cfg.max_bytes
                || waited >= cfg.flush_interval
                || frontier.is_empty();
            if due && inflight.len() < max_inflight {
                let batch = std::mem::take(&mut buffer);
                since = None;
                let Some(cap) = held.take() else { return };
                let id = next_id;
                next_id += 1;
                inflight.push_back(Inflight { id, _cap: cap, state: std::mem::take(&mut state), stored: false });
                metrics::histogram!("hogstream_flush_events").record(batch.events.len() as f64);
                let (outputs, ack, woken) = (shared.outputs.clone(), ack_tx.clone(), Arc::clone(&woken));
                let span = tracing::info_span!("sink.flush", batch = id, events = batch.events.len(), persons = batch.persons.len());
                shared.runtime.spawn(async move {
                    let started = Instant::now();
                    match batch.write(&outputs).instrument(span).await {
                        Ok(()) => {
                            tracing::debug!(events = batch.events.len(), took = ?started.elapsed(), "flushed");
                            metrics::counter!("hogstream_events_out_total").increment(batch.events.len() as u64);
                            let _ = ack.send(id);
                            let _ = woken.activate();
                        }
                        // Only a shutdown stops the retries: the batch stays unacknowledged and
                        // its offsets uncommitted, so it is read again after the restart.
                        Err(e) => tracing::warn!(error = %e, "flush abandoned at shutdown"),
                    }
                });
            } else {
                let wait = if due { Duration::from_millis(5) } else { cfg.flush_interval.saturating_sub(waited) };
                activator.activate_after(wait);
            }
        }
    })
}

/// Next offsets by topic, then partition: keyed by topic first so the read path, once per
/// message, borrows the name instead of allocating it.
type NextOffsets = HashMap<String, HashMap<i32, i64>>;

/// Offsets read per epoch, stored once the probe says the epoch's outputs are durable.
#[derive(Default)]
struct OffsetLedger {
    current: NextOffsets,
    pending: BTreeMap<Epoch, NextOffsets>,
}

impl OffsetLedger {
    fn read(&mut self, topic: &str, partition: i32, offset: i64) {
        match self.current.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, offset + 1);
            }
            None => {
                let partitions = HashMap::from([(partition, offset + 1)]);
                self.current.insert(topic.to_owned(), partitions);
            }
        }
    }

    fn close_epoch(&mut self, epoch: Epoch) {
        if !self.current.is_empty() {
            self.pending
                .insert(epoch, std::mem::take(&mut self.current));
        }
    }

    /// Removes and merges the offsets of every epoch before `frontier`.
    fn take_before(&mut self, frontier: Epoch) -> Vec<PartitionOffset> {
        let later = match frontier {
            Epoch::MAX => BTreeMap::new(),
            f => self.pending.split_off(&f),
        };
        let done = std::mem::replace(&mut self.pending, later);
        let mut merged: HashMap<(String, i32), i64> = HashMap::new();
        for offsets in done.into_values() {
            for (topic, partitions) in offsets {
                for (partition, o) in partitions {
                    let e = merged.entry((topic.clone(), partition)).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
        merged
            .into_iter()
            .map(|((topic, partition), next_offset)| PartitionOffset {
                topic,
                partition,
                next_offset,
            })
            .collect()
    }
}

fn commit(
    shared: &WorkerContext,
    consumer: &source::SourceConsumer,
    offsets: &[PartitionOffset],
) -> Result<(), EngineError> {
    if offsets.is_empty() || shared.halted.load(Ordering::Relaxed) {
        return Ok(());
    }
    shared.store.store_offsets(offsets)?;
    source::commit_to_group(consumer, offsets)
}

/// Builds the dataflow on `worker` and drives it until shutdown.
pub fn run_worker(worker: &mut Worker, shared: &Arc<WorkerContext>) -> Result<(), EngineError> {
    // A series at 0 from the start, so "never held back" is visible to alerts and dashboards.
    metrics::counter!("hogstream_backpressure_total").increment(0);
    let (index, peers) = (worker.index(), worker.peers());
    let processes = shared.settings.cluster.processes.max(1) as u64;
    let workers = (peers as u64 / processes).max(1);
    let engine = &shared.settings.engine;
    let consumer = source::consumer(&shared.settings.kafka)?;
    let partitions =
        source::assigned_partitions(&consumer, &shared.settings.kafka.input_topics, index, peers)?;
    // Every process rewinds to a restored store's floors before anything is read.
    let first_of_process = (index as u64).is_multiple_of(workers);
    let own_floors = if first_of_process {
        shared.store.restore_floors()?
    } else {
        Vec::new()
    };
    // Another worker failed before the rewind ended: nothing was read, nothing to drain.
    let Some(rewind) = recovery::Rewind::exchange(worker, own_floors, &shared.failed) else {
        return Ok(());
    };
    let assigned = source::assign(&consumer, &shared.store, &partitions, rewind.floors())?;
    let rewound = rewind.finish(
        worker,
        first_of_process,
        &shared.store,
        &consumer,
        &assigned,
        &shared.failed,
    )?;
    if !rewound {
        return Ok(());
    }
    // After the rewind, which may have raised it.
    let mut horizon = source::ReadHorizon::load(&shared.store, &partitions)?;
    let resume = assigned.resume;
    let shards = shards::shards_of_worker(index as u64, processes, workers);
    metrics::gauge!("hogstream_worker_shards", "worker" => index.to_string()).set(shards as f64);
    tracing::info!(
        worker = index,
        peers,
        ?partitions,
        ?resume,
        shards,
        "worker assigned"
    );

    let mut processor = Processor::new(
        Arc::clone(&shared.teams),
        Arc::clone(&shared.rules),
        shared.store.clone(),
        Arc::clone(&shared.state_pool),
        engine.person_cache,
    )?;
    let (mut input, mut view_input, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<SourceRecord>>();
        let ctx = Arc::clone(shared);
        let processed = stream
            .exchange(move |r: &SourceRecord| {
                shards::worker_of(shards::shard_of(r.route), processes, workers)
            })
            .unary::<CapacityContainerBuilder<Vec<Processed>>, _, _, _>(
                Pipeline,
                "process",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each_stamp(|cap, data| {
                            let mut work = WorkBatch::default();
                            let time = cap.least().copied().unwrap_or_default();
                            let mut session = output.session(&cap);
                            // Timely hands records over in containers of ~8 KiB (about 60
                            // records); the person stage pays per call (reads, encoding, one
                            // synced state write), so everything of this time goes in one call.
                            let records: Vec<SourceRecord> =
                                data.flat_map(|container| container.drain(..)).collect();
                            work.state = processor.process(records, &mut work.out);
                            if let Some(views) = &ctx.views {
                                match views.inputs.updates(
                                    &work.out.events,
                                    &work.out.overrides,
                                    &work.out.persons,
                                ) {
                                    Ok(updates) => session.give_iterator(
                                        updates.into_iter().map(|(u, diff)| Processed::View(u, time, diff)),
                                    ),
                                    Err(e) => {
                                        // Without its input recorded a view could not be rebuilt
                                        // after a restart: stop, and commit nothing more.
                                        tracing::error!(error = %e, "cannot record view input; stopping");
                                        ctx.halted.store(true, Ordering::Relaxed);
                                        ctx.shutdown.store(true, Ordering::Relaxed);
                                    }
                                }
                            }
                            if !work.out.is_empty() || !work.state.is_empty() {
                                session.give(Processed::Work(work));
                            }
                        });
                    }
                },
            );
        // Each item goes one way: a stream read by two operators would copy every batch.
        let mut parts = processed
            .partition::<CapacityContainerBuilder<Vec<Processed>>, _, _>(2, |p| match p {
                Processed::Work(_) => (0, p),
                Processed::View(..) => (1, p),
            })
            .into_iter();
        let (work, view_updates) = (parts.next().expect("2 parts"), parts.next().expect("2 parts"));
        let batches = work.flat_map(|p| match p {
            Processed::Work(w) => Some(w),
            Processed::View(..) => None,
        });
        let (view_input, loaded) = scope.new_input::<Vec<(Routed, Epoch, isize)>>();
        let batches = match &shared.views {
            Some(v) => {
                let updates = view_updates
                    .flat_map(|p| match p {
                        Processed::View(u, t, d) => Some((u, t, d)),
                        Processed::Work(_) => None,
                    })
                    .concat(loaded);
                let rows = views::dataflow::build(updates, &v.active, v.started_version)
                    .map(|out| WorkBatch { out, state: Vec::new() });
                batches.concat(rows)
            }
            None => batches,
        };
        let (probe, _) = clickhouse_sink(batches, shared).probe();
        (input, view_input, probe)
    });

    let mut ledger = OffsetLedger::default();
    // Epochs count wall-clock periods since the Unix epoch, so every worker of every process
    // numbers them alike: a worker that starts late then does not sit a fixed number of epochs
    // ahead of the frontier (which would hold it in backpressure for good).
    let epoch_ms = engine.epoch.as_millis().max(1);
    let wall_epoch = || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Epoch::try_from(ms / epoch_ms).unwrap_or(Epoch::MAX - 1)
    };
    let mut epoch: Epoch = wall_epoch();
    input.advance_to(epoch);
    // The epoch whose stored results make the sweep of earlier runs' rows safe, on the worker
    // that rebuilt the views of the cluster's first process.
    let mut sweep_after: Option<Epoch> = None;
    let mut next_sweep = Instant::now();
    // The UTC day of the windows, on the worker that feeds its process's view input from the
    // store (it also retires the days that leave them).
    let mut views_day: Option<i32> = None;
    // The rebuilt views go in at time 0, before every epoch of every worker and process: no
    // update of this run is ever computed without them, and once time 0 is stored everywhere
    // the sweep may run.
    if let Some(views) = &shared.views
        && let Some(loaded) = views
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    {
        tracing::info!(
            worker = index,
            updates = loaded.len(),
            "views rebuilt from the store"
        );
        for (update, diff) in loaded {
            view_input.send((update, 0, diff));
        }
        if shared.settings.cluster.process == 0 {
            sweep_after = Some(0);
        }
        views_day = Some(views.loaded_day);
    }
    view_input.advance_to(epoch);
    while !shared.shutdown.load(Ordering::Relaxed) {
        let acked = probe.with_frontier(|f| f.first().copied().unwrap_or(Epoch::MAX));
        commit(shared, &consumer, &ledger.take_before(acked))?;
        if let (Some(views), Some(rebuilt)) = (&shared.views, sweep_after)
            && acked > rebuilt
            && Instant::now() >= next_sweep
        {
            match views.sweep(shared) {
                Ok(()) => {
                    tracing::info!(
                        worker = index,
                        "views: rows of earlier runs that no longer hold are deleted"
                    );
                    sweep_after = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "views: cannot delete stale rows yet; retrying");
                    next_sweep = Instant::now() + Duration::from_secs(1);
                }
            }
        }

        let mut read = 0;
        if epoch.saturating_sub(acked) < engine.max_inflight_epochs {
            while read < engine.max_poll_records {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(msg)) => {
                        let (topic, partition, offset) =
                            (msg.topic(), msg.partition(), msg.offset());
                        ledger.read(topic, partition, offset);
                        let replay = horizon.read(&shared.store, topic, partition, offset)?;
                        input.send(source::to_record(&msg, replay));
                        read += 1;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(worker = index, error = %e, "kafka consumer error");
                        break;
                    }
                    None => break,
                }
            }
        } else {
            metrics::counter!("hogstream_backpressure_total").increment(1);
        }
        let now = wall_epoch();
        if now > epoch {
            ledger.close_epoch(epoch);
            epoch = now;
            input.advance_to(epoch);
            view_input.advance_to(epoch);
            if let (Some(views), Some(day)) = (&shared.views, views_day.as_mut()) {
                let today = views::input::today();
                if today > *day {
                    let expired = views.inputs.expire(today)?;
                    tracing::info!(
                        worker = index,
                        today,
                        retractions = expired.len(),
                        "views: days that left their windows retired"
                    );
                    for (update, diff) in expired {
                        view_input.send((update, epoch, diff));
                    }
                    *day = today;
                }
            }
        }
        if read == 0 {
            worker.step_or_park(Some(Duration::from_millis(2)));
        } else {
            worker.step();
        }
    }

    // Graceful stop: no more input; wait (bounded) until everything read is stored.
    ledger.close_epoch(epoch);
    input.close();
    view_input.close();
    let deadline = Instant::now() + engine.shutdown_timeout;
    while !probe.done() && Instant::now() < deadline {
        worker.step_or_park(Some(Duration::from_millis(10)));
        let acked = probe.with_frontier(|f| f.first().copied().unwrap_or(Epoch::MAX));
        commit(shared, &consumer, &ledger.take_before(acked))?;
    }
    if probe.done() {
        commit(shared, &consumer, &ledger.take_before(Epoch::MAX))?;
        tracing::info!(worker = index, "drained and stored every offset");
    } else {
        tracing::warn!(
            worker = index,
            "shutdown timeout: unflushed events will be read again at the next start"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_releases_only_epochs_before_the_frontier() {
        let mut l = OffsetLedger::default();
        l.read("t", 0, 10);
        l.read("t", 0, 11);
        l.close_epoch(0);
        l.read("t", 0, 12);
        l.read("t", 1, 5);
        l.close_epoch(1);
        assert!(l.take_before(0).is_empty());
        let mut first = l.take_before(1);
        first.sort_by_key(|o| o.partition);
        assert_eq!(
            first,
            vec![PartitionOffset {
                topic: "t".into(),
                partition: 0,
                next_offset: 12
            }]
        );
        let mut rest = l.take_before(Epoch::MAX);
        rest.sort_by_key(|o| o.partition);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].next_offset, 13);
        assert_eq!(rest[1].next_offset, 6);
        assert!(l.take_before(Epoch::MAX).is_empty());
    }
}
