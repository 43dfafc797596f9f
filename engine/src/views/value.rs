//! The columns of a view's table and the values in them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value in a view's row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Str(String),
    Uuid(Uuid),
    /// Days since the Unix epoch.
    Date(i32),
    /// Microseconds since the Unix epoch, UTC.
    Time(i64),
}

/// A column's ClickHouse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int64,
    UInt64,
    String,
    Uuid,
    Date,
    /// `DateTime64(6, 'UTC')`.
    DateTime,
}

impl Kind {
    pub fn clickhouse(self) -> &'static str {
        match self {
            Kind::Int64 => "Int64",
            Kind::UInt64 => "UInt64",
            Kind::String => "String",
            Kind::Uuid => "UUID",
            Kind::Date => "Date32",
            Kind::DateTime => "DateTime64(6, 'UTC')",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (Kind::Int64, Value::Int(_))
                | (Kind::UInt64, Value::UInt(_))
                | (Kind::String, Value::Str(_))
                | (Kind::Uuid, Value::Uuid(_))
                | (Kind::Date, Value::Date(_))
                | (Kind::DateTime, Value::Time(_))
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

impl Column {
    pub const fn new(name: &'static str, kind: Kind) -> Self {
        Self { name, kind }
    }
}

/// A view's table: `team_id`, then the key columns (its `ORDER BY`, one row per key), then
/// the value columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub key: Vec<Column>,
    pub values: Vec<Column>,
}

/// Columns every view table has besides the declared ones.
pub(crate) const RESERVED: &[&str] = &["team_id", "_version", "_deleted"];

impl TableSpec {
    /// Why this spec cannot be a table, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.key.is_empty() {
            return Some("a view's table needs at least one key column".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in self.key.iter().chain(&self.values) {
            if !is_identifier(c.name) {
                return Some(format!(
                    "column `{}`: use lower-case letters, digits and _",
                    c.name
                ));
            }
            if RESERVED.contains(&c.name) {
                return Some(format!("column `{}` is reserved", c.name));
            }
            if !seen.insert(c.name) {
                return Some(format!("column `{}` is declared twice", c.name));
            }
        }
        None
    }

    /// The statement creating the table, `{db}` standing for the database. `_deleted` rows and
    /// older versions of a key disappear under `FINAL`.
    pub(crate) fn create_statement(&self, table: &str) -> String {
        let columns: Vec<String> = std::iter::once("team_id Int64".to_string())
            .chain(
                self.key
                    .iter()
                    .chain(&self.values)
                    .map(|c| format!("`{}` {}", c.name, c.kind.clickhouse())),
            )
            .chain(["_version UInt64".into(), "_deleted UInt8".into()])
            .collect();
        let order: Vec<String> = std::iter::once("team_id".to_string())
            .chain(self.key.iter().map(|c| format!("`{}`", c.name)))
            .collect();
        format!(
            "CREATE TABLE IF NOT EXISTS {{db}}.`{table}` ({}) ENGINE = ReplacingMergeTree(_version, _deleted) ORDER BY ({}) SETTINGS non_replicated_deduplication_window = {{dedup}}",
            columns.join(", "),
            order.join(", ")
        )
    }

    /// The statement that deletes, in `{db}`.`table`, every row written before `version` (by an
    /// earlier run) that is still live: run once a restart's rebuilt rows are stored, it
    /// removes the results that vanished while no run could write their deletion. Later rows
    /// all have greater versions, so it never hides one of them.
    /// With `open_from` (a `Date` column and the first day whose rows are not final), only
    /// rows of that day on are swept: final rows of a windowed view stay as written.
    pub(crate) fn sweep_statement(
        &self,
        table: &str,
        version: u64,
        open_from: Option<(&str, i32)>,
    ) -> String {
        let columns: Vec<String> = std::iter::once("team_id".to_string())
            .chain(
                self.key
                    .iter()
                    .chain(&self.values)
                    .map(|c| format!("`{}`", c.name)),
            )
            .collect();
        let columns = columns.join(", ");
        let open = open_from
            .and_then(|(column, day)| {
                Some(format!(" AND `{column}` >= toDate32('{}')", date(day)?))
            })
            .unwrap_or_default();
        format!(
            "INSERT INTO {{db}}.`{table}` ({columns}, _version, _deleted) SELECT {columns}, {version}, 1 FROM {{db}}.`{table}` FINAL WHERE _version < {version}{open}"
        )
    }

    /// The columns and their ClickHouse types, as `system.columns` lists them.
    pub fn columns(&self) -> Vec<(String, String)> {
        std::iter::once(("team_id".to_string(), "Int64".to_string()))
            .chain(
                self.key
                    .iter()
                    .chain(&self.values)
                    .map(|c| (c.name.to_string(), c.kind.clickhouse().to_string())),
            )
            .chain([
                ("_version".into(), "UInt64".into()),
                ("_deleted".into(), "UInt8".into()),
            ])
            .collect()
    }

