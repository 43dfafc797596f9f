//! Per-plugin key-value storage (PostHog's `meta.storage`). The engine keeps it in RocksDB,
//! namespaced by the plugin entry's id; the harness keeps it in memory.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde_json::Value;

use crate::PluginError;

/// A plugin's own keys and JSON values. Writes are durable when the call returns.
pub trait Storage: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Value>, PluginError>;
    fn set(&self, key: &str, value: &Value) -> Result<(), PluginError>;
    fn delete(&self, key: &str) -> Result<(), PluginError>;
}

/// Storage in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryStorage(Mutex<BTreeMap<String, Value>>);

impl MemoryStorage {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        // A test that panicked while holding the lock has failed already; keep the data.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Value>, PluginError> {
        Ok(self.map().get(key).cloned())
    }
    fn set(&self, key: &str, value: &Value) -> Result<(), PluginError> {
        self.map().insert(key.to_owned(), value.clone());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), PluginError> {
        self.map().remove(key);
        Ok(())
    }
}

/// What a plugin gets at setup and when a scheduled task runs.
#[derive(Clone)]
pub struct Context {
    /// The `[[plugins]]` entry's id: its plugin name unless the entry sets `id`.
    pub id: String,
    pub storage: Arc<dyn Storage>,
}

impl Context {
    /// A context with in-memory storage, for tests.
    pub fn in_memory(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            storage: Arc::new(MemoryStorage::default()),
        }
    }
}
