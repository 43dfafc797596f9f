//! Built-in destinations: a webhook with a templated body, export to a Kafka topic, and batch
//! export to local JSONL files. Each is a [`hogstream_plugin::Destination`]; the engine runs it.

mod jsonl;
mod kafka_export;
mod template;
mod webhook;

pub use jsonl::JsonlFiles;
pub use kafka_export::KafkaExport;
pub use template::render;
pub use webhook::Webhook;
