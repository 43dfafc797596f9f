//! Built-in transforms.

mod event_filter;
mod property_mask;

pub use event_filter::EventFilter;
pub use property_mask::PropertyMask;
