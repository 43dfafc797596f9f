//! `hogstream replay`: re-reads an offset or time range of a topic and re-produces the selected
//! messages (value, key and headers unchanged) into the engine's main input topic, so the
//! pipeline processes them again. Safe to repeat: the pipeline deduplicates events by uuid.
//!
//! With `--destinations-only` it re-reads the processed-events topic instead and re-produces the
//! range into it marked for redelivery: destinations deliver those events again, and nothing else
//! (ClickHouse, persons) sees them.

use std::{
    collections::{BTreeMap, HashMap},
    io::IsTerminal,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use governor::{Quota, RateLimiter};
use hogstream_engine::teams::Teams;
use hogstream_event::processed::REDELIVER_HEADER;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};
use serde::Deserialize;

use crate::{
    config::Config,
    kafka_tools::{self, Deliveries, RangeReader},
};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Replays are idempotent: the pipeline deduplicates events by their uuid (ReplacingMergeTree \
tables, read with FINAL), so replaying a range that is already in ClickHouse changes nothing, \
and an interrupted replay can simply be run again. Destinations do not receive replayed events \
they delivered in the last 3 days. Replayed messages get the time of the replay as their Kafka \
timestamp.

--destinations-only re-delivers a range of the processed-events topic to destinations (all, or \
the one named by --destination), even events they delivered before; ClickHouse and person state \
are not touched. Find the range in the log line of a batch a destination gave up on, or by time.

Examples:
  hogstream replay --dry-run
  hogstream replay --from-time 2026-01-01T00:00:00Z --to-time 2026-01-01T06:00:00Z --rate 2000
  hogstream replay --topic events_plugin_ingestion_overflow --partitions 0,2 --from-offset 1000 --team 1
  hogstream replay --destinations-only --destination webhook --from-time 2026-01-01T00:00:00Z")]
pub struct ReplayArgs {
    /// Topic to read [default: the first of `[kafka] input_topics`].
    #[arg(long)]
    pub topic: Option<String>,
    /// Topic to re-produce into [default: the first of `[kafka] input_topics`, the engine's main input].
    #[arg(long, value_name = "TOPIC")]
    pub into: Option<String>,
    /// Partitions to read, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "P,P,...")]
    pub partitions: Vec<i32>,
    /// First offset to read, in every selected partition [default: the start of the log].
    #[arg(long, value_name = "N", conflicts_with = "from_time")]
    pub from_offset: Option<i64>,
    /// Offset to stop before (exclusive), in every selected partition [default: the end of the
    /// log when the replay starts].
    #[arg(long, value_name = "M", conflicts_with = "to_time")]
    pub to_offset: Option<i64>,
    /// Start at the first message with a Kafka timestamp at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub from_time: Option<DateTime<Utc>>,
    /// Stop before the first message with a Kafka timestamp at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub to_time: Option<DateTime<Utc>>,
    /// Only messages of this team: the value's `token` must map to it in `[[teams]]`.
    #[arg(long, value_name = "ID")]
    pub team: Option<i64>,
    /// At most this many messages per second are re-produced.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Read the range and print what would be replayed, per partition and team; produce nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-deliver a range of the processed-events topic (`[kafka] processed_topic`) to
    /// destinations only.
    #[arg(long, conflicts_with_all = ["topic", "into"])]
    pub destinations_only: bool,
    /// With --destinations-only: only the destination with this `[[plugins]]` id [default: all].
    #[arg(long, requires = "destinations_only", value_name = "ID")]
    pub destination: Option<String>,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-01-01T00:00:00Z: {e}"))
}

/// One partition's range to read: `[from, to)` inside the log `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// Which team a message belongs to, for `--team` and the per-team counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TeamOf {
    Team(i64),
    /// A captured event whose token no `[[teams]]` entry has.
    UnknownToken,
    /// Not a JSON object with a string `token`.
    Undecodable,
}

impl std::fmt::Display for TeamOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TeamOf::Team(id) => write!(f, "team {id}"),
            TeamOf::UnknownToken => f.write_str("unknown token"),
            TeamOf::Undecodable => f.write_str("undecodable"),
        }
    }
}

