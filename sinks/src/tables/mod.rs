//! One module per ClickHouse table hogstream writes: its row type, its name, what the insert
//! deduplication token of a batch of its rows is made of, and the statements of its
//! migrations (which `schema.rs` lists by version). Adding a table: a module here, a field in
//! `batch.rs`'s table list, and a new migration in `schema.rs`.

use xxhash_rust::xxh3::Xxh3;

pub mod dlq_redrives;
pub mod events;
pub mod group_type_mapping;
pub mod groups;
pub mod ingestion_warnings;
mod jsonb;
pub mod person;
pub mod person_distinct_id2;
pub mod person_distinct_id_overrides;

/// A table the sink inserts rows into.
pub trait Table {
    const NAME: &'static str;
    type Row;
    /// Feeds what identifies `row` (never timing) into a batch's deduplication token.
    fn identify(h: &mut Xxh3, row: &Self::Row);
}

/// A token made only of what identifies the rows, so the same rows always carry the same
/// token: ClickHouse then drops a repeated insert of them.
pub fn token<T: Table>(rows: &[T::Row]) -> String {
    let mut h = Xxh3::new();
    h.update(T::NAME.as_bytes());
    for row in rows {
        T::identify(&mut h, row);
    }
    format!("hs-{:032x}", h.digest128())
}
