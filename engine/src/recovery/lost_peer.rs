//! A cluster that loses a process stops cleanly on every survivor.
//!
//! Timely's membership is static: when a peer process dies, the threads that carry its
//! messages panic ("timely communication error: …") to take the computation down, and the
//! workers follow with panics of their own. Nothing of that run can go on, so a survivor exits
//! at once with one log line that names the lost peer and [`EXIT_LOST_PEER`], without a panic
//! message or a backtrace; its supervisor restarts it, and the restarted cluster resumes from
//! its stores (everything since the last stored offsets is read again, idempotently).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// The exit status of a process whose cluster lost a peer: EX_TEMPFAIL, "try again".
pub const EXIT_LOST_PEER: i32 = 75;

/// What timely's communication threads are called: `timely:send-{peer}`, `timely:recv-{peer}`.
const COMMUNICATION_THREADS: [&str; 2] = ["timely:send-", "timely:recv-"];

/// Set by the first thread that reports a lost peer; the others stay quiet while it exits.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Installs the panic hook that turns a lost peer into a clean exit; other panics go to the
/// hook that was installed before. `addresses` are the cluster's, by process index.
pub fn exit_when_a_peer_is_lost(addresses: Vec<String>, shutdown: Arc<AtomicBool>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if EXITING.load(Ordering::SeqCst) {
            // Another thread is reporting the loss and exiting; what follows it here (poisoned
            // queues, more closed sockets) is its echo.
            loop {
                std::thread::park();
            }
        }
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let Some(lost) = lost_peer(thread.name().unwrap_or_default(), message) else {
            return previous(info);
        };
        if EXITING.swap(true, Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
        let who = match lost {
            Some(peer) => format!(
                "engine process {peer} ({})",
                addresses
                    .get(peer)
                    .map_or("unknown address", String::as_str)
            ),
            None => "an engine process".to_owned(),
        };
        let cause = message.trim_start_matches("timely communication error: ");
        let when = if shutdown.load(Ordering::Relaxed) {
            " while stopping"
        } else {
            ""
        };
        tracing::error!(
            exit_status = EXIT_LOST_PEER,
            "the engine cluster lost {who}{when} ({cause}); this process exits so that its supervisor restarts the cluster, which resumes from its stores"
        );
        std::process::exit(EXIT_LOST_PEER);
    }));
}

/// Whether a panic on thread `thread` with `message` is timely's reaction to a lost peer (its
/// communication threads panic with "timely communication error: …"): `Some(Some(peer))` when
/// the thread names it, `Some(None)` when it does not, `None` for any other panic, which is a
/// fault of this process and reported as such.
fn lost_peer(thread: &str, message: &str) -> Option<Option<usize>> {
    if !message.starts_with("timely communication error") {
        return None;
    }
    Some(
        COMMUNICATION_THREADS
            .iter()
            .find_map(|prefix| thread.strip_prefix(prefix))
            .and_then(|index| index.parse().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::lost_peer;

    #[test]
    fn timely_communication_panics_name_the_lost_peer() {
        assert_eq!(
            lost_peer(
                "timely:recv-1",
                "timely communication error: reading data: socket closed"
            ),
            Some(Some(1))
        );
        assert_eq!(
            lost_peer(
                "timely:send-3",
                "timely communication error: flushing writer: broken pipe"
            ),
            Some(Some(3))
        );
        assert_eq!(
            lost_peer(
                "timely:work-0",
                "timely communication error: reading data: eof"
            ),
            Some(None)
        );
        assert_eq!(
            lost_peer("timely:work-0", "MergeQueue poisoned."),
            None,
            "an echo of a panic of this process, not a lost peer"
        );
        assert_eq!(lost_peer("timely:recv-1", "index out of bounds"), None);
        assert_eq!(lost_peer("main", "boom"), None);
    }
}
