//! `hogstream dlq`: list, show and redrive the dead letters in `[kafka] dlq_topic`.
//!
//! A redrive re-produces a dead letter (its stored payload, or an operator's fixed one) into the
//! engine's main input topic, once: every redrive is recorded in the ClickHouse table
//! `dlq_redrives` after Kafka acknowledged it, and an entry found there is refused unless forced.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use hogstream_engine::{
    normalize::{Outcome, Rules, normalize},
    teams::Teams,
};
use hogstream_event::{CapturedEvent, headers, time::parse_rfc3339};
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::FutureRecord,
};

use hogstream_sinks::tables::dlq_redrives::{self, RedriveRow as Redrive};

use crate::{
    config::Config,
    kafka_tools::{self, Deliveries, Landed, RangeReader, parse_position},
};

/// The header with the dead letter's source `topic/partition/offset`.
pub const DLQ_ORIGIN: &str = "dlq_origin";

/// The redrive ledger's rows of one dead-letter topic; callers may add conditions.
const LEDGER_SELECT: &str = "SELECT topic, `partition`, `offset`, redriven_at, into_topic, \
     payload_replaced FROM dlq_redrives FINAL WHERE topic = ?";
/// Ledger rows written per insert during `redrive --all`.
const LEDGER_BATCH: usize = 500;

#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// Table of dead letters: partition, offset, time, failed step, reason, origin, payload size
    /// and whether it was redriven.
    List {
        /// Show at most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start at this offset in every partition [default: the start of the log].
        #[arg(long, value_name = "N")]
        from_offset: Option<i64>,
    },
    /// Headers and payload of one dead letter (pretty JSON when the payload is JSON).
    Show {
        /// The entry, as `dlq list` shows it.
        #[arg(value_name = "PARTITION:OFFSET", value_parser = parse_position)]
        entry: (i32, i64),
    },
    /// Re-produce dead letters into the engine's main input topic, each once.
    #[command(after_help = "\
Each entry is redriven once: the redrive is recorded in ClickHouse (table dlq_redrives, created \
by `hogstream migrate`) after Kafka acknowledged it, and a second redrive of the same entry is \
refused unless --force. A payload this build's engine would dead-letter again or drop (e.g. an \
unknown token) is refused too (fix it into a file and pass --payload-file). Events are \
deduplicated by uuid, so a forced second redrive does not duplicate them in ClickHouse.")]
    Redrive(RedriveArgs),
}

#[derive(clap::Args, Debug)]
pub struct RedriveArgs {
    /// The entry to redrive, as `dlq list` shows it.
    #[arg(
        value_name = "PARTITION:OFFSET",
        value_parser = parse_position,
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub entry: Option<(i32, i64)>,
    /// Produce the content of this file instead of the stored payload (a fixed event); `-`
    /// reads it from stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    pub payload_file: Option<PathBuf>,
    /// Every entry not redriven yet whose payload the engine can now process (capture's
    /// quarantines, `dlq_step` = capture, included unless --step says otherwise).
    #[arg(long)]
    pub all: bool,
    /// With --all: only entries whose `dlq_step` header is this (e.g. `normalize`, `capture`).
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// Redrive even if the entry was redriven before, or its payload would fail again.
    #[arg(long, conflicts_with = "all")]
    pub force: bool,
    /// Topic to produce into [default: the first of `[kafka] input_topics`].
    #[arg(long, value_name = "TOPIC")]
    pub into: Option<String>,
}

