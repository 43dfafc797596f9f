use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot create topic `{topic}`: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("state: {0}")]
    State(#[from] hogstream_state::StateError),
    #[error("clickhouse sink: {0}")]
    Sink(#[from] hogstream_sinks::SinkError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("timely: {0}")]
    Timely(String),
    #[error("worker {worker} failed: {message}")]
    Worker { worker: usize, message: String },
    #[error("cannot start the person-state threads: {0}")]
    StatePool(#[from] rayon::ThreadPoolBuildError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
}
