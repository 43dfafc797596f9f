//! Secure connections on every hop, with the local broker's TLS + SASL listener and the
//! ClickHouse front's HTTPS port (certificates and passwords made by `scripts/tls.py`): events go
//! through capture → Kafka (TLS + SCRAM) → engine → ClickHouse (HTTPS + password) exactly once,
//! and each misconfiguration a user can make stops start-up within seconds with one line that
//! names the hop and the cause.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::pipeline::{Endpoints, Pipeline, assert_exactly_once, send_events};

/// `[kafka.security]` for the local secured listener, with `overrides` replacing its lines.
fn kafka_security(mechanism: &str, overrides: &[(&str, String)]) -> String {
    let tls = common::tls_dir();
    let mut lines = vec![
        ("protocol", "\"sasl_ssl\"".to_owned()),
        ("ca_file", format!("\"{}\"", tls.join("ca.pem").display())),
        ("sasl_mechanism", format!("\"{mechanism}\"")),
        ("username", "\"hogstream\"".to_owned()),
        (
            "password",
            format!("{{ file = \"{}\" }}", tls.join("kafka-password").display()),
        ),
    ];
    for (key, value) in overrides {
        lines.retain(|(k, _)| k != key);
        if !value.is_empty() {
            lines.push((key, value.clone()));
        }
    }
    let body: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!("[kafka.security]\n{body}")
}

/// ClickHouse over HTTPS as the user `hogstream`, password from the front's file.
fn secure_clickhouse(overrides: &[(&str, String)]) -> (String, String) {
    let tls = common::tls_dir();
    let mut url = common::clickhouse_https_url();
    let mut lines = vec![
        ("user", "\"hogstream\"".to_owned()),
        (
            "password_file",
            format!("\"{}\"", tls.join("clickhouse-password").display()),
        ),
        ("ca_file", format!("\"{}\"", tls.join("ca.pem").display())),
    ];
    for (key, value) in overrides {
        if *key == "url" {
            url = value.clone();
            continue;
        }
        lines.retain(|(k, _)| k != key);
        if !value.is_empty() {
            lines.push((key, value.clone()));
        }
    }
    let settings = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    (url, settings)
}

fn secure_endpoints(clickhouse_overrides: &[(&str, String)]) -> Endpoints {
    let (clickhouse, clickhouse_settings) = secure_clickhouse(clickhouse_overrides);
    Endpoints {
        brokers: common::secure_brokers(),
        admin_brokers: common::require_kafka(),
        clickhouse,
        clickhouse_settings,
    }
}

#[test]
fn events_pass_every_secured_hop_exactly_once() {
    const N: usize = 2000;
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let p = Pipeline::through(secure_endpoints(&[]), 2, 4, &kafka_security(mechanism, &[]));
        let check = p.hogstream(&["config", "check"]);
        let shown = String::from_utf8_lossy(&check.stdout);
        assert!(
            shown.contains(&format!("kafka: sasl_ssl, {mechanism} as `hogstream`")),
            "{shown}"
        );
        let secret = std::fs::read_to_string(common::tls_dir().join("kafka-password")).unwrap();
        assert!(
            !shown.contains(secret.trim()),
            "config check shows no secret"
        );
        p.start_capture();
        p.start_engine();
        send_events(&p, N, 1000, |_| {});
        assert_exactly_once(&p, N);
        assert!(p.stop_engine(), "{mechanism}: graceful stop");
    }
}

/// Runs `hogstream <command>` with `config` and returns how long it took and its stderr.
fn refused(config: &Path, command: &str) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hogstream"))
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("HOGSTREAM_LOG", "error")
        .env("RUST_LIB_BACKTRACE", "0")
        .env_remove("HOGSTREAM_KAFKA_BROKERS")
        .env_remove("HOGSTREAM_CLICKHOUSE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "hogstream {command} must not start:\n{stderr}"
    );
    (took, stderr)
}

/// A server on a free port whose TLS certificate expired in 2021 (Python's ssl module).
struct ExpiredServer {
    child: std::process::Child,
    url: String,
}