/// The team of a captured event (by its `token`) or of a processed one (its `team_id`).
fn team_of(payload: Option<&[u8]>, teams: &Teams) -> TeamOf {
    #[derive(Deserialize)]
    struct Owner {
        token: Option<String>,
        team_id: Option<i64>,
    }
    match payload.and_then(|p| serde_json::from_slice::<Owner>(p).ok()) {
        Some(Owner {
            token: Some(token), ..
        }) => teams
            .by_token(&token)
            .map_or(TeamOf::UnknownToken, |team| TeamOf::Team(team.id)),
        Some(Owner {
            team_id: Some(id), ..
        }) => TeamOf::Team(id),
        _ => TeamOf::Undecodable,
    }
}

/// The redelivery mark of `--destinations-only`: the destination's id, or empty for all.
fn redelivery_target(config: &Config, args: &ReplayArgs) -> Result<Option<String>> {
    if !args.destinations_only {
        return Ok(None);
    }
    let team_ids: Vec<i64> = config.teams.iter().map(|t| t.id).collect();
    let plugins = crate::plugins::registry().check(&config.plugins, &team_ids)?;
    let ids: Vec<&str> = plugins.destinations.iter().map(|d| d.id.as_str()).collect();
    if ids.is_empty() {
        bail!("--destinations-only: no destination is configured in [[plugins]]");
    }
    match &args.destination {
        Some(id) if !ids.contains(&id.as_str()) => bail!(
            "--destination {id} is not a configured destination (configured: {})",
            ids.join(", ")
        ),
        Some(id) => Ok(Some(id.clone())),
        None => Ok(Some(String::new())),
    }
}

/// Offsets the user gave, or looked up from times, checked against one partition's log.
#[derive(Debug, Default, Clone, Copy)]
struct Bounds {
    from_offset: Option<i64>,
    to_offset: Option<i64>,
    /// `Some(None)`: a time was given and no message is at or after it.
    from_time: Option<Option<i64>>,
    to_time: Option<Option<i64>>,
}

fn resolve_range(
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    b: Bounds,
) -> Result<PartitionRange> {
    let outside = |flag: &str, o: i64| {
        anyhow::anyhow!(
            "{flag} {o} is outside the log of `{topic}` partition {partition}, which holds {} \
             (choose the partitions with --partitions)",
            kafka_tools::describe_log(low, high)
        )
    };
    let from = match (b.from_offset, b.from_time) {
        (Some(o), _) if o < low || o > high => return Err(outside("--from-offset", o)),
        (Some(o), _) => o,
        (None, Some(found)) => found.unwrap_or(high).clamp(low, high),
        (None, None) => low,
    };
    let to = match (b.to_offset, b.to_time) {
        (Some(o), _) if o < low || o > high => return Err(outside("--to-offset", o)),
        (Some(o), _) => o,
        (None, Some(found)) => found.unwrap_or(high).clamp(low, high),
        (None, None) => high,
    };
    if from > to {
        bail!(
            "the range of `{topic}` partition {partition} is inverted: it starts at offset {from} \
             and ends before offset {to}"
        );
    }
    Ok(PartitionRange {
        partition,
        from,
        to,
    })
}

fn resolve_ranges(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    args: &ReplayArgs,
) -> Result<Vec<PartitionRange>> {
    let lookup = |t: Option<DateTime<Utc>>| match t {
        Some(t) => kafka_tools::offsets_for_time(consumer, topic, partitions, t.timestamp_millis())
            .map(Some),
        None => Ok(None),
    };
    let from_times = lookup(args.from_time)?;
    let to_times = lookup(args.to_time)?;
    let at = |m: &Option<HashMap<i32, Option<i64>>>, p: i32| {
        m.as_ref().map(|m| m.get(&p).copied().flatten())
    };
    partitions
        .iter()
        .map(|&p| {
            let log = kafka_tools::watermarks(consumer, topic, p)?;
            let bounds = Bounds {
                from_offset: args.from_offset,
                to_offset: args.to_offset,
                from_time: at(&from_times, p),
                to_time: at(&to_times, p),
            };
            resolve_range(topic, p, log, bounds)
        })
        .collect()
}