/// One dead letter, copied out of Kafka.
#[derive(Debug, Clone)]
struct Entry {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Entry {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn payload_len(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// `dlq_timestamp` as the engine (epoch milliseconds) or capture (RFC 3339) wrote it.
fn display_time(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "-".into();
    };
    match raw
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
    {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => raw.to_owned(),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The payload for a person: pretty JSON when it parses, else escaped bytes.
fn render_payload(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => serde_json::to_string_pretty(&v).expect("a JSON value serializes"),
        Err(_) => payload.escape_ascii().to_string(),
    }
}

/// The headers of a redriven message: the stored ones without the dead-letter bookkeeping. With
/// a replaced payload, the identity headers capture derives from the event are taken from the
/// new payload instead, so the engine routes it by the fixed event.
fn redrive_headers(
    stored: &[(String, Option<Vec<u8>>)],
    replaced: Option<&CapturedEvent>,
) -> Vec<(String, Option<Vec<u8>>)> {
    const DERIVED: &[&str] = &[
        headers::TOKEN,
        headers::DISTINCT_ID,
        headers::SESSION_ID,
        headers::TIMESTAMP,
        headers::EVENT,
        headers::UUID,
        headers::NOW,
    ];
    let bookkeeping = [
        headers::DLQ_REASON,
        headers::DLQ_STEP,
        headers::DLQ_TIMESTAMP,
        DLQ_ORIGIN,
    ];
    let mut out: Vec<_> = stored
        .iter()
        .filter(|(k, _)| !bookkeeping.contains(&k.as_str()))
        .filter(|(k, _)| replaced.is_none() || !DERIVED.contains(&k.as_str()))
        .cloned()
        .collect();
    if let Some(e) = replaced {
        let mut set = |k: &str, v: String| out.push((k.to_owned(), Some(v.into_bytes())));
        set(headers::TOKEN, e.token.clone());
        set(headers::DISTINCT_ID, e.distinct_id.clone());
        set(headers::EVENT, e.event.clone());
        set(headers::UUID, e.uuid.to_string());
        set(headers::NOW, e.now.clone());
        if let Some(t) = parse_rfc3339(&e.timestamp) {
            set(headers::TIMESTAMP, t.timestamp_millis().to_string());
        }
    }
    out
}

/// `dlq_redrives` in the pipeline's ClickHouse database.
struct Ledger {
    admin: clickhouse::Client,
    client: clickhouse::Client,
    database: String,
}

impl Ledger {
    fn new(config: &Config) -> Self {
        let admin = config.clickhouse.client();
        Self {
            client: admin.clone().with_database(&config.clickhouse.database),
            admin,
            database: config.clickhouse.database.clone(),
        }
    }

    /// Fails unless the database has the ledger (migration 2 or later).
    async fn require(&self) -> Result<()> {
        hogstream_sinks::schema::check(&self.admin, &self.database)
            .await
            .with_context(|| {
                format!(
                    "the redrive ledger `{}`.dlq_redrives is needed to redrive each entry once",
                    self.database
                )
            })
    }

    async fn redrives(&self, topic: &str) -> Result<HashMap<(i32, i64), Redrive>> {
        let rows = self
            .fetch(self.client.query(LEDGER_SELECT).bind(topic))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ((r.partition, r.offset), r))
            .collect())
    }

