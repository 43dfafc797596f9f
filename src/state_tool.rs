//! `hogstream state resize`: changes the process count of an engine cluster whose stores hold
//! person state. A team's person state lives in the store of the process that owns the team's
//! virtual shard (`hogstream_engine::shards`), so a new count moves the teams of the shards that
//! change process; this moves their records, offline, between the process stores under
//! `[engine] data_dir`, then records the new layout in every store.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, Result, bail};
use hogstream_engine::{
    shards::{VIRTUAL_SHARDS, process_of, shard_of},
    teams::team_route,
};
use hogstream_state::{Layout, StateStore};

use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Move person state for a new cluster size. Every engine process must be stopped, and every
    /// process's store must be under this host's `[engine] data_dir` (`process-N`).
    #[command(after_help = "\
Safe to run again after an interruption. Source offsets need no move: a partition that changes \
process resumes from the consumer group's commit, which is never ahead of what was stored. \
Example (2 -> 3 processes): stop all engines, copy every process-N folder under one data_dir, \
run `hogstream state resize --processes 3 --dry-run` to see what moves, then without \
--dry-run, copy process-N back to engine N, start 3 engines.")]
    Resize {
        /// The new number of processes.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        processes: u64,
        /// Print what would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn store_dir(config: &Config, process: u64) -> PathBuf {
    config.engine.data_dir.join(format!("process-{process}"))
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

pub fn run(config: &Config, command: StateCommand) -> Result<()> {
    let StateCommand::Resize { processes, dry_run } = command;
    let existing: Vec<u64> = (0..1024)
        .filter(|p| store_dir(config, *p).exists())
        .collect();
    if existing.is_empty() {
        bail!(
            "no process store under {} (process-0, process-1, …): nothing to resize",
            config.engine.data_dir.display()
        );
    }
    let layout = Layout {
        processes,
        shards: VIRTUAL_SHARDS,
    };
    let target = target_of(config, processes);
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
        return report(&stores, &target, layout);
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
    let mut total = 0;
    for (from, store) in stores.iter().enumerate() {
        let moved = store.move_team_state(&stores, |team| {
            let to = target(team)? as usize;
            Ok((to != from).then_some(to))
        })?;
        for (to, n) in moved.iter().enumerate().filter(|(_, n)| **n > 0) {
            println!("moved {n} person-state and view records from process {from} to process {to}");
            total += n;
        }
    }
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
