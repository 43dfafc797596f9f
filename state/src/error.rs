use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("rocksdb at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("corrupt state record in column family `{cf}`: {detail}")]
    Corrupt { cf: &'static str, detail: String },
}
