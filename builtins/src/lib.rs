//! The plugins hogstream ships, side by side: transforms (`property-mask`, `event-filter`,
//! `geoip`) and destinations (`webhook`, `kafka-export`, `jsonl-export`). They are written
//! against the same API as anyone's plugin (`hogstream-plugin`) and registered by the binary
//! through [`register`], the one list of built-ins.

pub mod destinations;
pub mod transforms;

use hogstream_plugin::{Factory, Registry};

/// Adds every built-in plugin to `registry`, under the names `[[plugins]] plugin = "…"` uses.
pub fn register(registry: &mut Registry) {
    use destinations::{JsonlFiles, KafkaExport, Webhook};
    use transforms::{EventFilter, GeoIp, PropertyMask};
    registry.register(
        "property-mask",
        Factory::Transform(PropertyMask::from_config),
    );
    registry.register("event-filter", Factory::Transform(EventFilter::from_config));
    registry.register("geoip", Factory::Transform(GeoIp::from_config));
    registry.register("webhook", Factory::Destination(Webhook::from_config));
    registry.register(
        "kafka-export",
        Factory::Destination(KafkaExport::from_config),
    );
    registry.register(
        "jsonl-export",
        Factory::Destination(JsonlFiles::from_config),
    );
}

#[cfg(test)]
mod tests {
    use hogstream_plugin::Registry;

    #[test]
    fn every_builtin_is_registered_once_under_its_name() {
        let mut registry = Registry::new();
        super::register(&mut registry);
        let known: Vec<&str> = registry.names().collect();
        assert_eq!(
            known,
            [
                "event-filter",
                "geoip",
                "jsonl-export",
                "kafka-export",
                "property-mask",
                "webhook"
            ]
        );
    }
}
