//! Virtual shards: the fixed unit in which teams, with their person state, are owned and moved.
//!
//! A team belongs to one of [`VIRTUAL_SHARDS`] shards, chosen by its route (a hash of its
//! token). Shards, not teams, are given to processes and workers, by jump consistent hashing.
//! When a cluster grows from n to n+1 processes, only the shards the new process takes move
//! (about 1/(n+1) of them); when it shrinks, only the removed process's shards move. Taking
//! `route % processes` instead would move n/(n+1) of all person state on every resize.
//!
//! The shard count is fixed for good: a different count would move nearly every team.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// How many virtual shards there are. Enough to spread teams evenly over any cluster this
/// engine is meant for (thousands of workers), few enough to list in an operator's report.
pub const VIRTUAL_SHARDS: u32 = 4096;

/// Seeds that make a shard's process and its worker within the process independent choices.
const PROCESS_SEED: u64 = 1;
const WORKER_SEED: u64 = 2;

/// The shard of a route.
pub fn shard_of(route: u64) -> u32 {
    u32::try_from(route % u64::from(VIRTUAL_SHARDS)).expect("below VIRTUAL_SHARDS")
}

/// One of `buckets` (at least one) for `shard`; stable for a bucket count, and moving only what
/// it must when the count changes.
fn bucket(shard: u32, seed: u64, buckets: u64) -> u64 {
    let buckets = u32::try_from(buckets.max(1)).unwrap_or(u32::MAX);
    u64::from(jumpch::hash(
        xxh3_64_with_seed(&shard.to_le_bytes(), seed),
        buckets,
    ))
}

/// The process that owns `shard` in a cluster of `processes`: where its person state lives.
/// `hogstream state resize` moves state by the same rule.
pub fn process_of(shard: u32, processes: u64) -> u64 {
    bucket(shard, PROCESS_SEED, processes)
}

/// The worker that owns `shard`, as a global worker index (`process * workers + local`).
/// Its process depends on the process count alone, so a new number of workers per process
/// never moves person state to another process's store.
pub fn worker_of(shard: u32, processes: u64, workers: u64) -> u64 {
    process_of(shard, processes) * workers.max(1) + bucket(shard, WORKER_SEED, workers)
}

/// The shards `worker` owns.
pub fn shards_of_worker(worker: u64, processes: u64, workers: u64) -> usize {
    (0..VIRTUAL_SHARDS)
        .filter(|s| worker_of(*s, processes, workers) == worker)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(processes: u64) -> Vec<u64> {
        (0..VIRTUAL_SHARDS)
            .map(|s| process_of(s, processes))
            .collect()
    }

    #[test]
    fn growing_moves_only_the_shards_the_new_process_takes() {
        for n in 1..12u64 {
            let (before, after) = (owners(n), owners(n + 1));
            let moved: Vec<usize> = (0..before.len())
                .filter(|&s| before[s] != after[s])
                .collect();
            assert!(
                moved.iter().all(|&s| after[s] == n),
                "{n} -> {}: a moved shard goes to the new process",
                n + 1
            );
            // The new process's fair share is 1/(n+1); allow the spread of 4096 draws.
            let share = moved.len() as f64 / f64::from(VIRTUAL_SHARDS);
            let fair = 1.0 / (n + 1) as f64;
            assert!(
                (share - fair).abs() < 0.25 * fair,
                "{n} -> {}: moved {share:.3} of the shards, fair is {fair:.3}",
                n + 1
            );
        }
    }

    #[test]
    fn shards_spread_evenly_over_processes_and_workers() {
        let (processes, workers) = (3u64, 4u64);
        let total = processes * workers;
        let fair = f64::from(VIRTUAL_SHARDS) / total as f64;
        for w in 0..total {
            let n = shards_of_worker(w, processes, workers) as f64;
            assert!(
                (n - fair).abs() < 0.25 * fair,
                "worker {w} owns {n} shards, fair is {fair:.0}"
            );
        }
    }

    #[test]
    fn a_shard_stays_in_its_process_whatever_the_worker_count() {
        for shard in 0..VIRTUAL_SHARDS {
            for processes in 1..4u64 {
                let home = process_of(shard, processes);
                for workers in 1..6 {
                    let w = worker_of(shard, processes, workers);
                    assert!(w < processes * workers, "a valid worker index");
                    assert_eq!(w / workers, home, "shard {shard}, {processes} processes");
                }
            }
        }
    }

    #[test]
    fn routes_cover_every_shard() {
        let mut seen = vec![false; VIRTUAL_SHARDS as usize];
        for token in 0..100_000u64 {
            let route = xxhash_rust::xxh3::xxh3_64(format!("phc_{token}").as_bytes());
            seen[shard_of(route) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
