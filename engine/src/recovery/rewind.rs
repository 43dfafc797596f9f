//! The cluster's rewind to a restored store's floors, before any worker reads Kafka.
//!
//! A team's person state lives in one process's store, but its events come from every
//! partition, which every process reads a share of. So when one process restores a checkpoint,
//! every process must read its partitions again from the checkpoint's floors. At start-up every
//! worker of every process takes part in two rounds over timely's own channels:
//!
//! 1. each process's first worker sends the restore floors its store still holds (usually
//!    none); every worker receives all of them and resumes its partitions at the lowest floor;
//! 2. each worker stores and commits the offsets it rewound, marks the messages up to each
//!    rewound partition's end as possible replays (whoever read them before), and only then
//!    says so; each process also lowers every offset of its store above a floor, so no
//!    partition resumes from a stale one later. A restored store clears its floors once every
//!    worker of the cluster has said so.
//!
//! A worker that fails or stops on the way never says so, so the floors stay and the next start
//! rewinds again.

use std::{
    cell::Cell,
    collections::HashMap,
    rc::Rc,
    sync::atomic::{AtomicBool, Ordering},
};

use hogstream_state::{PartitionOffset, StateStore};
use timely::{
    container::CapacityContainerBuilder,
    dataflow::{
        InputHandle, ProbeHandle,
        operators::{Input, Inspect, Probe, vec::Broadcast},
    },
    worker::Worker,
};

use crate::{EngineError, source};

/// What workers tell each other during the rewind.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Note {
    /// Round 1: a restore floor (topic, partition, offset).
    Floor(String, i32, i64),
    /// Round 2: a worker stored and committed its rewind.
    Stored,
}

/// The rewind of one worker, between the two rounds.
pub struct Rewind {
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Note>>>,
    probe: ProbeHandle<u64>,
    floors: HashMap<(String, i32), i64>,
    /// This process's own floors (sent by its first worker), to clear after round 2.
    own: Vec<PartitionOffset>,
    /// Workers of the cluster that said they stored their rewind.
    stored: Rc<Cell<usize>>,
}

/// Steps `worker` until `probe` passes `time`; `false` when `failed` is raised first (a worker
/// of this process failed: the others would wait for it forever).
fn step_past(
    worker: &mut Worker,
    probe: &ProbeHandle<u64>,
    time: u64,
    failed: &AtomicBool,
) -> bool {
    while probe.less_than(&time) {
        if failed.load(Ordering::Relaxed) {
            return false;
        }
        worker.step_or_park(Some(std::time::Duration::from_millis(10)));
    }
    true
}

