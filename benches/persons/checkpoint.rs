//! `cargo bench --bench persons -- checkpoint [N]` (`scripts/bench.sh checkpoint-state`): the
//! person state of N persons (default 10 million) checkpointed to the local S3-compatible
//! object store (`scripts/services.sh start s3`): a full checkpoint, an incremental one after 1%
//! of the persons changed, one with nothing changed, and a restore (download, checks, open);
//! beside the raw object store in the same run (one table file put and got whole), and
//! extrapolated to a billion persons.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hogstream_objects::{ObjectStoreConfig, Objects};
use hogstream_state::{
    Layout, StateStore,
    checkpoint::{Manifest, Snapshot, Source, Uploader, download, process_root},
    persons::{PersonState, record_key},
};

use super::{CACHE_BYTES, TEAM, dir_bytes, distinct_id, measure, pool, update};

fn local_store(prefix: &str) -> Objects {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::var("HOGSTREAM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".local/data"));
    let port = std::env::var("HOGSTREAM_S3_PORT").unwrap_or_else(|_| "8333".into());
    let mut c = ObjectStoreConfig::at(format!("s3://hogstream/{prefix}"));
    c.endpoint = Some(format!("http://127.0.0.1:{port}"));
    c.access_key_id = Some("hogstream".into());
    c.secret_access_key = Some(hogstream_event::security::Secret::File(
        data.join("s3/secret-key"),
    ));
    Objects::connect(&c).expect("the local object store (scripts/services.sh start s3)")
}

/// Requests the object store client made so far, from the metrics recorder.
fn requests(handle: &metrics_exporter_prometheus::PrometheusHandle) -> f64 {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with(hogstream_objects::REQUESTS))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn rate(bytes: u64, took: Duration) -> f64 {
    mb(bytes) / took.as_secs_f64().max(1e-6)
}

struct Row {
    what: String,
    took: Duration,
    bytes: u64,
    files: usize,
    requests: f64,
}

pub fn section(dir: &Path, n: usize, threads: usize) {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a metrics recorder");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let prefix = format!(
        "bench/checkpoint-{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    );
    let objects = local_store(&prefix);
    rt.block_on(objects.check())
        .expect("the local object store answers (scripts/services.sh start s3)");
    println!("checkpoint benchmark: {n} persons, store {}", dir.display());
    let mut seq = 0u64;
    let load = super::load(dir, n, &mut seq, threads);
    let store = StateStore::open(dir, CACHE_BYTES).expect("open the store");
    store
        .claim_layout(Layout {
            processes: 1,
            shards: 4096,
        })
        .expect("a layout");
    let disk = dir_bytes(dir);
    println!(
        "loaded {n} persons at {load:.0}/s; {:.2} GiB on disk ({:.0} bytes/person)",
        disk as f64 / f64::from(1 << 30),
        disk as f64 / n as f64
    );

    // Baseline: the object store itself, one large table file put and got whole.
    let largest = std::fs::read_dir(dir)
        .expect("the store")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a table file");
    let started = Instant::now();
    let stored = rt
        .block_on(objects.upload_file("baseline/one-file", &largest))
        .expect("put");
    let put = started.elapsed();
    let back = dir.with_extension("baseline");
    let started = Instant::now();
    rt.block_on(objects.download_file("baseline/one-file", &back, &stored))
        .expect("get");
    let got = started.elapsed();
    let _ = std::fs::remove_file(&back);

    let snapshot_dir = dir.with_extension("snapshot");
    let mut uploader = rt
        .block_on(Uploader::open(
            &objects,
            0,
            store.lineage().expect("lineage"),
            None,
            3,
        ))
        .expect("an uploader");
    let mut rows = Vec::new();
    let mut take = |label: &str, uploader: &mut Uploader| -> (Manifest, Duration) {
        let before = requests(&handle);
        let started = Instant::now();
        let snapshot = Snapshot::take(&store, &snapshot_dir).expect("a snapshot");
        let snapped = started.elapsed();
        let manifest = rt
            .block_on(uploader.upload(&snapshot, Vec::new(), None, Source::Engine))
            .expect("an upload");
        let took = started.elapsed();
        rows.push(Row {
            what: format!(
                "{label} (local snapshot {:.0} ms)",
                snapped.as_secs_f64() * 1e3
            ),
            took,
            bytes: manifest.uploaded_bytes,
            files: manifest.files.len(),
            requests: requests(&handle) - before,
        });
        (manifest, took)
    };
    let (full, full_took) = take("full checkpoint", &mut uploader);
    // 1% of the persons change (a `$set` each), as an hour of a busy day might.
    let changed: Vec<usize> = (0..n / 100).map(|k| (k * 97) % n).collect();
    pool(threads).install(|| {
        let mut state = PersonState::new(store.clone(), Default::default()).expect("state");
        measure(&mut state, &store, &changed, &mut seq, update);
    });
    let (incremental, _) = take(
        "incremental, after 1% of the persons changed",
        &mut uploader,
    );
    let (_, _) = take("incremental, nothing changed", &mut uploader);

    let restore_dir = dir.with_extension("restored");
    let started = Instant::now();
    let downloaded = rt
        .block_on(download(
            &process_root(&objects, 0),
            &incremental,
            &restore_dir,
        ))
        .expect("a restore");
    let restored = StateStore::open(&restore_dir, CACHE_BYTES).expect("the restored store opens");
    let restore_took = started.elapsed();
    for i in [0, n / 2, n - 1, changed[changed.len() / 2]] {
        let key = record_key(TEAM, &distinct_id(i));
        let want = store.get_state(&key).unwrap();
        assert!(want.is_some(), "person {i} has a record");
        assert_eq!(
            restored.get_state(&key).unwrap(),
            want,
            "the restored store holds what was checkpointed"
        );
    }
    drop(restored);

    println!();
    println!("| what | time | uploaded / read | rate | files | requests |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| baseline: one {:.0} MB table file, put whole | {:.2} s | {:.0} MB | {:.0} MB/s | 1 | |",
        mb(stored.size),
        put.as_secs_f64(),
        mb(stored.size),
        rate(stored.size, put)
    );
    println!(
        "| baseline: the same file, got whole | {:.2} s | {:.0} MB | {:.0} MB/s | 1 | |",
        got.as_secs_f64(),
        mb(stored.size),
        rate(stored.size, got)
    );
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.1} MB | {:.0} MB/s | {} | {:.0} |",
            r.what,
            r.took.as_secs_f64(),
            mb(r.bytes),
            rate(r.bytes, r.took),
            r.files,
            r.requests
        );
    }
    println!(
        "| restore: download {} files, check, open | {:.2} s | {:.0} MB | {:.0} MB/s | {} | |",
        downloaded.files,
        restore_took.as_secs_f64(),
        mb(downloaded.bytes),
        rate(downloaded.bytes, restore_took),
        downloaded.files
    );
    let scale = 1e9 / n as f64;
    println!(
        "\nat a billion persons (linear in persons, same machine and store): {:.0} GB per full checkpoint, {:.0} s to upload it; a restore {:.0} s ({:.0} min); an incremental checkpoint after 1% changed ~{:.1} GB",
        mb(full.size()) * scale / 1e3,
        full_took.as_secs_f64() * scale,
        restore_took.as_secs_f64() * scale,
        restore_took.as_secs_f64() * scale / 60.0,
        mb(incremental.uploaded_bytes) * scale / 1e3
    );

    // Leave nothing behind.
    rt.block_on(async {
        for (key, _) in objects.list("").await.unwrap_or_default() {
            let _ = objects.delete(&key).await;
        }
    });
    let _ = std::fs::remove_dir_all(&restore_dir);
}
