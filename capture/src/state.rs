//! What every request handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{CaptureConfig, LimitsConfig, TopicConfig};
use crate::error::ServeError;
use crate::limiter::OverflowLimiter;
use crate::payload::budget::DecodeBudget;
use crate::producer::EventProducer;
use crate::topics::{KeyList, TopicRules};

/// Shared state of the capture service. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) metrics: Option<PrometheusHandle>,
}

pub(crate) struct Shared {
    pub limits: LimitsConfig,
    /// What decompressing requests may hold at once, all together.
    pub decode_budget: Arc<DecodeBudget>,
    /// Capture requests being handled; one permit each.
    pub requests: Arc<tokio::sync::Semaphore>,
    pub topics: TopicConfig,
    pub message_max_bytes: usize,
    pub producer: Arc<dyn EventProducer>,
    pub router: TopicRules,
    /// `/metrics` is served on a private listener, not with the event routes.
    pub private_metrics: bool,
}

impl AppState {
    /// Builds the state around any producer: the Kafka one in production, an in-memory one in
    /// tests. Fails on configuration that cannot work.
    pub fn new(
        config: &CaptureConfig,
        producer: Arc<dyn EventProducer>,
    ) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let limiter = if config.overflow.enabled {
            let limiter =
                OverflowLimiter::new(config.overflow.per_second, config.overflow.burst)
                    .ok_or_else(|| ServeError::Config("overflow quota must be positive".into()))?;
            Some(limiter)
        } else {
            None
        };
        let router = TopicRules {
            drop: KeyList::new(&config.drop_events),
            dlq: KeyList::new(&config.dlq_events),
            force_overflow: KeyList::new(&config.overflow.force_overflow),
            disable_person_processing: KeyList::new(&config.disable_person_processing),
            limiter,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                limits: config.limits.clone(),
                decode_budget: DecodeBudget::new(config.limits.max_decoding_bytes),
                requests: Arc::new(tokio::sync::Semaphore::new(
                    config.limits.max_concurrent_requests,
                )),
                topics: config.topics.clone(),
                message_max_bytes: config.kafka.message_max_bytes,
                producer,
                router,
                private_metrics: config.metrics_address.is_some(),
            }),
            metrics: None,
        })
    }

    /// Serves `/metrics` from this Prometheus handle.
    pub fn with_metrics(mut self, handle: Option<PrometheusHandle>) -> Self {
        self.metrics = handle;
        self
    }

    /// Periodic upkeep: forgets idle limiter keys and drains Prometheus histograms.
    pub fn housekeeping(&self) {
        if let Some(limiter) = &self.shared.router.limiter {
            limiter.housekeeping();
        }
        if let Some(handle) = &self.metrics {
            handle.run_upkeep();
        }
    }

    pub fn producer(&self) -> &Arc<dyn EventProducer> {
        &self.shared.producer
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("topics", &self.shared.topics)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}
