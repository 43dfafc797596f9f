//! Operator tools against the real broker and ClickHouse: `hogstream replay` re-processes a
//! range without duplicating anything and restores a lost table exactly; `--dry-run` produces
//! nothing and `--team` selects one team; `hogstream dlq` lists, shows and redrives a fixed dead
//! letter exactly once, and a misrouted event (a token header naming another team) by its payload.

mod common;

use std::{
    process::Output,
    time::{Duration, Instant},
};

use common::pipeline::{Pipeline, TEAM_ID, TOKEN, assert_exactly_once, send_events};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(180);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `hogstream <args>` and fails the test unless it exits 0; returns its stdout.
fn ok(p: &Pipeline, args: &[&str]) -> String {
    let out = p.hogstream(args);
    assert!(
        out.status.success(),
        "hogstream {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `hogstream <args>`, which must fail; returns its stderr.
fn refused(p: &Pipeline, args: &[&str]) -> String {
    let out = p.hogstream(args);
    assert!(
        !out.status.success(),
        "hogstream {args:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// Retries a broker request: the shared local broker can be slow to answer under load.
fn retry<T, E: std::fmt::Display>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if attempt < 5 => {
                eprintln!("{what}: {e}; retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// High watermark of every partition of `topic`, in partition order.
fn high_watermarks(p: &Pipeline, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        .create()
        .unwrap();
    let metadata = retry("topic metadata", || {
        consumer.fetch_metadata(Some(topic), Duration::from_secs(30))
    });
    let mut partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    partitions.sort_unstable();
    assert!(!partitions.is_empty(), "topic {topic} has partitions");
    partitions
        .iter()
        .map(|&i| {
            retry("watermarks", || {
                consumer.fetch_watermarks(topic, i, Duration::from_secs(30))
            })
            .1
        })
        .collect()
}

/// Waits until the engine's group has committed `want` (one offset per partition, in order):
/// the engine commits only what ClickHouse acknowledged, so everything before is processed.
fn wait_processed(p: &Pipeline, topic: &str, want: &[i64]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        // The fixture names the engine's group after its database.
        .set("group.id", &p.database)
        .create()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let mut tpl = TopicPartitionList::new();
        for i in 0..want.len() {
            tpl.add_partition(topic, i as i32);
        }
        if let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            got = (0..want.len())
                .map(|i| {
                    match committed
                        .find_partition(topic, i as i32)
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(o)) => o,
                        _ => -1,
                    }
                })
                .collect();
            if got == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "the engine committed {got:?} of `{topic}`, never {want:?}; engine log:\n{}",
        p.engine_log()
    );
}

fn total(hw: &[i64]) -> i64 {
    hw.iter().sum()
}

fn producer(p: &Pipeline) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &p.brokers)
        .set("acks", "all")
        .create()
        .unwrap()
}

/// A message as capture writes it (`CapturedEvent` JSON), with `data` as given.
fn captured(token: &str, distinct_id: &str, uuid: Uuid, event: &str, data: &str) -> String {
    json!({
        "uuid": uuid,
        "distinct_id": distinct_id,
        "ip": "127.0.0.1",
        "data": data,
        "now": "2026-01-01T00:00:00Z",
        "token": token,
        "event": event,
        "timestamp": "2026-01-01T00:00:00Z",
    })
    .to_string()
}

fn valid_data(event: &str, i: usize) -> String {
    json!({ "event": event, "properties": { "i": i } }).to_string()
}

/// A checksum of everything that identifies and describes the team's events, after dedup.
fn checksum_sql(filter: &str) -> String {
    format!(
        "SELECT sum(cityHash64(uuid, event, distinct_id, timestamp, properties)) FROM events FINAL \
         WHERE team_id = {TEAM_ID} {filter}"
    )
}

fn count_sql(filter: &str) -> String {
    format!("SELECT count() FROM events FINAL WHERE {filter}")
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn replaying_an_ingested_range_changes_nothing() {
    const N: usize = 400;
    let p = Pipeline::new(2, 2);
    p.start_capture();
    p.start_engine();
    send_events(&p, N, 1000, |_| {});
    // One more event that raises an ingestion warning, which the replay raises again.
    let warned = json!({"event": "e2e", "distinct_id": "warned", "uuid": Uuid::now_v7(),
                        "properties": {"$process_person_profile": "yes"}});
    assert_eq!(p.send_batch(&[warned]), 200);
    assert_exactly_once(&p, N + 1);
    let warnings = format!(
        "SELECT count() FROM ingestion_warnings FINAL WHERE team_id = {TEAM_ID} AND type = 'invalid_process_person_profile'"
    );
    assert_eq!(p.wait_for(&warnings, 1, Duration::from_secs(30)), 1);
    let checksum = p.query_u64(&checksum_sql("")).unwrap();
    let before = total(&high_watermarks(&p, &p.topic));
    assert!(before > N as i64, "{before} messages for {N} events");

    let out = ok(&p, &["replay"]);
    assert!(
        out.contains(&format!("replayed {before} of {before} messages")),
        "summary:\n{out}"
    );
    let after = high_watermarks(&p, &p.topic);
    assert_eq!(
        total(&after),
        2 * before,
        "every message was re-produced once into the main topic"
    );
    // Once the engine has processed the copies, the table is as it was.
    wait_processed(&p, &p.topic, &after);
    assert_exactly_once(&p, N + 1);
    assert_eq!(
        p.query_u64(&checksum_sql("")).unwrap(),
        checksum,
        "the replayed events are identical to the originals"
    );
    assert_eq!(
        p.query_u64(&warnings).unwrap(),
        1,
        "the replayed warning is the same warning"
    );
}

#[test]
fn replay_by_time_restores_a_truncated_table_exactly() {
    const N: usize = 300;
    const LATE: usize = 50;
    let p = Pipeline::new(2, 4);
    p.start_capture();
    p.start_engine();
    let from = chrono::Utc::now() - chrono::Duration::seconds(1);
    send_events(&p, N, 1000, |_| {});
    std::thread::sleep(Duration::from_millis(1100));
    let until = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    // Sent after `until`: outside the first replay's range.
    let late: Vec<_> = (0..LATE)
        .map(|i| json!({ "event": "late", "distinct_id": format!("late-{i}"), "uuid": Uuid::now_v7() }))
        .collect();
    assert_eq!(p.send_batch(&late), 200);
    assert_exactly_once(&p, N + LATE);
    let early_sum = p.query_u64(&checksum_sql("AND event = 'e2e'")).unwrap();
    let all_sum = p.query_u64(&checksum_sql("")).unwrap();

    p.execute("TRUNCATE TABLE events");
    assert_eq!(p.query_u64(&count_sql("1")).unwrap(), 0, "truncated");

    let (from, until) = (rfc3339(from), rfc3339(until));
    ok(&p, &["replay", "--from-time", &from, "--to-time", &until]);
    assert_exactly_once(&p, N);
    assert_eq!(
        p.query_u64(&checksum_sql("")).unwrap(),
        early_sum,
        "the range before --to-time is restored exactly, and nothing after it"
    );

    ok(&p, &["replay", "--from-time", &until]);
    assert_exactly_once(&p, N + LATE);
    assert_eq!(p.query_u64(&checksum_sql("")).unwrap(), all_sum);
}

#[test]
fn dry_run_produces_nothing_and_team_selects_one_team() {
    const OTHER_TEAM: i64 = 7;
    const OTHER_TOKEN: &str = "phc_other_team";
    let (ours, theirs, unknown) = (60, 40, 5);
    let p = Pipeline::with_teams(1, 2, &[(OTHER_TEAM, OTHER_TOKEN)]);
    p.start_engine();
    let producer = producer(&p);
    let batches = [
        (TOKEN, ours),
        (OTHER_TOKEN, theirs),
        ("phc_nobody", unknown),
    ];
    for (token, n) in batches {
        for i in 0..n {
            let distinct_id = format!("{token}-user-{}", i % 7);
            let value = captured(
                token,
                &distinct_id,
                Uuid::now_v7(),
                "op",
                &valid_data("op", i),
            );
            let key = format!("{token}:{distinct_id}");
            producer
                .send(BaseRecord::to(&p.topic).key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let in_topic = ours + theirs + unknown;
    assert_eq!(total(&high_watermarks(&p, &p.topic)), in_topic as i64);
    let team = |id: i64| count_sql(&format!("team_id = {id}"));
    assert_eq!(p.wait_for(&team(TEAM_ID), ours as u64, WAIT), ours as u64);
    assert_eq!(
        p.wait_for(&team(OTHER_TEAM), theirs as u64, WAIT),
        theirs as u64
    );

    let before = high_watermarks(&p, &p.topic);
    let out = ok(&p, &["replay", "--dry-run"]);
    for expected in [
        format!("team {TEAM_ID}: {ours}"),
        format!("team {OTHER_TEAM}: {theirs}"),
        format!("unknown token: {unknown}"),
        format!("would replay {in_topic} of {in_topic} messages"),
    ] {
        assert!(out.contains(&expected), "`{expected}` missing from:\n{out}");
    }
    let out = ok(
        &p,
        &["replay", "--dry-run", "--team", &OTHER_TEAM.to_string()],
    );
    assert!(
        out.contains(&format!("would replay {theirs} of {in_topic} messages")),
        "{out}"
    );
    let out = ok(
        &p,
        &[
            "replay",
            "--dry-run",
            "--partitions",
            "0",
            "--from-offset",
            "1",
            "--to-offset",
            "3",
        ],
    );
    assert!(out.contains("would replay 2 of 2 messages"), "{out}");
    assert_eq!(
        high_watermarks(&p, &p.topic),
        before,
        "a dry run produces nothing"
    );

    p.execute("TRUNCATE TABLE events");
    let out = ok(&p, &["replay", "--team", &OTHER_TEAM.to_string()]);
    assert!(
        out.contains(&format!("replayed {theirs} of {in_topic} messages")),
        "{out}"
    );
    assert_eq!(
        total(&high_watermarks(&p, &p.topic)),
        total(&before) + theirs as i64,
        "only the team's messages were re-produced"
    );
    assert_eq!(
        p.wait_for(&team(OTHER_TEAM), theirs as u64, WAIT),
        theirs as u64
    );
    assert_eq!(
        p.query_u64(&team(TEAM_ID)).unwrap(),
        0,
        "the other team's events were not replayed"
    );
}

#[test]
fn a_fixed_dead_letter_is_redriven_exactly_once() {
    let p = Pipeline::new(1, 1);
    p.start_engine();
    let producer = producer(&p);
    let bad = captured(TOKEN, "dl-user", Uuid::now_v7(), "broken", "[1]");
    producer
        .send(
            BaseRecord::to(&p.topic)
                .key("phc_test_token:dl-user")
                .payload(&bad),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut listed = String::new();
    while Instant::now() < deadline {
        listed = ok(&p, &["dlq", "list"]);
        if listed.contains("not a JSON object") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let row = listed
        .lines()
        .find(|l| l.contains("not a JSON object"))
        .unwrap_or_else(|| panic!("the dead letter is listed with its reason:\n{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..2], ["0", "0"], "partition and offset: {row}");
    assert!(row.contains("normalize"), "the failed step: {row}");
    assert!(
        row.contains(&format!("{}/0/0", p.topic)),
        "the origin: {row}"
    );
    assert!(row.trim_end().ends_with(" no"), "not redriven yet: {row}");

    let shown = ok(&p, &["dlq", "show", "0:0"]);
    assert!(
        shown.contains("dlq_reason: captured event `data` is not a JSON object"),
        "{shown}"
    );
    assert!(shown.contains(r#""data": "[1]""#), "pretty JSON:\n{shown}");

    let main = high_watermarks(&p, &p.topic);
    let err = refused(&p, &["dlq", "redrive", "0:0"]);
    assert!(err.contains("would be dead-lettered again"), "{err}");
    assert_eq!(high_watermarks(&p, &p.topic), main, "nothing produced");

    let fixed_uuid = Uuid::now_v7();
    let fixed = p.dir.join("fixed.json");
    std::fs::write(
        &fixed,
        captured(
            TOKEN,
            "dl-user",
            fixed_uuid,
            "fixed",
            &valid_data("fixed", 1),
        ),
    )
    .unwrap();
    let fixed = fixed.to_str().unwrap();
    let out = ok(&p, &["dlq", "redrive", "0:0", "--payload-file", fixed]);
    assert!(out.contains("redrove DLQ entry 0:0"), "{out}");
    let once = count_sql(&format!("uuid = '{fixed_uuid}'"));
    assert_eq!(p.wait_for(&once, 1, WAIT), 1, "the fixed event arrives");

    let main = high_watermarks(&p, &p.topic);
    let err = refused(&p, &["dlq", "redrive", "0:0", "--payload-file", fixed]);
    assert!(err.contains("already redriven"), "{err}");
    let out = ok(&p, &["dlq", "redrive", "--all"]);
    assert!(out.contains("redrove 0 DLQ entries"), "{out}");
    assert_eq!(
        high_watermarks(&p, &p.topic),
        main,
        "a refused redrive produces nothing"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(p.query_u64(&once).unwrap(), 1, "still exactly once");
    let listed = ok(&p, &["dlq", "list"]);
    let row = listed.lines().find(|l| l.starts_with("0 ")).unwrap();
    assert!(!row.trim_end().ends_with(" no"), "marked redriven: {row}");

    // Forcing produces again; the pipeline still stores the event once.
    ok(
        &p,
        &["dlq", "redrive", "0:0", "--payload-file", fixed, "--force"],
    );
    let forced = high_watermarks(&p, &p.topic);
    assert_eq!(forced[0], main[0] + 1, "one more message");
    wait_processed(&p, &p.topic, &forced);
    assert_eq!(p.query_u64(&once).unwrap(), 1, "and deduplicated");
}

/// A foreign producer whose `token` header names another team than its payload: the event must
/// not reach the other team's worker's person state. It is dead-lettered without that header,
/// and a plain redrive then routes it by its payload's token.
#[test]
fn an_event_whose_token_header_names_another_team_is_dead_lettered_then_redriven_by_its_payload() {
    const OTHER_TEAM: i64 = 7;
    const OTHER_TOKEN: &str = "phc_other_team";
    let p = Pipeline::with_teams(2, 2, &[(OTHER_TEAM, OTHER_TOKEN)]);
    p.start_engine();
    let producer = producer(&p);
    let uuid = Uuid::now_v7();
    let value = captured(TOKEN, "lied-about", uuid, "op", &valid_data("op", 1));
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "token",
        value: Some(OTHER_TOKEN),
    });
    producer
        .send(
            BaseRecord::<(), _>::to(&p.topic)
                .payload(&value)
                .partition(0)
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    // And one without any header or key: routed by its payload, stored.
    let plain_uuid = Uuid::now_v7();
    let plain = captured(TOKEN, "plain", plain_uuid, "op", &valid_data("op", 2));
    producer
        .send(
            BaseRecord::<(), _>::to(&p.topic)
                .payload(&plain)
                .partition(1),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let plain_once = count_sql(&format!("uuid = '{plain_uuid}' AND team_id = {TEAM_ID}"));
    assert_eq!(p.wait_for(&plain_once, 1, WAIT), 1, "the headerless event");

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut listed = String::new();
    while Instant::now() < deadline && !listed.contains("misrouted") {
        std::thread::sleep(Duration::from_millis(500));
        listed = ok(&p, &["dlq", "list"]);
    }
    let row = listed
        .lines()
        .find(|l| l.contains("misrouted"))
        .unwrap_or_else(|| panic!("the misrouted event is dead-lettered:\n{listed}"));
    assert!(row.contains("route"), "the failed step: {row}");
    let once = count_sql(&format!("uuid = '{uuid}'"));
    assert_eq!(
        p.query_u64(&once).unwrap(),
        0,
        "not stored before the redrive"
    );

    let out = ok(&p, &["dlq", "redrive", "--all", "--step", "route"]);
    assert!(out.contains("redrove 1 DLQ entr"), "{out}");
    let ours = count_sql(&format!("uuid = '{uuid}' AND team_id = {TEAM_ID}"));
    assert_eq!(
        p.wait_for(&ours, 1, WAIT),
        1,
        "stored for its payload's team"
    );
    let listed = ok(&p, &["dlq", "list"]);
    assert_eq!(
        listed.matches("misrouted").count(),
        1,
        "routed right, it is not dead-lettered again:\n{listed}"
    );
}

#[test]
fn bad_ranges_and_entries_are_refused_with_clear_messages() {
    let p = Pipeline::new(1, 2);
    let missing = common::unique("missing");
    let cases: [(&[&str], &str); 8] = [
        (&["replay", "--topic", &missing], "unknown topic"),
        (
            &["replay", "--partitions", "7"],
            "partition 7 is out of range",
        ),
        (&["replay", "--from-offset", "5"], "outside the log"),
        (&["replay", "--team", "999"], "not configured in [[teams]]"),
        (
            &[
                "replay",
                "--from-time",
                "2026-01-02T00:00:00Z",
                "--to-time",
                "2026-01-01T00:00:00Z",
            ],
            "is after --to-time",
        ),
        (&["dlq", "show", "0:3"], "no such DLQ entry 0:3"),
        (&["dlq", "show", "9:0"], "no such DLQ entry 9:0"),
        (&["dlq", "redrive", "1:0"], "no such DLQ entry 1:0"),
    ];
    for (args, expected) in cases {
        let err = refused(&p, args);
        assert!(
            err.contains(expected),
            "{args:?}: `{expected}` missing from:\n{err}"
        );
    }
}

/// `hogstream state resize`: a one-process engine with person state becomes a two-process
/// cluster, and every team's persons go on from where they were (a `$set_once` set before the
/// resize is kept, which a lost state would overwrite).
#[test]
fn resizing_the_cluster_moves_person_state_to_its_new_owner() {
    let teams = [
        (43, "phc_resize_a"),
        (44, "phc_resize_b"),
        (45, "phc_resize_c"),
        (46, "phc_resize_d"),
    ];
    let tokens: Vec<&str> = std::iter::once(TOKEN)
        .chain(teams.iter().map(|(_, t)| *t))
        .collect();
    let p = Pipeline::with_teams(1, 2, &teams);
    let send_all = |first: &str, n: u32| {
        for token in &tokens {
            let event = json!({"event": "$pageview", "distinct_id": "u1", "uuid": Uuid::now_v7().to_string(),
                "properties": {"$set_once": {"first": first}, "$set": {"n": n}}});
            assert_eq!(p.send_batch_with_token(token, &[event]), 200);
        }
    };
    let persons_with = |n: u32, first: &str| {
        format!(
            "SELECT count() FROM person FINAL WHERE JSONExtractInt(properties, 'n') = {n} AND JSONExtractString(properties, 'first') = '{first}'"
        )
    };
    p.start_capture();
    p.start_engine();
    send_all("one", 1);
    assert_eq!(
        p.wait_for(&persons_with(1, "one"), 5, Duration::from_secs(90)),
        5,
        "{}",
        p.engine_log()
    );
    assert!(p.stop_engine(), "{}", p.engine_log());

    let resize = |extra: &[&str]| {
        let args = [&["state", "resize", "--processes", "2"], extra].concat();
        let out = p.hogstream(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        stdout
    };
    let plan = resize(&["--dry-run"]);
    assert!(
        plan.contains("would move to process 1") && plan.contains("nothing was changed"),
        "the dry run names what moves: {plan}"
    );
    assert!(
        !p.dir.join("engine/process-1").exists(),
        "the dry run creates no store"
    );
    // The dry run moved nothing, so the resize itself still has teams to move, as many as
    // the plan said.
    let stdout = resize(&[]);
    let count_before = |text: &str, marker: &str| -> u64 {
        let head = &text[..text
            .find(marker)
            .unwrap_or_else(|| panic!("{marker}: {text}"))];
        let count = head.rsplit([' ', '(']).next().unwrap_or_default();
        count
            .parse()
            .unwrap_or_else(|_| panic!("a count before {marker}: {text}"))
    };
    assert_eq!(
        count_before(&plan, " person-state records would move"),
        count_before(&stdout, " records moved)"),
        "{plan}\n{stdout}"
    );
    assert!(
        stdout.contains("from process 0 to process 1"),
        "some team moves: {stdout}"
    );
    assert!(stdout.contains("laid out for 2 processes"), "{stdout}");

    p.start_engine_cluster(2);
    send_all("two", 2);
    assert_eq!(
        p.wait_for(&persons_with(2, "one"), 5, Duration::from_secs(120)),
        5,
        "every person kept its first value: {}",
        p.engine_log()
    );
    assert_eq!(p.query_u64(&persons_with(2, "two")).unwrap(), 0);
}