impl Rewind {
    /// Round 1: sends `own` (this process's first worker passes its store's floors, the others
    /// nothing) and waits until every worker's floors arrived; `None` when another worker of
    /// this process `failed` first.
    pub fn exchange(
        worker: &mut Worker,
        own: Vec<PartitionOffset>,
        failed: &AtomicBool,
    ) -> Option<Self> {
        let floors: Rc<std::cell::RefCell<HashMap<(String, i32), i64>>> = Rc::default();
        let stored: Rc<Cell<usize>> = Rc::default();
        let (seen_floors, seen_stored) = (Rc::clone(&floors), Rc::clone(&stored));
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<Note>>();
            let (probe, _) = stream
                .broadcast()
                .inspect(move |note: &Note| match note {
                    Note::Floor(topic, partition, offset) => {
                        let mut floors = seen_floors.borrow_mut();
                        let e = floors.entry((topic.clone(), *partition)).or_insert(*offset);
                        *e = (*e).min(*offset);
                    }
                    Note::Stored => seen_stored.set(seen_stored.get() + 1),
                })
                .probe();
            (input, probe)
        });
        for f in &own {
            input.send(Note::Floor(f.topic.clone(), f.partition, f.next_offset));
        }
        input.advance_to(1);
        if !step_past(worker, &probe, 1, failed) {
            return None;
        }
        let floors = floors.take();
        Some(Self {
            input,
            probe,
            floors,
            own,
            stored,
        })
    }

    /// The lowest floor of each partition some process asked for.
    pub fn floors(&self) -> &HashMap<(String, i32), i64> {
        &self.floors
    }

    /// Round 2: stores and commits what this worker rewound (`first`: this is the process's
    /// first worker, which also lowers the store's other offsets), raises its read horizon of
    /// every rewound partition to the partition's end, says so, waits until every worker did
    /// or the round ended without them, then clears this process's floors if all did. `false`
    /// when another worker of this process `failed` first (the floors stay).
    pub fn finish(
        mut self,
        worker: &mut Worker,
        first: bool,
        store: &StateStore,
        consumer: &source::SourceConsumer,
        assigned: &source::Assigned,
        failed: &AtomicBool,
    ) -> Result<bool, EngineError> {
        if first && !self.floors.is_empty() {
            let floors: Vec<PartitionOffset> = self
                .floors
                .iter()
                .map(|((topic, partition), offset)| PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: *offset,
                })
                .collect();
            store.lower_offsets(&floors)?;
        }
        if !assigned.rewound.is_empty() {
            store.store_offsets(&assigned.rewound)?;
            source::commit_to_group_now(consumer, &assigned.rewound)?;
        }
        // Whoever read these messages before (the lost store's life, or this process before a
        // partition changed owner) may have stored rows of them: read again, they are replays.
        for (key, &(_, high)) in &assigned.logs {
            if self.floors.contains_key(key) {
                store.raise_read_horizon(&key.0, key.1, high)?;
            }
        }
        self.input.send(Note::Stored);
        self.input.advance_to(2);
        if !step_past(worker, &self.probe, 2, failed) {
            return Ok(false);
        }
        drop(self.input);
        if first && !self.own.is_empty() {
            let (stored, peers) = (self.stored.get(), worker.peers());
            if stored == peers {
                store.clear_restore_floors()?;
                tracing::info!(
                    partitions = self.own.len(),
                    "every process of the cluster rewound to this store's restore point"
                );
            } else {
                tracing::warn!(
                    stored,
                    peers,
                    "not every worker of the cluster stored its rewind: the restore floors stay, and the next start rewinds again"
                );
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::KafkaConfig;

    fn floor(partition: i32, offset: i64) -> PartitionOffset {
        PartitionOffset {
            topic: "t".into(),
            partition,
            next_offset: offset,
        }
    }

    fn offline_consumer() -> source::SourceConsumer {
        source::consumer(&KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        })
        .unwrap()
    }

    /// A store restored with floors for partitions 0 and 1, and offsets past them.
    fn restored_store(dir: &std::path::Path) -> StateStore {
        let store = StateStore::open(dir, 1 << 20).unwrap();
        store
            .store_offsets(&[floor(0, 100), floor(1, 3), floor(2, 9)])
            .unwrap();
        store
            .mark_restored("cp", &[floor(0, 60), floor(1, 2)], &[floor(0, 200)])
            .unwrap();
        store
    }

    #[test]
    fn every_worker_rewinds_to_the_lowest_floor_any_process_asked_for() {
        // Per worker, the (partition, floor) pairs it rewinds to.
        type Seen = Vec<Vec<(i32, i64)>>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let out = Arc::clone(&seen);
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            // Worker 0 stands for a restored process, worker 1 for another one.
            let own = match worker.index() {
                0 => vec![floor(0, 10), floor(1, 40)],
                _ => vec![floor(1, 30), floor(2, 5)],
            };
            let rewind = Rewind::exchange(worker, own, &AtomicBool::new(false)).unwrap();
            let mut floors: Vec<(i32, i64)> =
                rewind.floors().iter().map(|((_, p), o)| (*p, *o)).collect();
            floors.sort();
            out.lock().unwrap().push(floors);
        })
        .unwrap();
        drop(guards);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for floors in seen.iter() {
            assert_eq!(floors, &vec![(0, 10), (1, 30), (2, 5)]);
        }
    }

    #[test]
    fn once_every_worker_stored_its_rewind_the_store_lowers_its_offsets_clears_its_floors_and_marks_replays()
     {
        let dir = tempfile::tempdir().unwrap();
        let store = restored_store(dir.path());
        let store_in = store.clone();
        timely::execute_directly(move |worker| {
            let stop = AtomicBool::new(false);
            let own = store_in.restore_floors().unwrap();
            let rewind = Rewind::exchange(worker, own, &stop).unwrap();
            let assigned = source::Assigned {
                logs: HashMap::from([(("t".to_owned(), 1), (0, 500))]),
                ..Default::default()
            };
            rewind
                .finish(
                    worker,
                    true,
                    &store_in,
                    &offline_consumer(),
                    &assigned,
                    &stop,
                )
                .unwrap();
        });
        assert!(store.restore_floors().unwrap().is_empty(), "cleared");
        assert_eq!(
            store.offset("t", 0).unwrap(),
            Some(60),
            "lowered to the floor"
        );
        assert_eq!(store.offset("t", 1).unwrap(), Some(2));
        assert_eq!(store.offset("t", 2).unwrap(), Some(9), "no floor: kept");
        assert_eq!(
            store.read_horizon("t", 1).unwrap(),
            Some(500),
            "a rewound partition's messages up to its end are possible replays"
        );
    }

    #[test]
    fn a_worker_that_fails_during_the_rewind_leaves_the_floors_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = restored_store(dir.path());
        let store_in = store.clone();
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let stop = AtomicBool::new(false);
            let first = worker.index() == 0;
            let own = if first {
                store_in.restore_floors().unwrap()
            } else {
                Vec::new()
            };
            let rewind = Rewind::exchange(worker, own, &stop).unwrap();
            if first {
                rewind
                    .finish(
                        worker,
                        true,
                        &store_in,
                        &offline_consumer(),
                        &source::Assigned::default(),
                        &stop,
                    )
                    .unwrap();
            }
            // Worker 1 fails here, before storing its rewind: its handle is dropped.
        })
        .unwrap();
        drop(guards);
        assert_eq!(
            store.restore_floors().unwrap().len(),
            2,
            "a worker did not store its rewind: the floors stay"
        );
    }

    #[test]
    fn a_worker_does_not_wait_forever_for_one_that_failed() {
        // Another worker of its process failed before the round could end.
        let stopped = timely::execute_directly(|worker| {
            Rewind::exchange(worker, Vec::new(), &AtomicBool::new(true)).is_none()
        });
        assert!(stopped, "returned instead of waiting");
    }
}
