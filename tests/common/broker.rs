//! A Kafka broker of a test's own, for faults the shared broker must not suffer.
#![allow(dead_code)]

/// A broker of its own, formatted and started by `scripts/services.sh` in a fresh data directory
/// on free ports; stopped (and its directory removed) on drop.
pub struct FreshBroker {
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
    pub brokers: String,
}

impl FreshBroker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(super::unique("fresh_broker"));
        let ports = super::free_ports(3, &[]);
        let (port, controller, tls) = (ports.start, ports.start + 1, ports.start + 2);
        let env = vec![
            ("HOGSTREAM_DATA", dir.display().to_string()),
            ("HOGSTREAM_KAFKA_PORT", port.to_string()),
            ("HOGSTREAM_KAFKA_CONTROLLER_PORT", controller.to_string()),
            ("HOGSTREAM_KAFKA_TLS_PORT", tls.to_string()),
        ];
        let broker = FreshBroker {
            env,
            dir,
            brokers: format!("127.0.0.1:{port}"),
        };
        broker.services(&["start", "kafka"]);
        broker
    }

    pub fn services(&self, args: &[&str]) {
        let status = std::process::Command::new("bash")
            .arg(super::repo_root().join("scripts/services.sh"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .status()
            .expect("run scripts/services.sh");
        assert!(status.success(), "scripts/services.sh {args:?} failed");
    }
}

impl Drop for FreshBroker {
    fn drop(&mut self) {
        self.services(&["stop", "kafka"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
