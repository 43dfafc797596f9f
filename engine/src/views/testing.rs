//! Runs views without Kafka or ClickHouse, for their unit and property tests: feed events and
//! merges in any order and batching, on any number of workers, and read the table the engine
//! would leave in ClickHouse (what `SELECT … FINAL` shows).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use timely::dataflow::operators::Input as _;
use uuid::Uuid;

use super::{
    Properties, Row, Time, Value, View, ViewEvent,
    dataflow::rows_of,
    input::{InputState, Routed, ViewUpdate, expire, resolve, resolve_persons},
    output::rows_of_changes,
    registry::{Window, window_of},
};
use differential_dataflow::AsCollection;

/// One update of a view's input under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// An event, with `person` the person the engine stored it with. A second event with the
    /// same uuid, team, day, name and distinct id replaces the first (a copy changes nothing),
    /// as in the engine and in `events` under `FINAL`.
    /// Its properties are those the view declared.
    Event(ViewEvent),
    /// From now on the events of `distinct_id` belong to `person` (a merge: the engine writes a
    /// `person_distinct_id_overrides` row).
    Override {
        team_id: i64,
        distinct_id: String,
        person: Uuid,
    },
    /// `person`'s properties are now `properties` (those the view declared are kept); `None`:
    /// the person is gone (merged into another).
    Person {
        team_id: i64,
        person: Uuid,
        properties: Option<Properties>,
    },
}

/// A view's table: (team, key) → values, as `SELECT … FINAL` shows it.
pub type Table = BTreeMap<(i64, Vec<Value>), Vec<Value>>;

/// Runs `view` over `epochs` (each a batch of inputs given at one epoch, in order) on
/// `workers` worker threads, and returns its table after the last epoch.
pub fn run(view: impl View, epochs: Vec<Vec<Update>>, workers: usize) -> Table {
    let dated = epochs.into_iter().map(|batch| (i32::MAX, batch)).collect();
    run_at(view, None, dated, workers)
}

/// Like [`run`], for `view` with a window of `window_days`: each epoch comes with its UTC day
/// (`today`, days since the Unix epoch, not decreasing). Days that leave the window leave the
/// view, and rows of such days are final: the table keeps what was written while they were in
/// the window, as the engine's does.
pub fn run_windowed(
    view: impl View,
    window_days: u32,
    epochs: Vec<(i32, Vec<Update>)>,
    workers: usize,
) -> Table {
    let window = window_of(&view, window_days).unwrap_or_else(|e| panic!("{e}"));
    run_at(view, Some(window), epochs, workers)
}

