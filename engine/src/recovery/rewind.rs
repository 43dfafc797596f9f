//! The cluster's rewind to a restored store's floors, before any worker reads Kafka.
//!
//! A team's person state lives in one process's store, but its events come from every
//! partition, which every process reads a share of. So when one process restores a checkpoint,
//! every process must read its partitions again from the checkpoint's floors. At start-up every
//! worker of every process takes part in two rounds over timely's own channels:
//!
//! 1. each process's first worker sends the restore floors its store still holds (usually
//!    none); every worker receives all of them and resumes its partitions at the lowest floor;
//! 2. each worker stores and commits the offsets it rewound (and each process lowers every
//!    offset of its store above a floor, so no partition resumes from a stale one later), then
//!    advances; once every worker has, the restored process clears its floors.
//!
//! A crash anywhere before round 2 completes leaves the floors in place, so the next start
//! rewinds again.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

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

type Floor = (String, i32, i64);

/// The rewind of one worker, between the two rounds.
pub struct Rewind {
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Floor>>>,
    probe: ProbeHandle<u64>,
    floors: HashMap<(String, i32), i64>,
    /// This process's own floors (sent by its first worker), to clear after round 2.
    own: Vec<PartitionOffset>,
}

impl Rewind {
    /// Round 1: sends `own` (this process's first worker passes its store's floors, the others
    /// nothing) and waits until every worker's floors arrived.
    pub fn exchange(worker: &mut Worker, own: Vec<PartitionOffset>) -> Self {
        let received: Rc<RefCell<Vec<Floor>>> = Rc::default();
        let sink = Rc::clone(&received);
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<Floor>>();
            let (probe, _) = stream
                .broadcast()
                .inspect(move |floor: &Floor| sink.borrow_mut().push(floor.clone()))
                .probe();
            (input, probe)
        });
        for f in &own {
            input.send((f.topic.clone(), f.partition, f.next_offset));
        }
        input.advance_to(1);
        while probe.less_than(&1) {
            worker.step();
        }
        let mut floors: HashMap<(String, i32), i64> = HashMap::new();
        for (topic, partition, offset) in received.borrow_mut().drain(..) {
            let e = floors.entry((topic, partition)).or_insert(offset);
            *e = (*e).min(offset);
        }
        Self {
            input,
            probe,
            floors,
            own,
        }
    }

    /// The lowest floor of each partition some process asked for.
    pub fn floors(&self) -> &HashMap<(String, i32), i64> {
        &self.floors
    }

    /// Round 2: stores and commits what this worker rewound (`first`: this is the process's
    /// first worker, which also lowers the store's other offsets), waits until every worker
    /// did, then clears this process's floors.
    pub fn finish(
        mut self,
        worker: &mut Worker,
        first: bool,
        store: &StateStore,
        consumer: &source::SourceConsumer,
        rewound: &[PartitionOffset],
    ) -> Result<(), EngineError> {
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
        if !rewound.is_empty() {
            store.store_offsets(rewound)?;
            source::commit_to_group_now(consumer, rewound)?;
        }
        self.input.advance_to(2);
        while self.probe.less_than(&2) {
            worker.step();
        }
        drop(self.input);
        if first && !self.own.is_empty() {
            store.clear_restore_floors()?;
            tracing::info!(
                partitions = self.own.len(),
                "every process of the cluster rewound to this store's restore point"
            );
        }
        Ok(())
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
            let rewind = Rewind::exchange(worker, own);
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
    fn once_every_worker_stored_its_rewind_the_store_lowers_its_offsets_and_clears_its_floors() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), 1 << 20).unwrap();
        store.store_offsets(&[floor(0, 100), floor(1, 3)]).unwrap();
        store
            .mark_restored("cp", &[floor(0, 60)], &[floor(0, 200)])
            .unwrap();
        let consumer = source::consumer(&KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        })
        .unwrap();
        let store_in = store.clone();
        timely::execute_directly(move |worker| {
            let own = store_in.restore_floors().unwrap();
            let rewind = Rewind::exchange(worker, own);
            rewind
                .finish(worker, true, &store_in, &consumer, &[])
                .unwrap();
        });
        assert!(store.restore_floors().unwrap().is_empty(), "cleared");
        assert_eq!(
            store.offset("t", 0).unwrap(),
            Some(60),
            "lowered to the floor"
        );
        assert_eq!(store.offset("t", 1).unwrap(), Some(3), "no floor: kept");
    }
}
