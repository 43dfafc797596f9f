//! The views inside the engine's dataflow: every enabled view over the events of its teams,
//! and the rows they write.

use differential_dataflow::AsCollection;
use hogstream_sinks::OutputBatch;
use timely::dataflow::{Stream, operators::Concatenate};

use super::{Time, ViewEvent, output, registry::ActiveView};

/// Every active view over `events` (updates with their current person), as batches of rows
/// for the sink.
pub(crate) fn build<'s>(
    events: Stream<'s, Time, Vec<(ViewEvent, Time, isize)>>,
    active: &[ActiveView],
) -> Stream<'s, Time, Vec<OutputBatch>> {
    let scope = events.scope();
    let events = events.as_collection();
    let outputs: Vec<Stream<'s, Time, Vec<OutputBatch>>> = active
        .iter()
        .map(|v| {
            let active = v.clone();
            let mine = events.clone().filter(move |e| active.counts(e.team_id));
            output::write(v.view.build(mine), v.table(), v.view.table())
        })
        .collect();
    scope.concatenate(outputs)
}