fn run_at(
    view: impl View,
    window: Option<Window>,
    epochs: Vec<(i32, Vec<Update>)>,
    workers: usize,
) -> Table {
    let view: Arc<dyn View> = Arc::new(view);
    let days: Vec<i32> = epochs.iter().map(|(day, _)| *day).collect();
    let mut resolver = Resolver::new(&*view, window);
    let updates: Arc<Vec<Vec<(Routed, isize)>>> = Arc::new(
        epochs
            .into_iter()
            .map(|(today, batch)| resolver.updates(today, batch))
            .collect(),
    );
    let changes: Arc<Mutex<Vec<(Row, Time, isize)>>> = Arc::default();
    let sink = Arc::clone(&changes);
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let (view, sink) = (Arc::clone(&view), Arc::clone(&sink));
        let (mut input, probe) = worker.dataflow::<Time, _, _>(move |scope| {
            let (input, stream) = scope.new_input::<Vec<(Routed, Time, isize)>>();
            let rows = rows_of(&*view, 0, stream.as_collection(), |_| true);
            let (probe, _) = rows
                .inspect(move |update| sink.lock().expect("not poisoned").push(update.clone()))
                .probe();
            (input, probe)
        });
        if worker.index() == 0 {
            for (epoch, batch) in updates.iter().enumerate() {
                let time = epoch as Time;
                input.advance_to(time);
                for (update, diff) in batch {
                    input.send((update.clone(), time, *diff));
                }
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .expect("timely starts");
    for result in guards.join() {
        result.expect("a view worker panicked");
    }
    let mut by_time: BTreeMap<Time, Vec<(Row, isize)>> = BTreeMap::new();
    for (row, time, diff) in changes.lock().expect("not poisoned").drain(..) {
        by_time.entry(time).or_default().push((row, diff));
    }
    let mut table = Table::new();
    for (time, changes) in by_time {
        let today = days[usize::try_from(time).expect("an epoch number")];
        for (row, deleted) in rows_of_changes(changes) {
            if window.is_some_and(|w| w.is_final(&row, today)) {
                continue;
            }
            let key = (row.team_id, row.key);
            if deleted {
                table.remove(&key);
            } else {
                table.insert(key, row.values);
            }
        }
    }
    table
}

/// The engine's input stage with its store in memory, for one view.
struct Resolver {
    store: BTreeMap<Vec<u8>, Vec<u8>>,
    state: InputState,
    window: Option<Window>,
    /// The view's event and person properties, kept as the engine keeps them.
    properties: Vec<&'static str>,
    person_properties: Vec<&'static str>,
}

impl Resolver {
    fn new(view: &dyn View, window: Option<Window>) -> Self {
        Self {
            store: BTreeMap::new(),
            state: InputState {
                overrides: HashMap::new(),
                held_from: vec![None],
            },
            window,
            properties: view.properties().to_vec(),
            person_properties: view.person_properties().to_vec(),
        }
    }

    /// The updates of one epoch on `today`: the days that left the window first, then `batch`
    /// one input at a time (which keeps the test's order exact).
    fn updates(&mut self, today: i32, batch: Vec<Update>) -> Vec<(Routed, isize)> {
        let failed = "an in-memory store does not fail";
        let mut out =
            expire(&mut self.store, &mut self.state, &[self.window], today).expect(failed);
        for input in batch {
            match input {
                Update::Event(e) => {
                    let e = ViewEvent {
                        properties: e.properties.only(&self.properties),
                        ..e
                    };
                    let done = resolve(&mut self.store, &mut self.state, vec![e], Vec::new());
                    out.extend(done.expect(failed));
                }
                Update::Override {
                    team_id,
                    distinct_id,
                    person,
                } => {
                    let change = vec![(team_id, distinct_id, Some(person))];
                    let done = resolve(&mut self.store, &mut self.state, Vec::new(), change);
                    out.extend(done.expect(failed));
                }
                Update::Person {
                    team_id,
                    person,
                    properties,
                } => {
                    if self.person_properties.is_empty() {
                        continue;
                    }
                    let kept = properties.map(|p| p.only(&self.person_properties));
                    let done = resolve_persons(&mut self.store, vec![(team_id, person, kept)]);
                    out.extend(
                        done.expect(failed)
                            .into_iter()
                            .map(|(p, d)| ((None, ViewUpdate::Person(p)), d)),
                    );
                }
            }
        }
        out
    }
}

/// What [`measure`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Spent in the dataflow: from handing each epoch's input over to its last output.
    pub seconds: f64,
    /// Updates of the view's output collection.
    pub output_updates: u64,
    /// The process's resident memory after the last epoch, with the view's state alive.
    pub resident_bytes: u64,
    /// Updates the view's arrangements hold after the last epoch (its state, counted by
    /// differential's own batch, merge and drop events).
    pub arranged_updates: u64,
}

/// The process's resident memory (Linux; 0 elsewhere).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs `view` (with a window of `window_days`, if set) on one worker over the epochs
/// `epoch(0)`, `epoch(1)`, … (each its UTC day and its updates) until it returns `None`, each
/// brought to completion before the next, and measures it: for benchmarks.
pub fn measure(
    view: impl View,
    window_days: Option<u32>,
    epoch: impl Fn(usize) -> Option<(i32, Vec<Update>)> + Send + Sync + 'static,
) -> Measured {
    let window = window_days.map(|days| window_of(&view, days).unwrap_or_else(|e| panic!("{e}")));
    timely::execute_directly(move |worker| {
        let held = std::rc::Rc::new(std::cell::Cell::new(0i64));
        if let Some(mut registry) = worker.log_register() {
            let held = std::rc::Rc::clone(&held);
            registry.insert::<differential_dataflow::logging::DifferentialEventBuilder, _>(
                "differential/arrange",
                move |_, data| {
                    use differential_dataflow::logging::DifferentialEvent as E;
                    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                    for (_, event) in data.iter().flatten() {
                        let change = match event {
                            E::Batch(b) => as_i64(b.length),
                            E::Merge(m) => m
                                .complete
                                .map_or(0, |c| as_i64(c) - as_i64(m.length1) - as_i64(m.length2)),
                            E::Drop(d) => -as_i64(d.length),
                            _ => 0,
                        };
                        held.set(held.get() + change);
                    }
                },
            );
        }
        let mut resolver = Resolver::new(&view, window);
        let updates = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let seen = std::rc::Rc::clone(&updates);
        let (mut input, probe) = worker.dataflow::<Time, _, _>(move |scope| {
            let (input, stream) = scope.new_input::<Vec<(Routed, Time, isize)>>();
            let rows = rows_of(&view, 0, stream.as_collection(), |_| true);
            let (probe, _) = rows
                .inspect_batch(move |_, batch| seen.set(seen.get() + batch.len() as u64))
                .probe();
            (input, probe)
        });
        // Only the dataflow's work is timed, not making the inputs.
        let mut busy = std::time::Duration::ZERO;
        let mut time: Time = 0;
        while let Some((today, batch)) = epoch(time as usize) {
            let updates = resolver.updates(today, batch);
            let started = std::time::Instant::now();
            for (update, diff) in updates {
                input.send((update, time, diff));
            }
            time += 1;
            input.advance_to(time);
            while probe.less_than(&time) {
                worker.step();
            }
            busy += started.elapsed();
        }
        let measured = Measured {
            seconds: busy.as_secs_f64(),
            output_updates: updates.get(),
            resident_bytes: resident_bytes(),
            arranged_updates: u64::try_from(held.get()).unwrap_or_default(),
        };
        input.close();
        while !probe.done() {
            worker.step();
        }
        measured
    })
}
