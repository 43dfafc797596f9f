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
    #[error("{}", layout_refusal(.before, .now))]
    Layout {
        before: crate::store::Layout,
        now: crate::store::Layout,
    },
    #[error("corrupt state record in column family `{cf}`: {detail}")]
    Corrupt { cf: &'static str, detail: String },
}

fn layout_refusal(before: &crate::store::Layout, now: &crate::store::Layout) -> String {
    let advice = if before.shards == 0 {
        format!(
            "Stores from before virtual shards are moved once, with every engine stopped: \
             `hogstream state resize --processes {}` (runbook sections 9.2 and 9.3)",
            now.processes
        )
    } else {
        format!(
            "Start the cluster with -n {} as before, or move the state with \
             `hogstream state resize --processes {}` (runbook section 9.3)",
            before.processes, now.processes
        )
    };
    format!(
        "this store holds person state laid out for {before}, and the engine now runs {now}: \
         teams would be looked up in the wrong process's store. {advice}"
    )
}
