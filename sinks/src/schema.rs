//! PostHog's ClickHouse schema (`docs/posthog-rules.md` §4), created and migrated by hogstream.
//!
//! Migrations are append-only: a released migration is never edited, a change is a new entry.
//! Applied versions are recorded in `hogstream_migrations`; the engine refuses to start on a
//! database that is behind this build.
//!
//! Differences from PostHog, on purpose:
//! - plain (non-replicated) `ReplacingMergeTree` on a single node, with
//!   `non_replicated_deduplication_window` so `insert_deduplication_token` works;
//! - every `ReplacingMergeTree` has an explicit version column that grows with each write, so the
//!   last write wins even within one second (PostHog's `events` and `groups` use `_timestamp`).

use clickhouse::Client;

use crate::{error::SinkError, tables};

/// How many recent insert blocks each table remembers for token deduplication.
const DEDUP_WINDOW: u32 = 10_000;

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// Statements with `{db}` standing for the database name and `{dedup}` for the window.
    pub statements: &'static [&'static str],
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "posthog tables",
        statements: &[
            tables::events::CREATE,
            tables::person::CREATE,
            tables::person_distinct_id2::CREATE,
            tables::person_distinct_id_overrides::CREATE,
            tables::groups::CREATE,
            tables::group_type_mapping::CREATE,
            tables::ingestion_warnings::CREATE,
        ],
    },
    Migration {
        version: 2,
        name: "dead-letter redrive ledger",
        // One row per dead letter `hogstream dlq redrive` re-produced, written after Kafka
        // acknowledged it: a second redrive of the same entry is refused unless forced.
        statements: &[tables::dlq_redrives::CREATE],
    },
    Migration {
        version: 3,
        name: "deduplicated ingestion warnings",
        // A replay re-processes events and raises their warnings again, with the same time
        // (capture's receipt) and details: keyed by those, the copies collapse like events do.
        statements: &tables::ingestion_warnings::DEDUPLICATE,
    },
];

/// The migration version this build needs.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn render(statement: &str, database: &str) -> String {
    statement
        .replace("{db}", &format!("`{database}`"))
        .replace("{dedup}", &DEDUP_WINDOW.to_string())
}

async fn ensure_bookkeeping(client: &Client, database: &str) -> Result<(), SinkError> {
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
        .execute()
        .await?;
    client
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS `{database}`.hogstream_migrations (
                version UInt32, name String, applied_at DateTime DEFAULT now()
            ) ENGINE = ReplacingMergeTree ORDER BY version"
        ))
        .execute()
        .await?;
    Ok(())
}

/// The highest applied migration, 0 for an empty database.
pub async fn applied_version(client: &Client, database: &str) -> Result<u32, SinkError> {
    let exists: u8 = client
        .query("SELECT count() > 0 FROM system.tables WHERE database = ? AND name = 'hogstream_migrations'")
        .bind(database)
        .fetch_one()
        .await?;
    if exists == 0 {
        return Ok(0);
    }
    Ok(client
        .query(&format!(
            "SELECT toUInt32(max(version)) FROM `{database}`.hogstream_migrations"
        ))
        .fetch_one()
        .await?)
}

/// Applies every migration the database lacks, in order; returns the versions applied.
pub async fn migrate(client: &Client, database: &str) -> Result<Vec<u32>, SinkError> {
    ensure_bookkeeping(client, database).await?;
    let current = applied_version(client, database).await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for statement in m.statements {
            client.query(&render(statement, database)).execute().await?;
        }
        client
            .query(&format!(
                "INSERT INTO `{database}`.hogstream_migrations (version, name) VALUES (?, ?)"
            ))
            .bind(m.version)
            .bind(m.name)
            .execute()
            .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    Ok(applied)
}

/// Fails with a clear message when the database is behind this build.
pub async fn check(client: &Client, database: &str) -> Result<(), SinkError> {
    let found = applied_version(client, database).await?;
    let needed = latest_version();
    if found < needed {
        return Err(SinkError::SchemaOutdated {
            database: database.to_owned(),
            found,
            needed,
        });
    }
    Ok(())
}

/// Creates a view's table (a statement with `{db}` and `{dedup}`, made from the view's
/// declaration) unless it exists.
pub async fn create_view_table(
    client: &Client,
    database: &str,
    statement: &str,
) -> Result<(), SinkError> {
    client.query(&render(statement, database)).execute().await?;
    Ok(())
}

/// Fails with a clear message unless `table` exists with exactly `columns` (name, type).
pub async fn check_view_table(
    client: &Client,
    database: &str,
    table: &str,
    columns: &[(String, String)],
) -> Result<(), SinkError> {
    let found: Vec<(String, String)> = client
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ? ORDER BY position")
        .bind(database)
        .bind(table)
        .fetch_all()
        .await?;
    if found.is_empty() {
        return Err(SinkError::Config(format!(
            "view table `{database}`.`{table}` does not exist: run `hogstream migrate`"
        )));
    }
    if found != columns {
        let show = |c: &[(String, String)]| {
            c.iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(SinkError::Config(format!(
            "view table `{database}`.`{table}` has columns ({}) but the view declares ({}): a view's table is never altered in place; drop it (or rename the view) and run `hogstream migrate`",
            show(&found),
            show(columns)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing_and_rendered() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.version);
            last = m.version;
            for s in m.statements {
                let sql = render(s, "db1");
                assert!(!sql.contains("{db}") && !sql.contains("{dedup}"));
                assert!(sql.contains("`db1`."));
            }
        }
        assert_eq!(latest_version(), last);
    }
}
