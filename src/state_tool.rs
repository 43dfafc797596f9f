//! `hogstream state …`: the engine's stores and their checkpoints, for operators.
//!
//! - `resize` changes the process count of a cluster whose stores hold person state. A team's
//!   person state lives in the store of the process that owns the team's virtual shard
//!   (`hogstream_engine::shards`), so a new count moves the teams of the shards that change
//!   process. With `[checkpoints]` configured it works on the object store: it reads the newest
//!   checkpoint of every process, moves the records between them, and uploads one checkpoint per
//!   process of the new layout, which each engine restores at its next start, on any host.
//!   Without, it moves records between the process stores under `[engine] data_dir`.
//! - `checkpoints` lists the checkpoints in the object store.
//! - `init` creates an empty store on purpose: the engine then starts without person state
//!   where it would otherwise refuse to.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use hogstream_engine::{
    shards::{VIRTUAL_SHARDS, process_of, shard_of},
    teams::team_route,
};
use hogstream_objects::Objects;
use hogstream_state::{
    Layout, PartitionOffset, StateStore,
    checkpoint::{self, Manifest, Snapshot, Source, Uploader},
    lifecycle::FROM_START,
};

use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Move person state for a new cluster size. Every engine process must be stopped.
    #[command(after_help = "\
Safe to run again after an interruption. With [checkpoints] configured it reads the newest \
checkpoint of every process from the object store and uploads one checkpoint per process of the \
new layout (nothing local is changed); start the new cluster with `restore = true` in \
[checkpoints] and each process restores its part, on any host (runbook 14.6). Without \
[checkpoints] every process's store must be under this host's [engine] data_dir (process-N): \
stop all engines, copy every process-N folder under one data_dir, run with --dry-run to see what \
moves, then without, copy process-N back to engine N, start the engines (runbook 9.3).")]
    Resize {
        /// The new number of processes.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        processes: u64,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the checkpoints in the object store of `[checkpoints]`, newest first.
    Checkpoints {
        /// Only this process's.
        #[arg(long, short = 'p')]
        process: Option<u64>,
        /// Print the manifests as JSON (one array), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Create an empty store for one engine process, on purpose: the engine then starts
    /// without the person state it had (every person it knew is made anew). For a store that
    /// was lost with no checkpoint to restore.
    Init {
        /// Number of processes of the cluster.
        #[arg(short = 'n', long, default_value_t = 1)]
        processes: u64,
        /// The process whose store to create.
        #[arg(short = 'p', long, default_value_t = 0)]
        process: u64,
    },
}

fn store_dir(config: &Config, process: u64) -> PathBuf {
    config.engine.data_dir.join(format!("process-{process}"))
}

fn objects(config: &Config) -> Result<Option<Objects>> {
    config
        .checkpoints
        .as_ref()
        .map(|c| Objects::connect(&c.store).context("[checkpoints] store"))
        .transpose()
}

/// The process whose store a team's person state belongs in, under the new layout.
fn target_of(config: &Config, processes: u64) -> impl Fn(i64) -> Result<u64, i64> {
    let shards: BTreeMap<i64, u32> = config
        .teams
        .iter()
        .map(|t| (t.id, shard_of(team_route(&t.token))))
        .collect();
    move |team| {
        let shard = shards.get(&team).ok_or(team)?;
        Ok(process_of(*shard, processes))
    }
}

pub async fn run(config: &Config, command: StateCommand) -> Result<()> {
    match command {
        StateCommand::Resize { processes, dry_run } => match objects(config)? {
            Some(objects) => resize_checkpoints(config, &objects, processes, dry_run).await,
            None => resize_local(config, processes, dry_run),
        },
        StateCommand::Checkpoints { process, json } => {
            let Some(objects) = objects(config)? else {
                bail!("no [checkpoints] store is configured: there are no checkpoints to list");
            };
            list(&objects, process, json).await
        }
        StateCommand::Init { processes, process } => init(config, processes, process),
    }
}

fn new_layout(processes: u64) -> Layout {
    Layout {
        processes,
        shards: VIRTUAL_SHARDS,
    }
}

/// Moves team records between `stores` (index = process) so every team sits in its process
/// under `processes`; returns the records moved.
fn move_teams(config: &Config, stores: &[StateStore], processes: u64) -> Result<u64> {
    let target = target_of(config, processes);
    let mut total = 0;
    for (from, store) in stores.iter().enumerate() {
        let moved = store.move_team_state(stores, |team| {
            let to = target(team)? as usize;
            Ok((to != from).then_some(to))
        })?;
        for (to, n) in moved.iter().enumerate().filter(|(_, n)| **n > 0) {
            println!("moved {n} person-state and view records from process {from} to process {to}");
            total += n;
        }
    }
    Ok(total)
}

fn resize_local(config: &Config, processes: u64, dry_run: bool) -> Result<()> {
    let existing: Vec<u64> = (0..1024)
        .filter(|p| store_dir(config, *p).exists())
        .collect();
    if existing.is_empty() {
        bail!(
            "no process store under {} (process-0, process-1, …): nothing to resize",
            config.engine.data_dir.display()
        );
    }
    let layout = new_layout(processes);
    if dry_run {
        let stores = existing
            .iter()
            .map(|&p| {
                let dir = store_dir(config, p);
                let store = StateStore::open_read_only(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?;
                Ok((p, store))
            })
            .collect::<Result<Vec<_>>>()?;
        return report(&stores, &target_of(config, processes), layout);
    }
    let count = existing.iter().max().map_or(0, |m| m + 1).max(processes);
    let cache = config.engine.block_cache_bytes / count as usize;
    let stores = (0..count)
        .map(|p| {
            let dir = store_dir(config, p);
            StateStore::open(&dir, cache)
                .with_context(|| format!("opening {} (is an engine still running?)", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let total = move_teams(config, &stores, processes)?;
    for store in stores.iter().take(processes as usize) {
        store.set_layout(layout)?;
    }
    println!(
        "person state is laid out for {layout} ({total} records moved); start {processes} engine processes"
    );
    if count > processes {
        println!(
            "process-{processes} … process-{} hold no person state any more and are not used by a {processes}-process cluster",
            count - 1
        );
    }
    Ok(())
}

/// What a resize would move, team by team, without moving it: `stores` are the existing
/// process stores (index, store), opened read-only.
fn report(
    stores: &[(u64, StateStore)],
    target: &impl Fn(i64) -> Result<u64, i64>,
    layout: Layout,
) -> Result<()> {
    let mut total = 0u64;
    for (from, store) in stores {
        let before = store.layout()?;
        let before = before.map_or_else(|| "no layout".to_owned(), |l| l.to_string());
        println!("process-{from}: {before}");
        for (team, records) in store.person_records_by_team()? {
            let to = target(team)
                .map_err(|team| anyhow::anyhow!(hogstream_state::MoveError::UnknownTeam(team)))?;
            if to != *from {
                println!("  team {team}: {records} records would move to process {to}");
                total += records;
            }
        }
    }
    println!("dry run: {total} person-state records would move for {layout}; nothing was changed");
    Ok(())
}

/// The newest checkpoint of every process of the cluster's current layout: the layout of
/// process 0's newest checkpoint that is not already laid out for `processes`.
async fn current_checkpoints(objects: &Objects, processes: u64) -> Result<Vec<Manifest>> {
    let target = new_layout(processes);
    let first = checkpoint::list(&checkpoint::process_root(objects, 0)).await?;
    let Some(layout) = first.iter().map(Manifest::layout).find(|l| *l != target) else {
        if first.is_empty() {
            bail!("{objects} holds no checkpoint of process 0: nothing to resize");
        }
        bail!("the newest checkpoints are already laid out for {target}: nothing to resize");
    };
    let mut out = Vec::new();
    for p in 0..layout.processes {
        let root = checkpoint::process_root(objects, p);
        let (fit, _) = checkpoint::newest(&root, layout).await?;
        out.push(fit.with_context(|| {
            format!("process {p} has no checkpoint for {layout}: start the cluster once and stop it cleanly, then run this again")
        })?);
    }
    Ok(out)
}

/// Per partition, the lowest floor of `manifests` (a partition one of them does not name is
/// read from its start).
fn lowest_floors(manifests: &[Manifest]) -> Vec<PartitionOffset> {
    let mut all: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for m in manifests {
        for f in &m.floors {
            all.entry((f.topic.clone(), f.partition))
                .or_default()
                .push(f.next_offset);
        }
    }
    all.into_iter()
        .map(|((topic, partition), offsets)| PartitionOffset {
            topic,
            partition,
            next_offset: if offsets.len() == manifests.len() {
                offsets.into_iter().min().unwrap_or(FROM_START)
            } else {
                FROM_START
            },
        })
        .filter(|f| f.next_offset != FROM_START)
        .collect()
}

async fn resize_checkpoints(
    config: &Config,
    objects: &Objects,
    processes: u64,
    dry_run: bool,
) -> Result<()> {
    let old = current_checkpoints(objects, processes).await?;
    let layout = new_layout(processes);
    for m in &old {
        println!("from {m}");
        if m.source != Source::Shutdown {
            println!(
                "  (taken while process {} ran, not at a clean stop: the new cluster reads Kafka again from its offsets, which is safe but longer)",
                m.process
            );
        }
    }
    let work = config.engine.data_dir.join(format!(
        ".resize-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = resize_in(config, objects, &old, layout, &work, dry_run).await;
    std::fs::remove_dir_all(&work).ok();
    result
}

async fn resize_in(
    config: &Config,
    objects: &Objects,
    old: &[Manifest],
    layout: Layout,
    work: &Path,
    dry_run: bool,
) -> Result<()> {
    let count = (old.len() as u64).max(layout.processes);
    let cache = (config.engine.block_cache_bytes / count as usize).max(8 << 20);
    let mut stores = Vec::new();
    for p in 0..count {
        let dir = work.join(format!("process-{p}"));
        if let Some(m) = old.get(p as usize) {
            let root = checkpoint::process_root(objects, p);
            let got = checkpoint::download(&root, m, &dir).await?;
            println!(
                "downloaded process {p}: {} files, {:.1} MB in {:.1?}",
                got.files,
                got.bytes as f64 / 1e6,
                got.took
            );
        }
        stores.push(StateStore::open(&dir, cache)?);
    }
    if dry_run {
        let opened: Vec<(u64, StateStore)> = stores
            .into_iter()
            .take(old.len())
            .enumerate()
            .map(|(p, s)| (p as u64, s))
            .collect();
        return report(&opened, &target_of(config, layout.processes), layout);
    }
    let total = move_teams(config, &stores, layout.processes)?;
    let floors = lowest_floors(old);
    let floor_time = old.iter().filter_map(|m| m.floor_time).min();
    let origins: HashMap<u64, &str> = old.iter().map(|m| (m.process, m.id.as_str())).collect();
    for (p, store) in stores.iter().enumerate().take(layout.processes as usize) {
        let p = p as u64;
        store.set_layout(layout)?;
        // A new lineage: the moves wrote table files whose names the old store may have used.
        let lineage = store.renew_lineage()?;
        // Nothing is deleted while resizing, so an interrupted resize can run again.
        let mut uploader =
            Uploader::open(objects, p, lineage, origins.get(&p).copied(), usize::MAX).await?;
        let snapshot = Snapshot::take(store, &work.join(format!("snapshot-{p}")))?;
        let m = uploader
            .upload(&snapshot, floors.clone(), floor_time, Source::Resize)
            .await?;
        println!("uploaded {m} ({:.1} MB new)", m.uploaded_bytes as f64 / 1e6);
    }
    println!(
        "person state is laid out for {layout} in the object store ({total} records moved): start {} engine processes with `restore = true` in [checkpoints]; each restores its part, on any host",
        layout.processes
    );
    Ok(())
}

async fn list(objects: &Objects, process: Option<u64>, json: bool) -> Result<()> {
    let processes: Vec<u64> = match process {
        Some(p) => vec![p],
        None => {
            let mut found: Vec<u64> = objects
                .folders("")
                .await?
                .iter()
                .filter_map(|f| f.strip_prefix("process-")?.parse().ok())
                .collect();
            found.sort_unstable();
            found
        }
    };
    let mut all = Vec::new();
    for p in processes {
        let manifests = checkpoint::list(&checkpoint::process_root(objects, p)).await?;
        if !json {
            println!("process-{p}: {} checkpoints", manifests.len());
            for m in &manifests {
                println!(
                    "  {}  {:<8} {} processes  {:>4} files  {:>9.1} MB ({:.1} MB uploaded)  oldest message to read again: {}",
                    m.id,
                    format!("{:?}", m.source).to_lowercase(),
                    m.processes,
                    m.files.len(),
                    m.size() as f64 / 1e6,
                    m.uploaded_bytes as f64 / 1e6,
                    m.floor_time
                        .map_or("none (read to the end)".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        all.extend(manifests);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

fn init(config: &Config, processes: u64, process: u64) -> Result<()> {
    if process >= processes {
        bail!("--process {process} is outside a cluster of {processes} processes");
    }
    let dir = store_dir(config, process);
    let cache = config.engine.block_cache_bytes;
    match hogstream_state::Found::at(&dir, cache)? {
        hogstream_state::Found::Missing | hogstream_state::Found::Empty(_) => {}
        hogstream_state::Found::Ready(_) => bail!(
            "{} holds a store already; init only creates one where there is none",
            dir.display()
        ),
        hogstream_state::Found::Unreadable(e) => bail!(
            "{} holds a store that cannot be opened ({e}): move it aside first",
            dir.display()
        ),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = StateStore::open(&dir, cache)?;
    store.set_layout(new_layout(processes))?;
    tracing::warn!(
        process,
        dir = %dir.display(),
        "created an empty store on purpose: the engine starts without the person state it had"
    );
    println!(
        "created an empty store for process {process} of {processes} at {}",
        dir.display()
    );
    Ok(())
}