#[derive(Default)]
struct PartitionStats {
    read: u64,
    selected: u64,
    teams: BTreeMap<TeamOf, u64>,
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} read, {msg} ({rate}, ETA {eta})",
        )
        .expect("valid template")
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_table(ranges: &[PartitionRange], stats: &HashMap<i32, PartitionStats>, dry_run: bool) {
    let verb = if dry_run { "would replay" } else { "replayed" };
    println!(
        "{:>9}  {:>12}  {:>12}  {:>10}  {:>12}  per team",
        "partition", "from", "to", "messages", verb
    );
    let empty = PartitionStats::default();
    let mut all_teams: BTreeMap<TeamOf, u64> = BTreeMap::new();
    for r in ranges {
        let s = stats.get(&r.partition).unwrap_or(&empty);
        for (t, n) in &s.teams {
            *all_teams.entry(*t).or_default() += n;
        }
        println!(
            "{:>9}  {:>12}  {:>12}  {:>10}  {:>12}  {}",
            r.partition,
            r.from,
            r.to,
            s.read,
            s.selected,
            team_counts(&s.teams)
        );
    }
    println!("per team, all partitions: {}", team_counts(&all_teams));
}

fn team_counts(teams: &BTreeMap<TeamOf, u64>) -> String {
    if teams.is_empty() {
        return "-".into();
    }
    teams
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(config: &Config, args: ReplayArgs) -> Result<()> {
    let redeliver = redelivery_target(config, &args)?;
    let main_topic = match redeliver {
        Some(_) => &config.kafka.processed_topic,
        None => &config.kafka.input_topics[0],
    };
    let topic = args.topic.clone().unwrap_or_else(|| main_topic.clone());
    let into = args.into.clone().unwrap_or_else(|| main_topic.clone());
    if let (Some(from), Some(to)) = (args.from_time, args.to_time)
        && from > to
    {
        bail!("--from-time {from} is after --to-time {to}");
    }
    if let (Some(from), Some(to)) = (args.from_offset, args.to_offset)
        && from > to
    {
        bail!("--from-offset {from} is after --to-offset {to}");
    }
    let teams = Teams::new(config.teams.clone()).context("[[teams]]")?;
    if let Some(id) = args.team
        && !config.teams.iter().any(|t| t.id == id)
    {
        let known: Vec<i64> = config.teams.iter().map(|t| t.id).collect();
        bail!("--team {id} is not configured in [[teams]] (configured: {known:?})");
    }

    let consumer = kafka_tools::consumer(&config.kafka)?;
    let existing = kafka_tools::partitions(&consumer, &topic)?;
    let selected = kafka_tools::select_partitions(&topic, &existing, &args.partitions)?;
    kafka_tools::partitions(&consumer, &into).context("--into")?;
    let ranges = resolve_ranges(&consumer, &topic, &selected, &args)?;
    let total: u64 = ranges.iter().map(|r| (r.to - r.from) as u64).sum();
    let producer = if args.dry_run {
        None
    } else {
        Some(kafka_tools::producer(&config.kafka)?)
    };
    let limiter = args.rate.map(|n| {
        let rate = NonZeroU32::new(n).expect("--rate is at least 1");
        // A twentieth of a second's worth at once keeps the pace even without per-message sleeps.
        let burst = NonZeroU32::new((n / 20).max(1)).expect("positive");
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });

    let bar = progress_bar(total);
    let started = Instant::now();
    let mut stats: HashMap<i32, PartitionStats> = HashMap::new();
    let mut deliveries = producer.as_ref().map(Deliveries::new);
    let bounds: Vec<(i32, i64, i64)> = ranges.iter().map(|r| (r.partition, r.from, r.to)).collect();
    let mut reader = RangeReader::new(&consumer, &topic, &bounds)?;

    let outcome: Result<()> = async {
        while let Some(message) = reader.next().await? {
            let team = team_of(message.payload(), &teams);
            let s = stats.entry(message.partition()).or_default();
            s.read += 1;
            *s.teams.entry(team).or_default() += 1;
            bar.inc(1);
            if args.team.is_some_and(|id| team != TeamOf::Team(id)) {
                continue;
            }
            s.selected += 1;
            let Some(deliveries) = deliveries.as_mut() else {
                continue;
            };
            if let Some(limiter) = &limiter {
                limiter.until_ready().await;
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&into);
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            let mut headers = message
                .headers()
                .map_or_else(OwnedHeaders::new, |h| h.detach());
            if let Some(target) = &redeliver {
                headers = headers.insert(Header {
                    key: REDELIVER_HEADER,
                    value: Some(target.as_bytes()),
                });
            }
            record = record.headers(headers);
            let origin = format!(
                "`{topic}` partition {} offset {}",
                message.partition(),
                message.offset()
            );
            deliveries.send(record, origin).await?;
            bar.set_message(format!("{} acknowledged", deliveries.delivered()));
        }
        if let Some(deliveries) = deliveries.as_mut() {
            deliveries.finish().await?;
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();

    let read: u64 = stats.values().map(|s| s.read).sum();
    let wanted: u64 = stats.values().map(|s| s.selected).sum();
    let parts = selected
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        let acked = deliveries.as_ref().map_or(0, Deliveries::delivered);
        eprintln!(
            "replay stopped after reading {read} of {total} messages; {acked} re-produced \
             messages were acknowledged. Running the same replay again is safe (events are \
             deduplicated by uuid)."
        );
        return Err(e);
    }
    print_table(&ranges, &stats, args.dry_run);
    match deliveries {
        Some(d) => println!(
            "replayed {} of {read} messages from `{topic}` partitions {parts} into `{into}` in \
             {secs:.1}s ({:.0}/s)",
            d.delivered(),
            d.delivered() as f64 / secs.max(0.001),
        ),
        None => println!(
            "dry run: would replay {wanted} of {read} messages from `{topic}` partitions {parts} \
             into `{into}`; nothing was produced"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hogstream_engine::teams::Team;

    use super::*;

    fn b() -> Bounds {
        Bounds::default()
    }

    #[test]
    fn ranges_default_to_the_whole_log_and_refuse_offsets_outside_it() {
        let r = |bounds| resolve_range("t", 1, (10, 20), bounds);
        let whole = r(b()).unwrap();
        assert_eq!((whole.from, whole.to), (10, 20));
        let part = r(Bounds {
            from_offset: Some(12),
            to_offset: Some(15),
            ..b()
        })
        .unwrap();
        assert_eq!((part.from, part.to), (12, 15));
        let empty_at_end = r(Bounds {
            from_offset: Some(20),
            ..b()
        })
        .unwrap();
        assert_eq!((empty_at_end.from, empty_at_end.to), (20, 20));
        for bad in [
            Bounds {
                from_offset: Some(9),
                ..b()
            },
            Bounds {
                to_offset: Some(21),
                ..b()
            },
        ] {
            let err = r(bad).unwrap_err().to_string();
            assert!(
                err.contains("outside the log") && err.contains("offsets 10 to 19"),
                "{err}"
            );
        }
        let err = r(Bounds {
            from_offset: Some(15),
            to_offset: Some(12),
            ..b()
        })
        .unwrap_err();
        assert!(err.to_string().contains("inverted"));
    }

    #[test]
    fn times_without_a_later_message_mean_the_end_of_the_log() {
        let r = resolve_range(
            "t",
            0,
            (10, 20),
            Bounds {
                from_time: Some(Some(13)),
                to_time: Some(None),
                ..b()
            },
        )
        .unwrap();
        assert_eq!((r.from, r.to), (13, 20));
        let nothing_after = resolve_range(
            "t",
            0,
            (10, 20),
            Bounds {
                from_time: Some(None),
                ..b()
            },
        )
        .unwrap();
        assert_eq!((nothing_after.from, nothing_after.to), (20, 20));
    }

    #[test]
    fn messages_are_attributed_to_teams_by_token() {
        let teams = Teams::new(vec![Team {
            id: 7,
            token: "phc_a".into(),
            ..Default::default()
        }])
        .unwrap();
        let of = |v: &[u8]| team_of(Some(v), &teams);
        assert_eq!(of(br#"{"token":"phc_a","data":"{}"}"#), TeamOf::Team(7));
        assert_eq!(of(br#"{"token":"phc_b"}"#), TeamOf::UnknownToken);
        assert_eq!(of(br#"{"team_id":9,"event":"e"}"#), TeamOf::Team(9));
        assert_eq!(of(b"not json"), TeamOf::Undecodable);
        assert_eq!(team_of(None, &teams), TeamOf::Undecodable);
    }

    #[test]
    fn times_parse_as_rfc3339_only() {
        assert_eq!(
            parse_time("2026-01-01T01:00:00+01:00").unwrap(),
            parse_time("2026-01-01T00:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
