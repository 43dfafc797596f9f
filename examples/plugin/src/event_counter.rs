//! `event-counter`: a destination that counts processed events per event name in its storage
//! (key `count:<event>`), in batches of up to 100 events or every 5 seconds.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use hogstream_plugin::{
    Batching, Context, Destination, ExportError, PluginError, ProcessedEvent, Storage,
};
use serde_json::{Value, json};

#[derive(Default)]
pub struct EventCounter {
    storage: Option<Arc<dyn Storage>>,
}

impl EventCounter {
    pub fn from_config(_config: &Value) -> Result<Box<dyn Destination>, PluginError> {
        Ok(Box::new(Self::default()))
    }
}

impl Destination for EventCounter {
    fn batching(&self) -> Batching {
        Batching {
            max_events: 100,
            max_wait: Duration::from_secs(5),
        }
    }

    fn setup(&mut self, ctx: &Context) -> Result<(), PluginError> {
        self.storage = Some(Arc::clone(&ctx.storage));
        Ok(())
    }

    fn export(&mut self, events: &[ProcessedEvent]) -> Result<(), ExportError> {
        let storage = self
            .storage
            .as_ref()
            .ok_or_else(|| ExportError::Fail("not set up".into()))?;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for e in events {
            *counts.entry(&e.event).or_default() += 1;
        }
        // A storage error is retried: the whole batch is counted again from the same totals.
        let retry = |e: PluginError| ExportError::Retry(e.to_string());
        for (event, n) in counts {
            let key = format!("count:{event}");
            let old = storage.get(&key).map_err(retry)?.and_then(|v| v.as_u64());
            storage
                .set(&key, &json!(old.unwrap_or(0) + n))
                .map_err(retry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::{Delivery, testing};

    #[test]
    fn counts_per_event_name_in_its_storage() {
        let ctx = Context::in_memory("event-counter");
        let mut d = EventCounter::default();
        d.setup(&ctx).unwrap();
        let batch = [
            testing::processed("$pageview", "a"),
            testing::processed("$pageview", "b"),
            testing::processed("signup", "a"),
        ];
        for _ in 0..2 {
            assert_eq!(
                testing::deliver(&mut d, &batch, 1),
                Delivery::Delivered { attempts: 1 }
            );
        }
        assert_eq!(ctx.storage.get("count:$pageview").unwrap(), Some(json!(4)));
        assert_eq!(ctx.storage.get("count:signup").unwrap(), Some(json!(2)));
    }
}
