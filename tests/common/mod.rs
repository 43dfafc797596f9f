//! Helpers shared by the integration tests. Every test here runs against the real broker and
//! the real ClickHouse engine started by `scripts/services.sh`; a missing service fails the
//! test with a message that says how to start it, never a silent pass.
#![allow(dead_code)] // each test binary uses its own subset

pub mod broker;
pub mod objects;
pub mod persons;
pub mod pipeline;
pub mod prometheus;
pub mod views;
pub mod webhook;

use std::{
    net::{TcpStream, ToSocketAddrs},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub fn brokers() -> String {
    std::env::var("HOGSTREAM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("HOGSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The certificates and passwords of the local secured listeners (`scripts/tls.py`).
pub fn tls_dir() -> PathBuf {
    std::env::var("HOGSTREAM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".local/data"))
        .join("tls")
}

/// The local broker's TLS + SASL listener.
pub fn secure_brokers() -> String {
    let port = std::env::var("HOGSTREAM_KAFKA_TLS_PORT").unwrap_or_else(|_| "9094".into());
    format!("127.0.0.1:{port}")
}

/// The local ClickHouse front's HTTPS port.
pub fn clickhouse_https_url() -> String {
    let port = std::env::var("HOGSTREAM_CLICKHOUSE_HTTPS_PORT").unwrap_or_else(|_| "8443".into());
    format!("https://127.0.0.1:{port}")
}

pub fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Panics unless the broker answers on its port.
pub fn require_kafka() -> String {
    let b = brokers();
    let first = b.split(',').next().unwrap_or_default().to_owned();
    assert!(
        reachable(&first),
        "no Kafka broker at {b}: start it with `scripts/services.sh start` (this test needs the real broker)"
    );
    b
}

/// Panics unless ClickHouse answers `/ping`.
pub fn require_clickhouse() -> String {
    let url = clickhouse_url();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        reachable(&host),
        "no ClickHouse at {url}: start it with `scripts/services.sh start` (this test needs the real engine)"
    );
    url
}

/// Ports this test binary handed out (see [`free_port`]).
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A local TCP port nothing listens on right now, and never handed out before in this test
/// binary: its tests run in parallel, and two of them must not pick the same port between
/// choosing it and binding it (an engine then failed with "address already in use").
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A free local port outside `taken` (ports chosen earlier that nothing listens on yet).
pub fn free_port_outside(taken: &[std::ops::Range<u16>]) -> u16 {
    loop {
        let port = free_port();
        if !taken.iter().any(|r| r.contains(&port)) {
            return port;
        }
    }
}

/// `n` consecutive free local ports, none in `taken`: a cluster's process `p` serves its
/// metrics on the first + `p`.
pub fn free_ports(n: u16, taken: &[std::ops::Range<u16>]) -> std::ops::Range<u16> {
    loop {
        let first = free_port_outside(taken);
        let Some(end) = first.checked_add(n) else {
            continue;
        };
        let range = first..end;
        if taken
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
        {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if range.clone().skip(1).any(|p| handed_out.contains(&p)) {
            continue;
        }
        let held: Vec<_> = range
            .clone()
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            handed_out.extend(range.clone().skip(1));
            return range;
        }
    }
}

/// A name no other test or run has used, for topics, databases and directories.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `scripts/services.sh <args>` and panics if it fails.
pub fn services(args: &[&str]) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/services.sh"))
        .args(args)
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {args:?} failed");
}

pub mod capture;
