//! `hogstream state resize`: changes the process count of an engine cluster whose stores hold
//! person state. A team's person state lives in the store of the process that owns it
//! (`route % processes`), so a new count moves teams; this moves their records, offline, between
//! the process stores under `[engine] data_dir`, then records the new count in every store.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hogstream_engine::{dataflow::process_of, source::team_route};
use hogstream_state::StateStore;

use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Move person state for a new cluster size. Every engine process must be stopped, and every
    /// process's store must be under this host's `[engine] data_dir` (`process-N`).
    #[command(after_help = "\
Safe to run again after an interruption. Source offsets need no move: a partition that changes \
process resumes from the consumer group's commit, which is never ahead of what was stored. \
Example (2 -> 3 processes): stop all engines, copy every process-N folder under one data_dir, \
run `hogstream state resize --processes 3`, copy process-N back to engine N, start 3 engines.")]
    Resize {
        /// The new number of processes.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        processes: u64,
    },
}

fn store_dir(config: &Config, process: u64) -> PathBuf {
    config.engine.data_dir.join(format!("process-{process}"))
}

pub fn run(config: &Config, command: StateCommand) -> Result<()> {
    let StateCommand::Resize { processes } = command;
    let existing: Vec<u64> = (0..1024)
        .filter(|p| store_dir(config, *p).exists())
        .collect();
    if existing.is_empty() {
        bail!(
            "no process store under {} (process-0, process-1, …): nothing to resize",
            config.engine.data_dir.display()
        );
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
    let routes: std::collections::HashMap<i64, u64> = config
        .teams
        .iter()
        .map(|t| (t.id, team_route(&t.token)))
        .collect();
    let mut total = 0;
    for (from, store) in stores.iter().enumerate() {
        let moved = store.move_person_state(&stores, |team| {
            let route = routes.get(&team).ok_or(team)?;
            let to = process_of(*route, processes) as usize;
            Ok((to != from).then_some(to))
        })?;
        for (to, n) in moved.iter().enumerate().filter(|(_, n)| **n > 0) {
            println!("moved {n} person-state records from process {from} to process {to}");
            total += n;
        }
    }
    for store in stores.iter().take(processes as usize) {
        store.set_layout(processes)?;
    }
    println!(
        "person state is laid out for {processes} processes ({total} records moved); start {processes} engine processes"
    );
    if count > processes {
        println!(
            "process-{processes} … process-{} hold no person state any more and are not used by a {processes}-process cluster",
            count - 1
        );
    }
    Ok(())
}