    async fn lookup(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<Redrive>> {
        let query = format!("{LEDGER_SELECT} AND `partition` = ? AND `offset` = ?");
        let rows = self
            .fetch(
                self.client
                    .query(&query)
                    .bind(topic)
                    .bind(partition)
                    .bind(offset),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn fetch(&self, query: clickhouse::query::Query) -> Result<Vec<Redrive>> {
        query.fetch_all::<Redrive>().await.with_context(|| {
            format!(
                "reading the redrive ledger `{}`.dlq_redrives",
                self.database
            )
        })
    }

    async fn record(&self, rows: &[Redrive]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let write = async {
            let mut insert = self.client.insert::<Redrive>(dlq_redrives::NAME).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        write.await.with_context(|| {
            let entries: Vec<String> = rows
                .iter()
                .map(|r| format!("{}:{}", r.partition, r.offset))
                .collect();
            format!(
                "the entries {entries:?} WERE redriven, but recording that in `{}`.dlq_redrives \
                 failed: do not redrive them again",
                self.database
            )
        })
    }
}

/// Reads one entry; a clear error when the partition or offset does not hold one.
async fn read_entry(
    consumer: &StreamConsumer,
    topic: &str,
    (partition, offset): (i32, i64),
) -> Result<Entry> {
    let existing = kafka_tools::partitions(consumer, topic)?;
    if !existing.contains(&partition) {
        bail!(
            "no such DLQ entry {partition}:{offset}: `{topic}` has no partition {partition} \
             (it has {})",
            existing.len()
        );
    }
    let (low, high) = kafka_tools::watermarks(consumer, topic, partition)?;
    if offset < low || offset >= high {
        bail!(
            "no such DLQ entry {partition}:{offset}: partition {partition} of `{topic}` holds {}",
            kafka_tools::describe_log(low, high)
        );
    }
    let mut reader = RangeReader::new(consumer, topic, &[(partition, offset, offset + 1)])?;
    match reader.next().await? {
        Some(m) if m.offset() == offset => Ok(Entry::from_message(&m)),
        _ => Err(anyhow!(
            "no such DLQ entry {partition}:{offset}: the log of `{topic}` has no message there"
        )),
    }
}

async fn list(config: &Config, limit: usize, from_offset: Option<i64>) -> Result<()> {
    let topic = &config.kafka.dlq_topic;
    let consumer = kafka_tools::consumer(&config.kafka)?;
    let partitions = kafka_tools::partitions(&consumer, topic)?;
    let mut ranges = Vec::new();
    let mut available = 0u64;
    for &p in &partitions {
        let (low, high) = kafka_tools::watermarks(&consumer, topic, p)?;
        let from = match from_offset {
            Some(o) if o > high => bail!(
                "--from-offset {o} is past the end of `{topic}` partition {p}, which holds {}",
                kafka_tools::describe_log(low, high)
            ),
            Some(o) => o.max(low),
            None => low,
        };
        available += (high - from) as u64;
        // No partition can contribute more than `limit` rows.
        ranges.push((p, from, high.min(from.saturating_add(limit as i64))));
    }
    let mut entries = Vec::new();
    let mut reader = RangeReader::new(&consumer, topic, &ranges)?;
    while let Some(m) = reader.next().await? {
        entries.push(Entry::from_message(&m));
    }
    drop(reader);
    entries.sort_by_key(|e| (e.partition, e.offset));
    entries.truncate(limit);

    let ledger = Ledger::new(config);
    let redriven = match ledger.redrives(topic).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("warning: redrive status unknown: {e:#}");
            None
        }
    };
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let status = match &redriven {
                None => "?".to_owned(),
                Some(r) => match r.get(&(e.partition, e.offset)) {
                    Some(r) => r.redriven_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    None => "no".to_owned(),
                },
            };
            [
                e.partition.to_string(),
                e.offset.to_string(),
                display_time(e.header(headers::DLQ_TIMESTAMP).as_deref()),
                e.header(headers::DLQ_STEP).unwrap_or_else(|| "-".into()),
                shorten(
                    &e.header(headers::DLQ_REASON).unwrap_or_else(|| "-".into()),
                    80,
                ),
                e.header(DLQ_ORIGIN).unwrap_or_else(|| "-".into()),
                e.payload_len().to_string(),
                status,
            ]
        })
        .collect();
    let titles = [
        "partition",
        "offset",
        "dlq_timestamp",
        "dlq_step",
        "dlq_reason",
        "dlq_origin",
        "bytes",
        "redriven",
    ];
    let mut widths = titles.map(|t| t.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(titles.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    let more = available.saturating_sub(rows.len() as u64);
    println!(
        "{} entries shown from `{topic}`{}",
        rows.len(),
        if more > 0 {
            format!("; {more} more (use --limit or --from-offset)")
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn show(config: &Config, entry: (i32, i64)) -> Result<()> {
    let topic = &config.kafka.dlq_topic;
    let consumer = kafka_tools::consumer(&config.kafka)?;
    let e = read_entry(&consumer, topic, entry).await?;
    println!("entry:     {}:{} of `{topic}`", e.partition, e.offset);
    println!(
        "timestamp: {}",
        display_time(e.timestamp_ms.map(|t| t.to_string()).as_deref())
    );
    println!(
        "key:       {}",
        e.key
            .as_deref()
            .map_or("(none)".to_owned(), |k| k.escape_ascii().to_string())
    );
    match Ledger::new(config)
        .lookup(topic, e.partition, e.offset)
        .await
    {
        Ok(Some(r)) => println!(
            "redriven:  {} into `{}`{}",
            r.redriven_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            r.into_topic,
            if r.payload_replaced == 1 {
                " (with a replaced payload)"
            } else {
                ""
            }
        ),
        Ok(None) => println!("redriven:  no"),
        Err(err) => println!("redriven:  unknown ({err:#})"),
    }
    println!("headers:");
    for (k, v) in &e.headers {
        let v = v
            .as_deref()
            .map_or("(null)".to_owned(), |v| match std::str::from_utf8(v) {
                Ok(s) => s.to_owned(),
                Err(_) => v.escape_ascii().to_string(),
            });
        println!("  {k}: {v}");
    }
    match &e.payload {
        None => println!("payload:   (none)"),
        Some(p) => println!("payload ({} bytes):\n{}", p.len(), render_payload(p)),
    }
    Ok(())
}

/// What this build's engine would do with `payload` instead of storing an event, if not that:
/// a redrive happens once, so it should not be spent on a payload that fails or is dropped.
fn would_fail(config: &Config, teams: &Teams, payload: &[u8]) -> Option<String> {
    let team_ids: Vec<i64> = config.teams.iter().map(|t| t.id).collect();
    let rules = Rules {
        drop_events: config.engine.drop_events.clone(),
        // The configuration was validated at load, so the chains build.
        transforms: hogstream_engine::normalize::TeamTransforms(
            crate::plugins::registry()
                .check(&config.plugins, &team_ids)
                .map(|p| p.transforms)
                .unwrap_or_default(),
        ),
    };
    match normalize(payload, false, teams, &rules) {
        Outcome::DeadLetter(reason) => Some(format!("would be dead-lettered again ({reason})")),
        Outcome::Dropped { reason, .. } => {
            Some(format!("would be dropped by the engine ({reason})"))
        }
        Outcome::Event(..) => None,
    }
}

/// Produces `payload` for entry `e` and waits for the acknowledgement.
async fn produce(
    deliveries: &mut Deliveries<'_>,
    into: &str,
    e: &Entry,
    payload: &[u8],
    replaced: bool,
) -> Result<Landed> {
    let fixed = if replaced {
        serde_json::from_slice::<CapturedEvent>(payload).ok()
    } else {
        None
    };
    let key = match &fixed {
        Some(f) => Some(f.partition_key().into_bytes()),
        None => e.key.clone(),
    };
    let mut hdrs = OwnedHeaders::new();
    for (k, v) in redrive_headers(&e.headers, fixed.as_ref()) {
        hdrs = hdrs.insert(Header {
            key: &k,
            value: v.as_deref(),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(into)
        .payload(payload)
        .headers(hdrs);
    if let Some(k) = &key {
        record = record.key(k.as_slice());
    }
    deliveries
        .send(record, format!("DLQ entry {}:{}", e.partition, e.offset))
        .await?;
    deliveries.finish().await?.ok_or_else(|| {
        anyhow!(
            "no acknowledgement for DLQ entry {}:{}",
            e.partition,
            e.offset
        )
    })
}

async fn redrive(config: &Config, args: RedriveArgs) -> Result<()> {
    if args.step.is_some() && !args.all {
        bail!("--step selects entries for --all; a single entry is named by PARTITION:OFFSET");
    }
    let topic = &config.kafka.dlq_topic;
    let into = args
        .into
        .clone()
        .unwrap_or_else(|| config.kafka.input_topics[0].clone());
    let teams = Teams::new(config.teams.clone()).context("[[teams]]")?;
    let ledger = Ledger::new(config);
    ledger.require().await?;
    let consumer = kafka_tools::consumer(&config.kafka)?;
    kafka_tools::partitions(&consumer, &into).context("--into")?;
    let producer = kafka_tools::producer(&config.kafka)?;
    let mut deliveries = Deliveries::new(&producer);

    let Some(position) = args.entry else {
        let only = RedriveAll {
            into: &into,
            step: args.step.as_deref(),
        };
        return redrive_all(config, &teams, &ledger, &consumer, &mut deliveries, only).await;
    };
    let (partition, offset) = position;
    if let Some(r) = ledger.lookup(topic, partition, offset).await?
        && !args.force
    {
        bail!(
            "DLQ entry {partition}:{offset} of `{topic}` was already redriven at {} into `{}`; \
             an entry is redriven only once (pass --force to produce it again)",
            r.redriven_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            r.into_topic
        );
    }
    let e = read_entry(&consumer, topic, position).await?;
    let (payload, replaced) = match &args.payload_file {
        Some(f) if f.as_os_str() == "-" => {
            let mut payload = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut payload)
                .context("cannot read the payload from stdin")?;
            (payload, true)
        }
        Some(f) => (
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
            true,
        ),
        None => (
            e.payload.clone().ok_or_else(|| {
                anyhow!(
                    "DLQ entry {partition}:{offset} has no payload; give one with --payload-file"
                )
            })?,
            false,
        ),
    };
    if let Some(problem) = would_fail(config, &teams, &payload)
        && !args.force
    {
        bail!(
            "the {} of DLQ entry {partition}:{offset} {problem}; write a fixed payload to a file \
             and pass --payload-file (or --force)",
            if replaced {
                "payload file"
            } else {
                "stored payload"
            }
        );
    }
    let landed = produce(&mut deliveries, &into, &e, &payload, replaced).await?;
    ledger
        .record(&[Redrive {
            topic: topic.clone(),
            partition,
            offset,
            redriven_at: Utc::now(),
            into_topic: into.clone(),
            payload_replaced: u8::from(replaced),
        }])
        .await?;
    println!(
        "redrove DLQ entry {partition}:{offset} of `{topic}` ({}) into `{into}` partition {} \
         offset {}",
        if replaced {
            "payload from the file"
        } else {
            "stored payload"
        },
        landed.partition,
        landed.offset
    );
    Ok(())
}

/// What `redrive --all` produces, and where.
struct RedriveAll<'a> {
    into: &'a str,
    step: Option<&'a str>,
}

async fn redrive_all(
    config: &Config,
    teams: &Teams,
    ledger: &Ledger,
    consumer: &StreamConsumer,
    deliveries: &mut Deliveries<'_>,
    RedriveAll { into, step }: RedriveAll<'_>,
) -> Result<()> {
    let topic = &config.kafka.dlq_topic;
    let done = ledger.redrives(topic).await?;
    let mut ranges = Vec::new();
    for p in kafka_tools::partitions(consumer, topic)? {
        let (low, high) = kafka_tools::watermarks(consumer, topic, p)?;
        ranges.push((p, low, high));
    }
    let mut reader = RangeReader::new(consumer, topic, &ranges)?;
    let mut entries = Vec::new();
    let mut other_steps = 0u64;
    while let Some(m) = reader.next().await? {
        if done.contains_key(&(m.partition(), m.offset())) {
            continue;
        }
        let e = Entry::from_message(&m);
        if step.is_some_and(|s| e.header(headers::DLQ_STEP).as_deref() != Some(s)) {
            other_steps += 1;
            continue;
        }
        entries.push(e);
    }
    drop(reader);
    entries.sort_by_key(|e| (e.partition, e.offset));

    let (mut redriven, mut skipped) = (0u64, 0u64);
    let mut pending: Vec<Redrive> = Vec::new();
    let outcome: Result<()> = async {
        for e in &entries {
            let problem = match &e.payload {
                None => Some("has no payload".to_owned()),
                Some(p) => would_fail(config, teams, p),
            };
            if let Some(problem) = problem {
                println!("skipped {}:{}: it {problem}", e.partition, e.offset);
                skipped += 1;
                continue;
            }
            let payload = e.payload.as_deref().expect("checked above");
            produce(deliveries, into, e, payload, false).await?;
            redriven += 1;
            pending.push(Redrive {
                topic: topic.clone(),
                partition: e.partition,
                offset: e.offset,
                redriven_at: Utc::now(),
                into_topic: into.to_owned(),
                payload_replaced: 0,
            });
            if pending.len() >= LEDGER_BATCH {
                ledger.record(&pending).await?;
                pending.clear();
            }
        }
        Ok(())
    }
    .await;
    // Acknowledged redrives are recorded even when a later one failed.
    let recorded = ledger.record(&pending).await;
    outcome?;
    recorded?;
    println!(
        "redrove {redriven} DLQ entries of `{topic}` into `{into}`; {} were redriven before, \
         {skipped} skipped{}",
        done.len(),
        match step {
            Some(s) => format!(", {other_steps} left alone (dlq_step is not `{s}`)"),
            None => String::new(),
        }
    );
    Ok(())
}

pub async fn run(config: &Config, command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List { limit, from_offset } => list(config, limit, from_offset).await,
        DlqCommand::Show { entry } => show(config, entry).await,
        DlqCommand::Redrive(args) => redrive(config, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> (String, Option<Vec<u8>>) {
        (k.to_owned(), Some(v.as_bytes().to_vec()))
    }

    #[test]
    fn redriven_messages_lose_the_dead_letter_headers_only() {
        let stored = vec![
            h("token", "phc_a"),
            h("distinct_id", "old"),
            h(headers::FORCE_DISABLE_PERSON_PROCESSING, "true"),
            h(headers::DLQ_REASON, "bad"),
            h(headers::DLQ_STEP, "normalize"),
            h(headers::DLQ_TIMESTAMP, "1"),
            h(DLQ_ORIGIN, "t/0/1"),
        ];
        let kept = redrive_headers(&stored, None);
        assert_eq!(
            kept,
            vec![
                h("token", "phc_a"),
                h("distinct_id", "old"),
                h(headers::FORCE_DISABLE_PERSON_PROCESSING, "true")
            ]
        );

        let fixed: CapturedEvent = serde_json::from_str(
            r#"{"uuid":"00000000-0000-0000-0000-000000000009","distinct_id":"new","ip":"",
            "data":"{}","now":"2026-01-01T00:00:00Z","token":"phc_b","event":"e",
            "timestamp":"2026-01-01T00:00:01Z"}"#,
        )
        .unwrap();
        let replaced = redrive_headers(&stored, Some(&fixed));
        let get = |k: &str| {
            replaced
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8(v.clone().unwrap()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("token"), ["phc_b"]);
        assert_eq!(get("distinct_id"), ["new"]);
        assert_eq!(get("uuid"), ["00000000-0000-0000-0000-000000000009"]);
        assert_eq!(get("timestamp"), ["1767225601000"]);
        assert_eq!(get(headers::FORCE_DISABLE_PERSON_PROCESSING), ["true"]);
        assert!(get(headers::DLQ_REASON).is_empty());
    }

    #[test]
    fn payloads_render_as_json_or_escaped_bytes() {
        assert_eq!(render_payload(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(render_payload(b"bad\x00\xff"), "bad\\x00\\xff");
    }

    #[test]
    fn dead_letter_times_display_from_either_writer() {
        assert_eq!(
            display_time(Some("1767225600000")),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            display_time(Some("2026-01-01T00:00:00Z")),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(display_time(None), "-");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
