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
        "this store holds person state laid out for {before}, and the engine now runs {now}: \
         teams would be looked up in the wrong process's store. Start the cluster as before, or \
         move the state with `hogstream state resize --processes {}` (runbook section 9.3)",
        now.processes
    )]
    Layout {
        before: crate::store::Layout,
        now: crate::store::Layout,
    },
    #[error("corrupt state record in column family `{cf}`: {detail}")]
    Corrupt { cf: &'static str, detail: String },
}
