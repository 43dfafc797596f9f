//! Built-in transforms.

mod event_filter;
mod geoip;
mod property_mask;

pub use event_filter::EventFilter;
pub use geoip::GeoIp;
pub use property_mask::PropertyMask;
