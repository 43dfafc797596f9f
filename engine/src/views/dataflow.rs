//! The views inside the engine's dataflow: every enabled view over the events and persons of
//! its teams, and the rows they write.

use differential_dataflow::{AsCollection, VecCollection};
use hogstream_sinks::OutputBatch;
use timely::dataflow::{Stream, operators::Concatenate};

use super::{
    Input, Rows, Time, View,
    input::{Routed, ViewUpdate},
    output,
    registry::ActiveView,
};

/// `view`, the active view number `index`, over the updates for it of the teams `counts`
/// accepts.
pub(crate) fn rows_of<'s>(
    view: &dyn View,
    index: u16,
    updates: VecCollection<'s, Time, Routed>,
    counts: impl Fn(i64) -> bool + Clone + 'static,
) -> Rows<'s> {
    let of_team = counts.clone();
    let mine = updates.filter(move |(to, _)| to.is_none_or(|to| to == index));
    let events = mine.clone().flat_map(move |(_, u)| match u {
        ViewUpdate::Event(e) if of_team(e.team_id) => Some(e),
        _ => None,
    });
    let persons = mine.flat_map(move |(_, u)| match u {
        ViewUpdate::Person(p) if counts(p.team_id) => Some(p),
        _ => None,
    });
    view.build(Input { events, persons })
}

/// Every active view over `updates` (events with their current person, and persons), as
/// batches of rows for the sink, every row's version above `versions_above`.
pub(crate) fn build<'s>(
    updates: Stream<'s, Time, Vec<(Routed, Time, isize)>>,
    active: &[ActiveView],
    versions_above: u64,
) -> Stream<'s, Time, Vec<OutputBatch>> {
    let scope = updates.scope();
    let updates = updates.as_collection();
    let outputs: Vec<Stream<'s, Time, Vec<OutputBatch>>> = active
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let active = v.clone();
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let rows = rows_of(&*v.view, index, updates.clone(), move |team| {
                active.counts(team)
            });
            output::write(rows, v.table(), v.view.table(), v.window, versions_above)
        })
        .collect();
    scope.concatenate(outputs)
}
