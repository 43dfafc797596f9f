//! Scheduled tasks: PostHog's `runEveryMinute` / `runEveryHour` / `runEveryDay`. A task runs at
//! most once per wall-clock period (UTC minute, hour or day), cluster-wide: the engine's first
//! process schedules them, and the last period run is kept in the task's storage so a restart
//! neither repeats nor skips the current period.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use serde_json::json;

use crate::{Context, PluginError, chain::panic_message};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Minute,
    Hour,
    Day,
}

impl Every {
    fn seconds(self) -> u64 {
        match self {
            Every::Minute => 60,
            Every::Hour => 3_600,
            Every::Day => 86_400,
        }
    }

    /// The period `at` falls in, counted from the Unix epoch.
    pub fn period(self, at: SystemTime) -> u64 {
        at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / self.seconds()
    }
}

/// A task run on a schedule.
pub trait Task: Send {
    fn every(&self) -> Every;
    fn setup(&mut self, _ctx: &Context) -> Result<(), PluginError> {
        Ok(())
    }
    fn run(&mut self, ctx: &Context) -> Result<(), PluginError>;
    fn teardown(&mut self) {}
}

/// The storage key of the last period a task ran in.
pub const LAST_PERIOD_KEY: &str = "$hogstream_last_period";

/// What [`run_if_due`] did.
#[derive(Debug, PartialEq)]
pub enum TaskRun {
    NotDue,
    Ran,
    /// Failed or panicked; it runs again in the next period, not before.
    Failed(String),
}

/// Runs `task` if it has not run in the period of `now` yet, and records the period first, so
/// a crash during the run does not repeat it.
pub fn run_if_due(task: &mut dyn Task, ctx: &Context, now: SystemTime) -> TaskRun {
    let period = task.every().period(now);
    let last = match ctx.storage.get(LAST_PERIOD_KEY) {
        Ok(v) => v.and_then(|v| v.as_u64()),
        Err(e) => return TaskRun::Failed(format!("reading its schedule: {e}")),
    };
    if last.is_some_and(|l| l >= period) {
        return TaskRun::NotDue;
    }
    if let Err(e) = ctx.storage.set(LAST_PERIOD_KEY, &json!(period)) {
        return TaskRun::Failed(format!("recording its schedule: {e}"));
    }
    match catch_unwind(AssertUnwindSafe(|| task.run(ctx))) {
        Ok(Ok(())) => TaskRun::Ran,
        Ok(Err(e)) => TaskRun::Failed(e.to_string()),
        Err(panic) => TaskRun::Failed(format!("panicked: {}", panic_message(&*panic))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Count(Every, u32);
    impl Task for Count {
        fn every(&self) -> Every {
            self.0
        }
        fn run(&mut self, ctx: &Context) -> Result<(), PluginError> {
            self.1 += 1;
            ctx.storage.set("runs", &json!(self.1))?;
            if self.1 == 2 {
                panic!("second run panics");
            }
            Ok(())
        }
    }

    #[test]
    fn runs_once_per_period_across_restarts_and_survives_a_panic() {
        let ctx = Context::in_memory("counter");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000 * 3_600 + 10);
        let mut task = Count(Every::Hour, 0);
        assert_eq!(run_if_due(&mut task, &ctx, t0), TaskRun::Ran);
        assert_eq!(
            run_if_due(&mut task, &ctx, t0 + Duration::from_secs(3_000)),
            TaskRun::NotDue
        );
        // A restart: a new instance, the same storage.
        let mut task = Count(Every::Hour, 1);
        assert_eq!(
            run_if_due(&mut task, &ctx, t0 + Duration::from_secs(60)),
            TaskRun::NotDue
        );
        let next = t0 + Duration::from_secs(3_600);
        assert_eq!(
            run_if_due(&mut task, &ctx, next),
            TaskRun::Failed("panicked: second run panics".into())
        );
        assert_eq!(run_if_due(&mut task, &ctx, next), TaskRun::NotDue);
        assert_eq!(
            run_if_due(&mut task, &ctx, next + Duration::from_secs(3_600)),
            TaskRun::Ran
        );
        assert_eq!(ctx.storage.get("runs").unwrap(), Some(json!(3)));
    }
}
