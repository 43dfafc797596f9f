//! `heartbeat`: a scheduled task that records, every minute, when it last ran (storage key
//! `last_run`, Unix seconds) and how often it ran (`runs`).

use hogstream_plugin::{Context, Every, PluginError, Task};
use serde_json::{Value, json};

pub struct Heartbeat;

impl Heartbeat {
    pub fn from_config(_config: &Value) -> Result<Box<dyn Task>, PluginError> {
        Ok(Box::new(Self))
    }
}

impl Task for Heartbeat {
    fn every(&self) -> Every {
        Every::Minute
    }

    fn run(&mut self, ctx: &Context) -> Result<(), PluginError> {
        let runs = ctx
            .storage
            .get("runs")?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        ctx.storage.set("runs", &json!(runs + 1))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ctx.storage.set("last_run", &json!(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::{TaskRun, run_if_due};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn runs_once_a_minute() {
        let ctx = Context::in_memory("heartbeat");
        let t = UNIX_EPOCH + Duration::from_secs(600);
        assert_eq!(run_if_due(&mut Heartbeat, &ctx, t), TaskRun::Ran);
        assert_eq!(
            run_if_due(&mut Heartbeat, &ctx, t + Duration::from_secs(30)),
            TaskRun::NotDue
        );
        assert_eq!(
            run_if_due(&mut Heartbeat, &ctx, t + Duration::from_secs(60)),
            TaskRun::Ran
        );
        assert_eq!(ctx.storage.get("runs").unwrap(), Some(json!(2)));
    }
}
