//! The official `clickhouse` crate works unchanged, with its default settings (LZ4 inserts,
//! validated `RowBinaryWithNamesAndTypes` reads), against the project's ClickHouse.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct Item {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    kind: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    at: DateTime<Utc>,
    body: String,
    version: u64,
}

fn client() -> Client {
    Client::default().with_url(common::require_clickhouse())
}

async fn table(c: &Client) -> String {
    let name = common::unique("smoke_items");
    c.query(&format!(
        "CREATE TABLE {name} (id UUID, kind LowCardinality(String), at DateTime64(6, 'UTC'), body String, version UInt64)
         ENGINE = ReplacingMergeTree(version) ORDER BY id"
    ))
    .execute()
    .await
    .unwrap();
    name
}

fn item(n: u128, version: u64) -> Item {
    Item {
        id: Uuid::from_u128(n),
        kind: format!("kind-{}", n % 3),
        at: Utc
            .timestamp_micros(1_700_000_000_123_456 + n as i64)
            .unwrap(),
        body: format!("body {n} v{version} ünïcödé \t \"quoted\""),
        version,
    }
}

#[tokio::test]
async fn replacing_merge_tree_round_trip_with_final() {
    let c = client();
    let t = table(&c).await;
    for version in [1, 2] {
        let mut insert = c.insert::<Item>(&t).await.unwrap();
        for n in 0..1000 {
            insert.write(&item(n, version)).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    let rows: Vec<Item> = c
        .query(&format!("SELECT ?fields FROM {t} FINAL ORDER BY id"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000, "FINAL keeps one row per id");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(
            *row,
            item(n as u128, 2),
            "the latest version wins, every column exact"
        );
    }
    let total: u64 = c
        .query(&format!("SELECT count() FROM {t}"))
        .fetch_one()
        .await
        .unwrap();
    assert!(total >= 1000, "both versions were stored before merging");
}

#[tokio::test]
async fn parameters_settings_and_dedup_tokens() {
    let c = client();
    let t = table(&c).await;
    for _ in 0..2 {
        let mut insert = c
            .insert::<Item>(&t)
            .await
            .unwrap()
            .with_setting("insert_deduplication_token", "same-token");
        insert.write(&item(1, 1)).await.unwrap();
        insert.end().await.unwrap();
    }
    let n: u64 = c
        .query(&format!("SELECT count() FROM {t}"))
        .fetch_one()
        .await
        .unwrap();
    // Plain MergeTree deduplicates by token only with a deduplication window; this table has none,
    // so both inserts land: the token is passed through, not swallowed.
    assert_eq!(n, 2);

    let kind: String = c
        .query(&format!(
            "SELECT kind FROM {t} WHERE id = {{id:UUID}} LIMIT 1"
        ))
        .param("id", Uuid::from_u128(1))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(kind, "kind-1");

    let setting: String = c
        .query("SELECT getSetting('max_block_size')::String")
        .with_setting("max_block_size", "1234")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(setting, "1234");
}

#[tokio::test]
async fn deduplication_window_drops_a_repeated_token() {
    let c = client();
    let t = common::unique("smoke_dedup");
    c.query(&format!(
        "CREATE TABLE {t} (id UUID, kind LowCardinality(String), at DateTime64(6, 'UTC'), body String, version UInt64)
         ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100"
    ))
    .execute()
    .await
    .unwrap();
    for attempt in 0..3 {
        let mut insert = c
            .insert::<Item>(&t)
            .await
            .unwrap()
            .with_setting("insert_deduplication_token", "tok-a");
        insert.write(&item(attempt, 1)).await.unwrap();
        insert.end().await.unwrap();
    }
    let n: u64 = c
        .query(&format!("SELECT count() FROM {t}"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 1, "a retried insert with the same token is stored once");
}

#[tokio::test]
async fn errors_carry_the_clickhouse_exception_code() {
    let c = client();
    let err = c
        .query("SELECT * FROM no_such_table_here")
        .fetch_all::<u8>()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("60") && text.contains("no_such_table_here"),
        "{text}"
    );
}

#[tokio::test]
async fn a_corrupted_compressed_block_is_refused_and_inserts_nothing() {
    let c = client();
    let t = table(&c).await;
    // One LZ4-framed block whose checksum is wrong: 16 checksum bytes, method 0x82, sizes, data.
    let data = b"\x00\x11";
    let mut block = vec![0xAB; 16];
    block.push(0x82);
    block.extend_from_slice(&((9 + data.len()) as u32).to_le_bytes());
    block.extend_from_slice(&4u32.to_le_bytes());
    block.extend_from_slice(data);
    let query = format!("INSERT INTO {t} (id, kind, at, body, version) FORMAT RowBinary");
    let response = reqwest::Client::new()
        .post(common::clickhouse_url())
        .query(&[("query", query.as_str()), ("decompress", "1")])
        .body(block)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    assert_eq!(
        response
            .headers()
            .get("X-ClickHouse-Exception-Code")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("40".to_owned()),
        "CHECKSUM_DOESNT_MATCH"
    );
    let n: u64 = c
        .query(&format!("SELECT count() FROM {t}"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 0);
}
