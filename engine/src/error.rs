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
    #[error("configuration: [[teams]]: {0}")]
    Teams(#[from] crate::teams::TeamsError),
    #[error("configuration: {0}")]
    Plugins(#[from] hogstream_plugin::ConfigError),
    #[error("timely: {0}")]
    Timely(String),
    #[error("worker {worker} failed: {message}")]
    Worker { worker: usize, message: String },
    #[error("cannot start the person-state threads: {0}")]
    StatePool(#[from] rayon::ThreadPoolBuildError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The engine must not start as things are; the message names the cause and the remedy.
    #[error("{0}")]
    Refused(String),
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    /// The engine was told to stop while this worker waited for the others.
    #[error("stopped {0}")]
    Stopped(String),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::EngineError;
    use crate::teams::TeamsError;

    #[test]
    fn configuration_errors_keep_their_typed_cause() {
        let e = EngineError::from(TeamsError::DuplicateId(7));
        let cause = e.source().expect("the TeamsError is the source");
        assert_eq!(
            cause.downcast_ref::<TeamsError>(),
            Some(&TeamsError::DuplicateId(7))
        );
        assert!(
            e.to_string().contains("team id 7 is configured twice"),
            "{e}"
        );

        let plugin = hogstream_plugin::ConfigError {
            index: 2,
            plugin: "geo".into(),
            reason: "unknown plugin".into(),
        };
        let e = EngineError::from(plugin.clone());
        assert_eq!(
            e.source()
                .and_then(|c| c.downcast_ref::<hogstream_plugin::ConfigError>()),
            Some(&plugin)
        );
    }
}
