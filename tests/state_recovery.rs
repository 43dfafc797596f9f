//! Person state that survives losing its disk, drilled end to end on the real broker,
//! ClickHouse and S3-compatible object store (SeaweedFS, started by `scripts/services.sh`):
//!
//! 1. ingest, checkpoint, ingest more, `kill -9`, delete the data dir, start with restore:
//!    persons, distinct ids, overrides, groups and views equal the reference and SQL, every
//!    event stored once;
//! 2. the same with the object store down while checkpoints are due (SIGKILLed under them);
//! 3. a corrupt store (a table file cut short): refused, then restored;
//! 4. a store deleted with restore off: one line that says why and what to do;
//! 5. a cluster grown from 1 to 2 processes through the object store, the new process on an
//!    empty disk of its own;
//! 6. `kill -9` of one process of a 2-process cluster under load: the survivor exits cleanly
//!    and the restarted cluster loses and doubles nothing.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::RwLock,
    time::{Duration, Instant},
};

use common::objects::{Prefix, checkpoints_section, require_s3};
use common::persons::{check, send};
use common::pipeline::{Pipeline, TEAM_ID, counts_sql};
use common::views::{VIEWS, check_views, spread_history};
use hogstream_state::persons::reference::final_state;
use serde_json::Value;

/// The drill that stops the shared object store holds this for writing; the others read.
static OBJECT_STORE: RwLock<()> = RwLock::new(());

/// A pipeline with the views enabled and checkpoints under a prefix of its own.
fn pipeline(
    workers: usize,
    partitions: i32,
    interval: &str,
    restore: bool,
    teams: &[(i64, &str)],
) -> (Pipeline, Prefix) {
    require_s3();
    let prefix = common::unique("checkpoints");
    let extra = format!("{VIEWS}{}", checkpoints_section(&prefix, interval, restore));
    let p = Pipeline::with_teams_and_config(workers, partitions, teams, &extra);
    (p, Prefix(prefix))
}

