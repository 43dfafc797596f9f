//! The views inside the engine's dataflow: every enabled view over the events and persons of
//! its teams, and the rows they write.

use differential_dataflow::{AsCollection, VecCollection};
use hogstream_sinks::OutputBatch;
use timely::dataflow::{Stream, operators::Concatenate};

use super::{Input, Rows, Time, View, input::ViewUpdate, output, registry::ActiveView};

/// `view` over the updates of the teams `counts` accepts.
pub(crate) fn rows_of<'s>(
    view: &dyn View,
    updates: VecCollection<'s, Time, ViewUpdate>,
    counts: impl Fn(i64) -> bool + Clone + 'static,
) -> Rows<'s> {
    let of_team = counts.clone();
    let events = updates.clone().flat_map(move |u| match u {
        ViewUpdate::Event(e) if of_team(e.team_id) => Some(e),
        _ => None,
    });
    let persons = updates.flat_map(move |u| match u {
        ViewUpdate::Person(p) if counts(p.team_id) => Some(p),
        _ => None,
    });
    view.build(Input { events, persons })
}

/// Every active view over `updates` (events with their current person, and persons), as
/// batches of rows for the sink.
pub(crate) fn build<'s>(
    updates: Stream<'s, Time, Vec<(ViewUpdate, Time, isize)>>,
    active: &[ActiveView],
) -> Stream<'s, Time, Vec<OutputBatch>> {
    let scope = updates.scope();
    let updates = updates.as_collection();
    let outputs: Vec<Stream<'s, Time, Vec<OutputBatch>>> = active
        .iter()
        .map(|v| {
            let active = v.clone();
            let rows = rows_of(&*v.view, updates.clone(), move |team| active.counts(team));
            output::write(rows, v.table(), v.view.table())
        })
        .collect();
    scope.concatenate(outputs)
}
