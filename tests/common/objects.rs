//! The local S3-compatible object store started by `scripts/services.sh` (SeaweedFS), for the
//! state checkpoint tests: each test keeps its checkpoints under a prefix of its own.
#![allow(dead_code)]

use std::path::PathBuf;

use hogstream_objects::{ObjectStoreConfig, Objects};

use super::{reachable, tls_dir};

/// The bucket `scripts/services.sh` creates.
pub const BUCKET: &str = "hogstream";

pub fn s3_endpoint() -> String {
    let port = std::env::var("HOGSTREAM_S3_PORT").unwrap_or_else(|_| "8333".into());
    format!("http://127.0.0.1:{port}")
}

/// The secret key of the local store's `hogstream` identity, made on its first start.
pub fn secret_file() -> PathBuf {
    tls_dir()
        .parent()
        .expect("the data folder")
        .join("s3/secret-key")
}

/// Panics unless the object store answers on its port.
pub fn require_s3() -> String {
    let endpoint = s3_endpoint();
    assert!(
        reachable(endpoint.trim_start_matches("http://")),
        "no object store at {endpoint}: start it with `scripts/services.sh start` (this test needs the real S3 server)"
    );
    endpoint
}

/// The object store settings of a test that keeps its checkpoints under `prefix`.
pub fn store_config(prefix: &str) -> ObjectStoreConfig {
    let mut c = ObjectStoreConfig::at(format!("s3://{BUCKET}/{prefix}"));
    c.endpoint = Some(require_s3());
    c.access_key_id = Some("hogstream".into());
    c.secret_access_key = Some(hogstream_event::security::Secret::File(secret_file()));
    c
}

/// The `[checkpoints]` section of a test's configuration.
pub fn checkpoints_section(prefix: &str, interval: &str, restore: bool) -> String {
    format!(
        r#"
[checkpoints]
interval = "{interval}"
keep = 3
restore = {restore}

[checkpoints.store]
url = "s3://{BUCKET}/{prefix}"
endpoint = "{endpoint}"
access_key_id = "hogstream"
secret_access_key = {{ file = "{secret}" }}
"#,
        endpoint = require_s3(),
        secret = secret_file().display(),
    )
}

/// A client of the test's prefix.
pub fn objects(prefix: &str) -> Objects {
    Objects::connect(&store_config(prefix)).expect("the local object store's settings")
}

/// Deletes every object under `prefix` when dropped (a failed test keeps them, like its
/// topics and database).
pub struct Prefix(pub String);

impl Drop for Prefix {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("HOGSTREAM_TEST_KEEP").is_some() {
            eprintln!("kept for inspection: s3://{BUCKET}/{}", self.0);
            return;
        }
        let objects = objects(&self.0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if let Ok(keys) = objects.list("").await {
                for (key, _) in keys {
                    let _ = objects.delete(&key).await;
                }
            }
        });
    }
}
