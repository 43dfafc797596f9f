//! One `hogstream capture` process for one test: its own main/overflow/historical/dlq topics
//! (created here, deleted when the test passes), a free port, and a log file; plus a reader that
//! returns every message of a topic with its key and headers.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};

use super::{free_port, require_kafka, unique};

/// Partitions of the main topic: several, so per-key partitioning is observable.
pub const MAIN_PARTITIONS: i32 = 4;
/// Partitions of the overflow, historical and dead-letter topics.
pub const OTHER_PARTITIONS: i32 = 2;

pub struct Topics {
    pub main: String,
    pub overflow: String,
    pub historical: String,
    pub dlq: String,
}

impl Topics {
    /// `(name, partitions)` of every topic capture may write.
    pub fn all(&self) -> [(&str, i32); 4] {
        [
            (&self.main, MAIN_PARTITIONS),
            (&self.overflow, OTHER_PARTITIONS),
            (&self.historical, OTHER_PARTITIONS),
            (&self.dlq, OTHER_PARTITIONS),
        ]
    }
}

/// A running `hogstream --config <tmp> capture`, killed on drop.
pub struct Capture {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub url: String,
    pub brokers: String,
    pub topics: Topics,
    child: Child,
}

fn create_topics(brokers: &str, topics: &Topics) {
    create(brokers, &topics.all());
}

/// Creates `(name, partitions)` topics, which must not exist yet.
pub fn create(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("Kafka admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topics");
    for r in results {
        assert!(r.is_ok(), "creating topic failed: {r:?}");
    }
}

/// Creates `(name, partitions)` topics that were just deleted: Kafka removes a topic in the
/// background, and refuses to create it again until it is gone.
pub fn create_when_deleted(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("Kafka admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, partitions) in topics {
        let new = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
        loop {
            let result = rt
                .block_on(admin.create_topics([&new], &AdminOptions::new()))
                .expect("create topics")
                .remove(0);
            let Err(pending) = result else { break };
            assert!(
                Instant::now() < deadline,
                "topic {name} was not created again within 60 s: {pending:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Deletes topics; a topic that is already gone is not an error. Failures are reported, not
/// fatal: this runs in `Drop`, after the test's own assertions.
pub fn delete(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
    {
        Ok(admin) => admin,
        Err(e) => return eprintln!("deleting topics {topics:?}: {e}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match rt.block_on(admin.delete_topics(topics, &options)) {
        Ok(results) => {
            for r in results {
                if let Err((topic, code)) = r
                    && code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                {
                    eprintln!("deleting topic {topic}: {code}");
                }
            }
        }
        Err(e) => eprintln!("deleting topics {topics:?}: {e}"),
    }
}

impl Capture {
    /// Creates fresh topics named after `prefix`, writes a config for them and starts capture on
    /// a free port; returns once `/_readiness` answers 200.
    pub fn start(prefix: &str) -> Self {
        Self::start_with(prefix, "")
    }

    /// [`Capture::start`] with `extra` TOML appended to the configuration.
    pub fn start_with(prefix: &str, extra: &str) -> Self {
        let brokers = require_kafka();
        let name = unique(prefix);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let topics = Topics {
            main: format!("{name}_events"),
            overflow: format!("{name}_overflow"),
            historical: format!("{name}_historical"),
            dlq: format!("{name}_dlq"),
        };
        create_topics(&brokers, &topics);
        let port = free_port();
        let config = dir.join("hogstream.toml");
        std::fs::write(
            &config,
            format!(
                r#"[kafka]
brokers = "{brokers}"
input_topics = ["{main}", "{overflow}", "{historical}"]
dlq_topic = "{dlq}"

[capture]
bind_address = "127.0.0.1:{port}"

[capture.topics]
main = "{main}"
overflow = "{overflow}"
historical = "{historical}"
dlq = "{dlq}"
{extra}
"#,
                main = topics.main,
                overflow = topics.overflow,
                historical = topics.historical,
                dlq = topics.dlq,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("capture.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hogstream"));
        command
            .arg("--config")
            .arg(&config)
            .arg("capture")
            .env("HOGSTREAM_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // The test picks its own endpoints; the shell's overrides must not redirect them.
        for v in [
            "HOGSTREAM_CONFIG",
            "HOGSTREAM_KAFKA_BROKERS",
            "HOGSTREAM_CLICKHOUSE_URL",
            "HOGSTREAM_DATA_DIR",
            "HOGSTREAM_CAPTURE_ADDRESS",
        ] {
            command.env_remove(v);
        }
        let child = command.spawn().expect("spawn hogstream capture");
        let mut capture = Capture {
            name,
            dir,
            config,
            url: format!("http://127.0.0.1:{port}"),
            brokers,
            topics,
            child,
        };
        capture.wait_ready(Duration::from_secs(60));
        capture
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "hogstream capture exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = client.get(format!("{}/_readiness", self.url)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "hogstream capture was not ready within {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// The capture log so far (the last 8 KB).
    /// The capture process's id, for reading its memory in `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("capture.log")).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Panics with the log if capture is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "hogstream capture exited with {status}; log:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "kept for inspection: topics {}_*, log in {}",
                self.name,
                self.dir.display()
            );
            return;
        }
        let topics = self.topics.all().map(|(name, _)| name);
        delete(&self.brokers, &topics);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    /// Header name → value (`None` for a null value), in the order the producer wrote them.
    pub headers: Vec<(String, Option<String>)>,
}

impl Record {
    pub fn header_map(&self) -> BTreeMap<String, Option<String>> {
        self.headers.iter().cloned().collect()
    }
}

/// Every message in `topic` (partitions `0..partitions`) up to its high watermark at the time of
/// the call, ordered by partition then offset.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("sdk_reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("Kafka consumer");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, high)| next.get(p).copied().unwrap_or(0) < *high)
    {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: read up to {next:?}, expected {ends:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
        next.insert(m.partition(), m.offset() + 1);
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let value = h.value.map(|v| {
                            String::from_utf8(v.to_vec())
                                .unwrap_or_else(|_| panic!("header {} is not UTF-8", h.key))
                        });
                        (h.key.to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m
                .key()
                .map(|k| String::from_utf8(k.to_vec()).expect("message key is UTF-8")),
            value: String::from_utf8(m.payload().expect("message has a value").to_vec())
                .expect("message value is UTF-8"),
            headers,
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}