    /// `row` as one JSONEachRow line, or why it does not fit the table.
    pub(crate) fn json_line(
        &self,
        row: &super::Row,
        version: u64,
        deleted: bool,
    ) -> Result<String, String> {
        if row.key.len() != self.key.len() || row.values.len() != self.values.len() {
            return Err(format!(
                "row has {} key and {} value columns, the table {} and {}",
                row.key.len(),
                row.values.len(),
                self.key.len(),
                self.values.len()
            ));
        }
        let mut line = serde_json::Map::new();
        line.insert("team_id".into(), row.team_id.into());
        for (c, v) in self
            .key
            .iter()
            .chain(&self.values)
            .zip(row.key.iter().chain(&row.values))
        {
            if !c.kind.accepts(v) {
                return Err(format!(
                    "column `{}` is {:?}, the row has {v:?}",
                    c.name, c.kind
                ));
            }
            let value = json(v).ok_or_else(|| {
                format!(
                    "column `{}`: {v:?} is outside ClickHouse's dates (1900 to 2299)",
                    c.name
                )
            })?;
            line.insert(c.name.into(), value);
        }
        line.insert("_version".into(), version.into());
        line.insert("_deleted".into(), u8::from(deleted).into());
        Ok(serde_json::Value::Object(line).to_string())
    }
}

pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The first and last days ClickHouse's `Date32` and `DateTime64` hold: 1900-01-01 and
/// 2299-12-31, as days since the Unix epoch.
const FIRST_DAY: i32 = -25_567;
const LAST_DAY: i32 = 120_529;

/// `day` (days since the Unix epoch) as `YYYY-MM-DD`, if ClickHouse can hold it.
fn date(day: i32) -> Option<String> {
    if !(FIRST_DAY..=LAST_DAY).contains(&day) {
        return None;
    }
    let date = chrono::DateTime::UNIX_EPOCH.date_naive();
    let date = if day >= 0 {
        date.checked_add_days(chrono::Days::new(u64::from(day.unsigned_abs())))?
    } else {
        date.checked_sub_days(chrono::Days::new(u64::from(day.unsigned_abs())))?
    };
    Some(date.to_string())
}

/// `v` as JSONEachRow wants it, if ClickHouse can hold it.
fn json(v: &Value) -> Option<serde_json::Value> {
    Some(match v {
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Str(s) => s.clone().into(),
        Value::Uuid(u) => u.to_string().into(),
        Value::Date(d) => date(*d)?.into(),
        Value::Time(t) => {
            let time = chrono::DateTime::from_timestamp_micros(*t)?;
            let day = i32::try_from(t.div_euclid(super::MICROS_PER_DAY)).ok()?;
            date(day)?;
            time.format("%Y-%m-%d %H:%M:%S%.6f").to_string().into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::Row;

    fn spec() -> TableSpec {
        TableSpec {
            key: vec![Column::new("day", Kind::Date)],
            values: vec![
                Column::new("persons", Kind::UInt64),
                Column::new("first", Kind::DateTime),
            ],
        }
    }

    #[test]
    fn rows_become_json_lines_of_the_declared_types() {
        let row = Row {
            team_id: 2,
            key: vec![Value::Date(20_428)],
            values: vec![Value::UInt(5), Value::Time(1_765_000_000_000_001)],
        };
        let line = spec().json_line(&row, 9, false).unwrap();
        assert_eq!(
            line,
            r#"{"team_id":2,"day":"2025-12-06","persons":5,"first":"2025-12-06 05:46:40.000001","_version":9,"_deleted":0}"#
        );
        let wrong = Row {
            values: vec![Value::Str("5".into()), Value::Time(0)],
            ..row.clone()
        };
        assert!(
            spec()
                .json_line(&wrong, 1, false)
                .unwrap_err()
                .contains("persons")
        );
        let short = Row {
            key: vec![],
            ..row.clone()
        };
        assert!(spec().json_line(&short, 1, true).is_err());
        // Outside ClickHouse's dates: refused, never written as something else.
        let ancient = Row {
            key: vec![Value::Date(-30_000)],
            ..row.clone()
        };
        assert!(
            spec()
                .json_line(&ancient, 1, false)
                .unwrap_err()
                .contains("1900")
        );
        let far = Row {
            values: vec![Value::UInt(1), Value::Time(i64::MAX)],
            ..row
        };
        assert!(spec().json_line(&far, 1, false).is_err());
        assert_eq!(date(-25_567).as_deref(), Some("1900-01-01"));
        assert_eq!(date(120_529).as_deref(), Some("2299-12-31"));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(spec().problem().is_none());
        let mut s = spec();
        s.values.push(Column::new("_version", Kind::UInt64));
        assert!(s.problem().unwrap().contains("reserved"));
        let mut s = spec();
        s.values.push(Column::new("day", Kind::UInt64));
        assert!(s.problem().unwrap().contains("twice"));
        let mut s = spec();
        s.key[0].name = "Day";
        assert!(s.problem().is_some());
        assert!(
            TableSpec {
                key: vec![],
                values: vec![]
            }
            .problem()
            .is_some()
        );
        let ddl = spec().create_statement("view_x");
        assert!(
            ddl.contains("ReplacingMergeTree(_version, _deleted) ORDER BY (team_id, `day`)"),
            "{ddl}"
        );
    }
}
