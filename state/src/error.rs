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
    #[error(
        "this store holds person state of a {before}-process engine cluster, and the cluster now \
         has {now}: teams would be looked up in the wrong process's store. Start with -n {before}, \
         or move the state as the runbook says (section 9, resizing)"
    )]
    Layout { before: u64, now: u64 },
    #[error("corrupt state record in column family `{cf}`: {detail}")]
    Corrupt { cf: &'static str, detail: String },
}
