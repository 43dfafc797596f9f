//! A real Prometheus (Debian's package, installed by `scripts/install.sh`) for the monitoring
//! tests and the alert drills.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A Prometheus server of a test, scraping its capture and engine every second and evaluating
/// `rules` every second; killed on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: PathBuf,
}

impl Prometheus {
    /// A Prometheus in the pipeline's folder, scraping its capture and (single-process) engine.
    pub fn watching(p: &super::pipeline::Pipeline, rules: &Path) -> Self {
        let capture = p.capture_url.trim_start_matches("http://").to_owned();
        let engine = p
            .metrics_url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        Self::start(&p.dir.join("prometheus"), rules, &capture, &engine)
    }

    pub fn start(dir: &Path, rules: &Path, capture: &str, engine: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: hogstream-capture
    static_configs: [{{targets: ["{capture}"]}}]
  - job_name: hogstream-engine
    static_configs: [{{targets: ["{engine}"]}}]
"#,
                rules = rules.display(),
            ),
        )
        .unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed by scripts/install.sh (Debian package prometheus)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::blocking::get(format!("{}/-/ready", p.url))
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready; see {}",
                dir.join("prometheus.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .unwrap();
        let body: Value = r.json().unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
