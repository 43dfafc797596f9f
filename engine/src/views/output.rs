//! From a view's changes to rows of its table.
//!
//! A view's result changes per epoch by retractions and additions. Once every change of an
//! epoch is known (the input frontier passed it), each key that changed gets one row: its new
//! result, or, when the key's result is gone, a `_deleted` row. Rows carry a version that grows
//! with every write, so `SELECT … FINAL` shows exactly the current result. The keys are spread
//! over the workers by hash, so each key is always written by one worker at a time.

use std::collections::BTreeMap;

use differential_dataflow::consolidation::consolidate;
use hogstream_sinks::OutputBatch;
use timely::{
    container::CapacityContainerBuilder,
    dataflow::{
        Stream,
        channels::pact::Exchange,
        operators::{Capability, generic::Operator},
    },
};
use xxhash_rust::xxh3::xxh3_64;

use super::{Row, Rows, TableSpec, Time, registry::Window};
use crate::process::Versions;

/// The rows one epoch's changes make: `(row, deleted)` per changed key, in key order.
pub(crate) fn rows_of_changes(mut changes: Vec<(Row, isize)>) -> Vec<(Row, bool)> {
    consolidate(&mut changes);
    let mut out: Vec<(Row, bool)> = Vec::new();
    let mut i = 0;
    while i < changes.len() {
        let same_key = |r: &Row| r.team_id == changes[i].0.team_id && r.key == changes[i].0.key;
        let end = i + changes[i..].iter().take_while(|(r, _)| same_key(r)).count();
        let group = &changes[i..end];
        let live: Vec<&Row> = group
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(r, _)| r)
            .collect();
        if live.len() > 1 {
            // A view must hold one row per key; keep writing a deterministic one, loudly.
            metrics::counter!("hogstream_view_row_errors_total", "reason" => "two rows for one key")
                .increment(1);
            tracing::error!(row = ?live[0], "a view produced more than one row for one key");
        }
        match live.last() {
            Some(row) => out.push(((*row).clone(), false)),
            None => out.push((group[0].0.clone(), true)),
        }
        i = end;
    }
    out
}

fn hash_key(row: &Row) -> u64 {
    let mut bytes = row.team_id.to_be_bytes().to_vec();
    bytes.extend(postcard_key(&row.key));
    xxh3_64(&bytes)
}

fn postcard_key(key: &[super::Value]) -> Vec<u8> {
    // Only for spreading keys over workers: any stable encoding will do.
    format!("{key:?}").into_bytes()
}

/// An epoch's changes, and the capability to emit its rows once they are all known.
type Pending = (Capability<Time>, Vec<(Row, isize)>);

/// Writes `rows` to `table` as batches for the sink, one per epoch that changed something.
pub(crate) fn write<'s>(
    rows: Rows<'s>,
    table: String,
    spec: TableSpec,
    window: Option<Window>,
    versions_above: u64,
) -> Stream<'s, Time, Vec<OutputBatch>> {
    let exchange = Exchange::new(|(row, _, _): &(Row, Time, isize)| hash_key(row));
    rows.inner.unary_frontier::<CapacityContainerBuilder<Vec<OutputBatch>>, _, _, _>(
        exchange,
        "view-rows",
        move |_cap, _info| {
            let mut pending: BTreeMap<Time, Pending> = BTreeMap::new();
            // Above this run's start even if the clock steps back: the sweep after a restart
            // removes only rows of earlier runs.
            let mut versions = Versions::above(versions_above);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for (row, time, diff) in data.drain(..) {
                        pending
                            .entry(time)
                            .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                            .1
                            .push((row, diff));
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, changes) = entry.remove();
                    let mut lines = Vec::new();
                    let mut bytes = 0;
                    let today = super::input::today();
                    for (row, deleted) in rows_of_changes(changes) {
                        // A row whose day left the window is final: what its events' leaving
                        // (or a late event) would change is not written.
                        if window.is_some_and(|w| w.is_final(&row, today)) {
                            continue;
                        }
                        match spec.json_line(&row, versions.next(), deleted) {
                            Ok(line) => {
                                bytes += line.len();
                                lines.push(line);
                            }
                            Err(reason) => {
                                metrics::counter!("hogstream_view_row_errors_total", "reason" => "does not fit the table")
                                    .increment(1);
                                tracing::error!(table, reason, row = ?row, "a view row does not fit its table; left out");
                            }
                        }
                    }
                    if lines.is_empty() {
                        continue;
                    }
                    metrics::counter!("hogstream_view_rows_total", "table" => table.clone())
                        .increment(lines.len() as u64);
                    let mut batch = OutputBatch {
                        bytes,
                        ..OutputBatch::default()
                    };
                    batch.views.insert(table.clone(), lines);
                    output.session(&cap).give(batch);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::Value;

    fn row(team: i64, key: &str, value: u64) -> Row {
        Row {
            team_id: team,
            key: vec![Value::Str(key.into())],
            values: vec![Value::UInt(value)],
        }
    }

    #[test]
    fn each_changed_key_becomes_its_new_row_or_a_deletion() {
        let rows = rows_of_changes(vec![
            (row(1, "a", 1), -1),
            (row(1, "a", 2), 1),
            (row(1, "b", 5), -1),
            (row(2, "a", 3), 1),
            // Cancels out: no change, no row.
            (row(3, "c", 1), 1),
            (row(3, "c", 1), -1),
        ]);
        assert_eq!(
            rows,
            vec![
                (row(1, "a", 2), false),
                (row(1, "b", 5), true),
                (row(2, "a", 3), false),
            ]
        );
    }
}