/// Every finished checkpoint of the pipeline, as `hogstream state checkpoints --json` lists them.
fn checkpoints(p: &Pipeline, process: u64) -> Vec<Value> {
    let out = p.hogstream(&["state", "checkpoints", "--json", "-p", &process.to_string()]);
    assert!(
        out.status.success(),
        "hogstream state checkpoints: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Messages of the main topic a checkpoint's floors say were processed.
fn floor_sum(p: &Pipeline, manifest: &Value) -> u64 {
    manifest["floors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["topic"] == p.topic.as_str())
        .map(|f| f["next_offset"].as_i64().unwrap().max(0) as u64)
        .sum()
}

/// Waits for a checkpoint of process 0 whose floors cover at least `messages` messages of the
/// main topic; returns its id.
fn wait_for_checkpoint(p: &Pipeline, messages: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(m) = checkpoints(p, 0)
            .into_iter()
            .find(|m| floor_sum(p, m) >= messages)
        {
            return m["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers {messages} messages:\n{}",
            p.engine_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_counts(p: &Pipeline, n: usize, label: &str) {
    let n = n as u64;
    assert_eq!(
        p.wait_for(&counts_sql(), n * 1_000_001, Duration::from_secs(180)),
        n * 1_000_001,
        "{label}: every event stored once\n{}",
        p.engine_log()
    );
}

fn store_dir(p: &Pipeline) -> PathBuf {
    p.dir.join("engine/process-0")
}

/// What a lost disk leaves: nothing of the engine's data dir.
fn lose_disk(data_dir: &Path) {
    std::fs::remove_dir_all(data_dir).unwrap();
    assert!(!data_dir.exists());
}

/// The restores the engine logged, by checkpoint id.
fn restored_from(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("restored the state store;"))
        .filter_map(|l| l.split("checkpoint=").nth(1)?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The history in a shuffled order, cut into `n` parts: every part holds events of most
/// users, so a later part's persons depend on what the earlier parts left in the state.
fn shuffled_parts(sent: &[common::persons::Sent], n: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sent.len()).collect();
    hogstream_state::persons::reference::Rng(42).shuffle(&mut order);
    let size = order.len().div_ceil(n);
    order.chunks(size).map(<[usize]>::to_vec).collect()
}

/// Waits until the engine logged its restore and its cluster's rewind.
fn wait_for_restore(p: &Pipeline, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = p.engine_log();
        if !restored_from(&log).is_empty() && log.contains("rewound to this store's restore point")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{label}: no restore\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Drill 1 (and 2 with `store_down`): see the file's comment.
fn lost_disk_drill(label: &str, store_down: bool) {
    let _store = if store_down {
        Err(OBJECT_STORE.write().unwrap_or_else(|e| e.into_inner()))
    } else {
        Ok(OBJECT_STORE.read().unwrap_or_else(|e| e.into_inner()))
    };
    let sent = spread_history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let expected = final_state(&persons);
    let parts = shuffled_parts(&sent, 3);
    let (p, _prefix) = pipeline(2, 3, "1s", true, &[]);
    p.start_capture();
    p.start_engine();
    send(&p, &sent, &parts[0], || {});
    wait_counts(&p, parts[0].len(), label);
    wait_for_checkpoint(&p, parts[0].len() as u64);
    let before_loss = parts[0].len() + parts[1].len();
    let mut newest_before_part_two: Option<Value> = None;

    if store_down {
        // Checkpoints keep coming due every second while the store is killed under them:
        // some attempts die mid-upload, the others cannot connect; ingestion goes on.
        common::services(&["kill", "s3"]);
        send(&p, &sent, &parts[1], || {});
        wait_counts(&p, before_loss, label);
        let deadline = Instant::now() + Duration::from_secs(60);
        while failed_checkpoints(&p) == 0 {
            assert!(Instant::now() < deadline, "{label}: no checkpoint failed");
            std::thread::sleep(Duration::from_millis(250));
        }
    } else {
        // No checkpoint after this point: the restore must replay the second part.
        p.kill_engine();
        newest_before_part_two = Some(checkpoints(&p, 0)[0].clone());
        p.rewrite_config(|c| c.replace("interval = \"1s\"", "interval = \"1h\""));
        p.start_engine();
        send(&p, &sent, &parts[1], || {});
        wait_counts(&p, before_loss, label);
    }
    p.kill_engine();
    lose_disk(&p.dir.join("engine"));
    if store_down {
        common::services(&["start", "s3"]);
    }
    p.start_engine();
    wait_for_restore(&p, label);
    // The last part's persons are the earlier parts' persons: a restore that lost them would
    // make new ones here.
    send(&p, &sent, &parts[2], || {});
    check(&p, &sent, &expected, label);
    check_views(&p, label);
    let log = p.engine_log();
    let restored = restored_from(&log);
    assert_eq!(restored.len(), 1, "{label}: one restore\n{log}");
    if let Some(newest) = newest_before_part_two {
        assert_eq!(
            restored[0],
            newest["id"].as_str().unwrap(),
            "{label}: the newest checkpoint, taken before the second part"
        );
        assert!(
            floor_sum(&p, &newest) < before_loss as u64,
            "{label}: the restore had the second part to read again"
        );
    }
    // The restored engine read the second part again (from the checkpoint's offsets, by a
    // rewind or because the group had not got further), not only the third.
    let read = p.counter("hogstream_events_in_total");
    assert!(
        read >= (parts[1].len() + parts[2].len()) as u64,
        "{label}: the restored engine read {read} events; the second and third parts are {}\n{log}",
        parts[1].len() + parts[2].len()
    );
}

fn failed_checkpoints(p: &Pipeline) -> u64 {
    p.counter("hogstream_checkpoints_total{outcome=\"failed\"}")
}

#[test]
fn a_lost_disk_is_restored_from_the_newest_checkpoint_and_kafka() {
    lost_disk_drill("lost disk", false);
}

#[test]
fn an_object_store_down_during_checkpoints_costs_nothing_but_replay() {
    lost_disk_drill("object store down", true);
}

/// Drills 3 and 4: a store that cannot be used is refused with a clear line, or restored.
#[test]
fn a_corrupt_or_deleted_store_is_refused_or_restored_never_used_empty() {
    let _store = OBJECT_STORE.read().unwrap_or_else(|e| e.into_inner());
    let sent = spread_history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let expected = final_state(&persons);
    let parts = shuffled_parts(&sent, 3);
    let (p, _prefix) = pipeline(1, 2, "1h", false, &[]);
    p.start_capture();
    p.start_engine();
    send(&p, &sent, &parts[0], || {});
    wait_counts(&p, parts[0].len(), "corrupt");
    // A graceful stop takes a final checkpoint at exactly the stored offsets.
    assert!(p.stop_engine(), "{}", p.engine_log());
    let manifests = checkpoints(&p, 0);
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0]["source"], "shutdown");
    assert!(floor_sum(&p, &manifests[0]) >= parts[0].len() as u64);

    // Drill 3: a table file cut short, as a failing disk leaves it. Refused with restore off…
    let table = std::fs::read_dir(store_dir(&p))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .expect("the store has table files");
    let len = std::fs::metadata(&table).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (status, stderr) = p.run_engine_expecting_exit(Duration::from_secs(60));
    assert_eq!(status, Some(1), "refused:\n{stderr}");
    assert_refusal(&stderr, "cannot be opened", "restore = true");
    // … and restored with it on: the damaged store is kept aside, the next part builds on the
    // restored persons.
    p.rewrite_config(|c| c.replace("restore = false", "restore = true"));
    p.start_engine();
    wait_for_restore(&p, "corrupt store");
    let aside: Vec<_> = std::fs::read_dir(p.dir.join("engine"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("process-0.replaced-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged store is kept aside");
    send(&p, &sent, &parts[1], || {});
    wait_counts(&p, parts[0].len() + parts[1].len(), "corrupt");
    assert!(p.stop_engine(), "{}", p.engine_log());

    // Drill 4: the store is gone, and restore is off.
    let newest = checkpoints(&p, 0)[0]["id"].as_str().unwrap().to_owned();
    lose_disk(&p.dir.join("engine"));
    p.rewrite_config(|c| c.replace("restore = true", "restore = false"));
    let (status, stderr) = p.run_engine_expecting_exit(Duration::from_secs(60));
    assert_eq!(status, Some(1), "refused:\n{stderr}");
    assert_refusal(&stderr, "is missing", "restore = true");
    assert!(
        stderr.contains("has committed offsets") && stderr.contains(&newest),
        "the refusal says what shows the process had state, and names the newest checkpoint: {stderr}"
    );
    assert!(!store_dir(&p).exists(), "a refused start creates no store");
    // Without [checkpoints] there is nothing to restore from, and the line says so.
    let with_checkpoints = std::fs::read_to_string(&p.config).unwrap();
    p.rewrite_config(|c| c[..c.find("[checkpoints]").unwrap()].to_owned());
    let (status, stderr) = p.run_engine_expecting_exit(Duration::from_secs(60));
    assert_eq!(status, Some(1), "refused:\n{stderr}");
    assert_refusal(
        &stderr,
        "No [checkpoints] store is configured",
        "hogstream state init",
    );
    std::fs::write(&p.config, with_checkpoints).unwrap();

    // With restore on, the engine restores the newest checkpoint and goes on where it was.
    p.rewrite_config(|c| c.replace("restore = false", "restore = true"));
    p.start_engine();
    wait_for_restore(&p, "deleted store");
    send(&p, &sent, &parts[2], || {});
    check(&p, &sent, &expected, "restored twice");
    check_views(&p, "restored twice");
    let restored = restored_from(&p.engine_log());
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert_eq!(restored[1], newest);
}

/// One `Error:` line that names `cause` and `remedy`; no panic, no backtrace.
fn assert_refusal(stderr: &str, cause: &str, remedy: &str) {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(
        errors[0].contains(cause) && errors[0].contains(remedy),
        "`{cause}` and `{remedy}` in: {}",
        errors[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// Drill 5: 1 → 2 processes, the second on an empty disk of its own, through the object store.
#[test]
fn a_cluster_grows_through_the_object_store_onto_an_empty_disk() {
    let _store = OBJECT_STORE.read().unwrap_or_else(|e| e.into_inner());
    let teams = [
        (43, "phc_grow_a"),
        (44, "phc_grow_b"),
        (45, "phc_grow_c"),
        (46, "phc_grow_d"),
    ];
    let sent = spread_history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let expected = final_state(&persons);
    let (p, _prefix) = pipeline(1, 3, "1h", true, &teams);
    let send_teams = |first: &str, n: u32| {
        for (_, token) in &teams {
            let event = serde_json::json!({"event": "$pageview", "distinct_id": "u1",
                "uuid": uuid::Uuid::now_v7().to_string(),
                "properties": {"$set_once": {"first": first}, "$set": {"n": n}}});
            assert_eq!(p.send_batch_with_token(token, &[event]), 200);
        }
    };
    let persons_with = |n: u32, first: &str| {
        format!(
            "SELECT count() FROM person FINAL WHERE team_id != {TEAM_ID} AND JSONExtractInt(properties, 'n') = {n} AND JSONExtractString(properties, 'first') = '{first}'"
        )
    };
    let parts = shuffled_parts(&sent, 2);
    p.start_capture();
    p.start_engine();
    send(&p, &sent, &parts[0], || {});
    send_teams("one", 1);
    wait_counts(&p, parts[0].len(), "grow");
    assert_eq!(
        p.wait_for(&persons_with(1, "one"), 4, Duration::from_secs(90)),
        4
    );
    assert!(p.stop_engine(), "{}", p.engine_log());

    let out = p.hogstream(&["state", "resize", "--processes", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("from process 0 to process 1") && stdout.contains("in the object store"),
        "{stdout}"
    );
    let resized = checkpoints(&p, 1);
    assert_eq!(resized.len(), 1, "a checkpoint for the new process");
    assert_eq!(resized[0]["source"], "resize");
    assert_eq!(resized[0]["processes"], 2);

    // Process 1 runs on another "host": an empty disk of its own.
    let other_host = p.dir.join("host-b");
    p.start_engine_cluster_on(&[None, Some(other_host.clone())]);
    wait_for_restore(&p, "grown to 2 processes");
    send(&p, &sent, &parts[1], || {});
    send_teams("two", 2);
    check(&p, &sent, &expected, "grown to 2 processes");
    check_views(&p, "grown to 2 processes");
    assert_eq!(
        p.wait_for(&persons_with(2, "one"), 4, Duration::from_secs(120)),
        4,
        "every person kept its first value: {}",
        p.engine_log()
    );
    assert_eq!(p.query_u64(&persons_with(2, "two")).unwrap(), 0);
    assert!(other_host.join("process-1/CURRENT").exists());
    let restores = restored_from(&p.engine_log());
    assert_eq!(restores.len(), 2, "both processes restored their part");
}

/// Drill 6: a cluster that loses a process under load.
#[test]
fn a_cluster_that_loses_a_process_exits_cleanly_and_resumes_from_its_stores() {
    let _store = OBJECT_STORE.read().unwrap_or_else(|e| e.into_inner());
    let sent = spread_history();
    let persons: Vec<_> = sent.iter().map(|s| s.person.clone()).collect();
    let expected = final_state(&persons);
    let (p, _prefix) = pipeline(1, 3, "2s", true, &[]);
    p.start_capture();
    p.start_engine_cluster(2);
    let order: Vec<usize> = shuffled_parts(&sent, 1).concat();
    let mut killed = false;
    send(&p, &sent, &order, || {
        // Under load: process 1 dies while events stream in.
        p.wait_until_something_is_stored("lost process");
        p.kill_cluster_process(1);
        killed = true;
    });
    assert!(killed);
    let status = p
        .wait_cluster_process(0, Duration::from_secs(60))
        .expect("the survivor exits");
    assert_eq!(
        status.code(),
        Some(hogstream_engine::recovery::lost_peer::EXIT_LOST_PEER),
        "{}",
        p.engine_log()
    );
    let survivor = std::fs::read_to_string(p.dir.join("engine-0.log")).unwrap();
    let lost: Vec<&str> = survivor
        .lines()
        .filter(|l| l.contains("lost engine process 1"))
        .collect();
    assert_eq!(lost.len(), 1, "one line names the lost peer:\n{survivor}");
    assert!(
        !survivor.contains("panicked") && !survivor.contains("RUST_BACKTRACE"),
        "no panic or backtrace:\n{survivor}"
    );
    p.clear_cluster();
    p.start_engine_cluster(2);
    check(&p, &sent, &expected, "after losing a process");
    check_views(&p, "after losing a process");
    assert!(
        restored_from(&p.engine_log()).is_empty(),
        "the stores were intact: nothing restored"
    );
}

/// Checkpoints over HTTPS: the object store's certificate is checked against `ca_file`, and a
/// store signed by another CA is refused with a line that says so.
#[test]
fn checkpoints_travel_over_https_checked_against_the_ca_file() {
    let _store = OBJECT_STORE.read().unwrap_or_else(|e| e.into_inner());
    let (p, _prefix) = pipeline(1, 1, "1s", false, &[]);
    let https = format!(
        "https://127.0.0.1:{}",
        std::env::var("HOGSTREAM_S3_HTTPS_PORT").unwrap_or_else(|_| "8433".into())
    );
    let ca = common::tls_dir().join("ca.pem");
    p.rewrite_config(|c| {
        c.replace(
            &format!("endpoint = \"{}\"", common::objects::s3_endpoint()),
            &format!("endpoint = \"{https}\"\nca_file = \"{}\"", ca.display()),
        )
    });
    p.start_capture();
    p.start_engine();
    let events: Vec<Value> = (0..20)
        .map(|i| common::pipeline::event(i, uuid::Uuid::now_v7()))
        .collect();
    assert_eq!(p.send_batch(&events), 200);
    wait_counts(&p, 20, "https");
    wait_for_checkpoint(&p, 20);
    assert!(p.stop_engine(), "{}", p.engine_log());

    // Another CA's certificate: refused, and said so.
    let other = common::tls_dir().join("other-ca.pem");
    p.rewrite_config(|c| c.replace(&ca.display().to_string(), &other.display().to_string()));
    let out = p.hogstream(&["state", "checkpoints", "-p", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&https) && stderr.to_lowercase().contains("certificate"),
        "the error names the store and the certificate: {stderr}"
    );
}
