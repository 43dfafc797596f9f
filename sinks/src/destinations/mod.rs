//! Built-in destinations: a webhook with a templated body, export to a Kafka topic, and batch
//! export to local JSONL files. Each is a [`hogstream_plugin::Destination`]; the engine runs it.

mod jsonl;
mod kafka_export;
mod template;
mod webhook;

use hogstream_plugin::{Factory, Registry};

pub use jsonl::JsonlFiles;
pub use kafka_export::KafkaExport;
pub use template::render;
pub use webhook::Webhook;

/// Adds the built-in destinations to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register("webhook", Factory::Destination(Webhook::from_config));
    registry.register(
        "kafka-export",
        Factory::Destination(KafkaExport::from_config),
    );
    registry.register(
        "jsonl-export",
        Factory::Destination(JsonlFiles::from_config),
    );
}
