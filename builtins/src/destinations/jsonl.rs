//! `jsonl-export`: batch export to local files, one JSON event per line. Each batch becomes one
//! file, written to a temporary name, synced and renamed, so a file is either whole or absent. A
//! retried batch rewrites the same file; a batch delivered again later (a redelivery) gets a new
//! one.

use std::{
    fs,
    io::{BufWriter, Write},
    path::PathBuf,
};

use hogstream_plugin::{
    Batching, Context, Destination, ExportError, PluginError, ProcessedEvent, settings,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    directory: PathBuf,
}

pub struct JsonlFiles {
    directory: PathBuf,
    /// The file name of a batch whose write failed, by (first uuid, size): its retry reuses it.
    failed: Option<((Uuid, usize), String)>,
}

impl JsonlFiles {
    pub fn from_config(config: &Value) -> Result<Box<dyn Destination>, PluginError> {
        let settings: Settings = settings(config)?;
        Ok(Box::new(Self {
            directory: settings.directory,
            failed: None,
        }))
    }

    fn write(&self, name: &str, events: &[ProcessedEvent]) -> std::io::Result<()> {
        let path = self.directory.join(name);
        let temp = self.directory.join(format!(".{name}.tmp"));
        let mut out = BufWriter::new(fs::File::create(&temp)?);
        for e in events {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        fs::File::open(&self.directory)?.sync_all()
    }
}

impl Destination for JsonlFiles {
    fn batching(&self) -> Batching {
        Batching {
            max_events: 10_000,
            max_wait: std::time::Duration::from_secs(10),
        }
    }

    fn setup(&mut self, _ctx: &Context) -> Result<(), PluginError> {
        fs::create_dir_all(&self.directory).map_err(|e| PluginError::Setting {
            key: "directory".into(),
            reason: format!("cannot create {}: {e}", self.directory.display()),
        })
    }

    fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = (events[0].uuid, events.len());
        let name = match self.failed.take() {
            Some((b, name)) if b == batch => name,
            _ => {
                let now = chrono::Utc::now();
                format!(
                    "{}-{}-{}.jsonl",
                    now.format("%Y%m%d-%H%M%S%.6f"),
                    batch.0,
                    batch.1
                )
            }
        };
        self.write(&name, events).map_err(|e| {
            self.failed = Some((batch, name));
            ExportError::Retry(format!("{}: {e}", self.directory.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::testing;
    use serde_json::json;

    #[test]
    fn a_batch_becomes_one_whole_file_and_a_redelivery_another() {
        let dir = std::env::temp_dir().join(format!("hs-jsonl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut d = JsonlFiles::from_config(&json!({"directory": dir})).unwrap();
        d.setup(&Context::in_memory("jsonl-export")).unwrap();
        let events = vec![testing::processed("a", "u1"), testing::processed("b", "u2")];
        assert_eq!(
            testing::deliver(d.as_mut(), &events, 1),
            hogstream_plugin::Delivery::Delivered { attempts: 1 }
        );
        assert_eq!(
            testing::deliver(d.as_mut(), &events, 1),
            hogstream_plugin::Delivery::Delivered { attempts: 1 }
        );
        let files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            let back: Vec<ProcessedEvent> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(back, events);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_retry_after_a_failed_write_reuses_the_file_name() {
        let dir = std::env::temp_dir().join(format!("hs-jsonl-retry-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut d = JsonlFiles::from_config(&json!({"directory": dir})).unwrap();
        let events = vec![testing::processed("a", "u1")];
        // No directory yet: the write fails and is retryable.
        assert!(matches!(d.export(&events), Err(ExportError::Retry(_))));
        fs::create_dir_all(&dir).unwrap();
        d.export(&events).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0].ends_with(&format!("-{}-1.jsonl", events[0].uuid)),
            "{names:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
