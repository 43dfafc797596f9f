//! Capture's own surface under attack, on the real binary and broker: clients that hold
//! connections without sending, concurrent decompression bombs, and the inputs that used to be
//! misread. Health checks and ordinary requests keep being answered, and memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::capture::Capture;
use serde_json::json;

const TOKEN: &str = "phc_attacks";

/// Peak resident memory of a process so far, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The slowest `/_liveness` answer while `during` runs on other threads.
fn slowest_liveness_while(url: &str, during: impl FnOnce() + Send + 'static) -> Duration {
    let work = std::thread::spawn(during);
    let http = client();
    let mut slowest = Duration::ZERO;
    while !work.is_finished() {
        let started = Instant::now();
        let status = http
            .get(format!("{url}/_liveness"))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success());
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    work.join().unwrap();
    slowest
}

/// Eight concurrent requests, each ~100 KB of gzip that expands to 95 MB of zeros (under the
/// per-request cap, so each alone would be decoded whole), against a capture configured with
/// `extra`. Returns every answer, the slowest `/_liveness` meanwhile, and the peak RSS.
fn bombard(extra: &str) -> (Vec<(u16, serde_json::Value)>, Duration, u64) {
    let capture = Capture::start_with("attack_bombs", extra);
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..95 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    let url = capture.url.clone();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let slowest = slowest_liveness_while(&capture.url, move || {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (url, bomb, seen) = (url.clone(), bomb.clone(), seen.clone());
                std::thread::spawn(move || {
                    let response = client()
                        .post(format!("{url}/batch"))
                        .header("Content-Type", "application/json")
                        .header("Content-Encoding", "gzip")
                        .body(bomb)
                        .send()
                        .unwrap();
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().unwrap();
                    seen.lock().unwrap().push((status, body));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    let peak = peak_rss(capture.pid());
    let statuses = statuses.lock().unwrap().clone();
    (statuses, slowest, peak)
}

#[test]
fn eight_concurrent_decompression_bombs_stay_within_the_budget_and_do_not_stall_health() {
    let (statuses, slowest, peak) = bombard("");
    // The same bombs against a budget too large to matter: what the bound saves.
    let (_, _, unbounded) = bombard("[capture.limits]\nmax_decoding_bytes = 100000000000\n");
    eprintln!(
        "slowest /_liveness {slowest:?}; peak RSS {} MiB with the 256 MiB decoding budget, {} MiB without",
        peak >> 20,
        unbounded >> 20
    );
    assert_eq!(statuses.len(), 8);
    for (status, body) in &statuses {
        assert!(
            *status == 400 || *status == 503,
            "a bomb is refused as bad JSON or for lack of decoding capacity, got {status} {body}"
        );
        if *status == 503 {
            assert_eq!(body["code"], "decoding_capacity", "{body}");
        }
    }
    assert!(
        statuses.iter().any(|(s, _)| *s == 503),
        "eight bombs at once exceed the 256 MiB budget: {statuses:?}"
    );
    // How far below the unbounded run the bounded one stays depends on how many of the eight
    // the unbounded capture happened to decode at once (two cores): 0.45–0.65 of it was seen.
    assert!(
        peak < 1 << 30 && peak * 10 < unbounded * 8,
        "peak resident memory {} MiB with the budget, {} MiB without: the budget must bound it",
        peak >> 20,
        unbounded >> 20
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/_liveness took {slowest:?} while the bombs were decoded"
    );
}

#[test]
fn idle_and_trickling_connections_are_closed_and_others_are_served() {
    let capture = Capture::start_with(
        "attack_slowloris",
        "[capture.limits]\nheader_read_timeout_ms = 1000\n",
    );
    let addr = capture.url.trim_start_matches("http://").to_owned();
    // 200 connections that send nothing, and 20 that send a header byte every 300 ms.
    let silent: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let tricklers: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let started = Instant::now();
                for b in b"POST /batch HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n" {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                started.elapsed()
            })
        })
        .collect();
    // Meanwhile an ordinary client is served.
    let answer = client()
        .post(format!("{}/i/v0/e", capture.url))
        .json(&json!({"api_key": TOKEN, "event": "ok", "distinct_id": "d"}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    for t in tricklers {
        let held = t.join().unwrap();
        assert!(
            held < Duration::from_secs(8),
            "a trickling client was held {held:?} with a 1 s header timeout"
        );
    }
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        // The server closed it: end of stream (0 bytes), not a read timeout.
        assert_eq!(
            s.read(&mut buf).unwrap_or(usize::MAX),
            0,
            "silent connection closed"
        );
    }
}
