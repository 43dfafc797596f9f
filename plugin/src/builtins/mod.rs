//! Built-in transforms that need nothing outside this crate. The built-in destinations (webhook,
//! Kafka export, JSONL files) live in `hogstream-sinks`, next to the other outputs.

mod event_filter;
mod geoip;
mod property_mask;

pub use event_filter::EventFilter;
pub use geoip::GeoIp;
pub use property_mask::PropertyMask;
