use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error(
        "the ClickHouse schema in database `{database}` is at migration {found}, this build needs {needed}: run `hogstream migrate`"
    )]
    SchemaOutdated {
        database: String,
        found: u32,
        needed: u32,
    },
    #[error("insert into `{table}` abandoned after {attempts} attempts: {source}")]
    GaveUp {
        table: String,
        attempts: u32,
        source: clickhouse::error::Error,
    },
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error("the sink is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Config(String),
}