impl ExpiredServer {
    fn start() -> Self {
        let tls = common::tls_dir();
        let port = common::free_port();
        let script = format!(
            "import http.server, ssl\n\
             s = http.server.HTTPServer(('127.0.0.1', {port}), http.server.BaseHTTPRequestHandler)\n\
             c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             c.load_cert_chain({cert:?}, {key:?})\n\
             s.socket = c.wrap_socket(s.socket, server_side=True)\n\
             s.serve_forever()\n",
            cert = tls.join("server-expired.pem").display().to_string(),
            key = tls.join("server-expired.key").display().to_string(),
        );
        let child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the expired-certificate server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ExpiredServer {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ExpiredServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn each_misconfiguration_stops_start_up_with_one_line_naming_hop_and_cause() {
    let tls = common::tls_dir();
    let quoted = |file: &str| format!("\"{}\"", tls.join(file).display());
    let wrong_password = std::env::temp_dir().join(common::unique("wrong_password"));
    std::fs::write(&wrong_password, "not-the-password\n").unwrap();
    let wrong = format!("{{ file = \"{}\" }}", wrong_password.display());
    let expired_server = ExpiredServer::start();

    // A working pipeline's configuration, to spoil one setting at a time.
    let p = Pipeline::through(
        secure_endpoints(&[]),
        1,
        1,
        &kafka_security("SCRAM-SHA-512", &[]),
    );
    let base = std::fs::read_to_string(&p.config).unwrap();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong Kafka password",
            base.replace(
                &kafka_security("SCRAM-SHA-512", &[]),
                &kafka_security("SCRAM-SHA-512", &[("password", wrong.clone())]),
            ),
            "kafka (engine",
            "authentication failed",
        ),
        (
            "Kafka certificate from an unknown CA",
            base.replace(
                &kafka_security("SCRAM-SHA-512", &[]),
                &kafka_security("SCRAM-SHA-512", &[("ca_file", quoted("other-ca.pem"))]),
            ),
            "kafka (engine",
            "not signed by a trusted CA",
        ),
        (
            "plaintext client at the TLS listener",
            base.replace(&kafka_security("SCRAM-SHA-512", &[]), ""),
            "kafka (engine",
            "plaintext client at a TLS listener",
        ),
        (
            "expired client certificate",
            base.replace(
                &kafka_security("SCRAM-SHA-512", &[]),
                &kafka_security(
                    "SCRAM-SHA-512",
                    &[
                        ("certificate_file", quoted("client-expired.pem")),
                        ("key_file", quoted("client-expired.key")),
                    ],
                ),
            ),
            "kafka (engine",
            "expired",
        ),
        (
            "wrong ClickHouse password",
            base.replace(
                &secure_clickhouse(&[]).1,
                &secure_clickhouse(&[(
                    "password_file",
                    format!("\"{}\"", wrong_password.display()),
                )])
                .1,
            ),
            "clickhouse (engine",
            "authentication failed",
        ),
        (
            "ClickHouse certificate from an unknown CA",
            base.replace(
                &secure_clickhouse(&[]).1,
                &secure_clickhouse(&[("ca_file", quoted("other-ca.pem"))]).1,
            ),
            "clickhouse (engine",
            "not signed by a trusted CA",
        ),
        (
            "plaintext client at the HTTPS port",
            base.replace(
                &common::clickhouse_https_url(),
                &common::clickhouse_https_url().replace("https://", "http://"),
            )
            .replace(
                &secure_clickhouse(&[]).1,
                &secure_clickhouse(&[("ca_file", String::new())]).1,
            ),
            "clickhouse (engine",
            "HTTPS port",
        ),
        (
            "expired ClickHouse server certificate",
            base.replace(&common::clickhouse_https_url(), &expired_server.url),
            "clickhouse (engine",
            "expired",
        ),
    ];
    for (case, config, hop, cause) in cases {
        let path = p.dir.join("spoiled.toml");
        std::fs::write(&path, &config).unwrap();
        let (took, stderr) = refused(&path, "engine");
        let first = stderr
            .lines()
            .find(|l| l.contains(hop))
            .unwrap_or_else(|| panic!("{case}: no line names {hop}:\n{stderr}"));
        assert!(first.contains(cause), "{case}: {first}");
        assert!(
            took < Duration::from_secs(20),
            "{case}: took {took:?} to say so"
        );
    }
    // Capture refuses to start with a wrong password too, and names its own hop.
    let spoiled = base.replace(
        &kafka_security("SCRAM-SHA-512", &[]),
        &kafka_security("SCRAM-SHA-512", &[("password", wrong)]),
    );
    let path = p.dir.join("spoiled.toml");
    std::fs::write(&path, spoiled).unwrap();
    let (_, stderr) = refused(&path, "capture");
    assert!(
        stderr.contains("kafka (capture") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&wrong_password);
}
