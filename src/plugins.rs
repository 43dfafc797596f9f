//! The plugins this binary knows: the built-in transforms and destinations, plus any plugin crate
//! registered here. Plugins
//! are Rust, compiled in: to add yours, depend on its crate in `Cargo.toml` and register it
//! below under the name `[[plugins]] plugin = "…"` uses (docs/plugins.md).

use hogstream_plugin::{Factory, Registry};

pub fn registry() -> Registry {
    let mut registry = Registry::builtins();
    hogstream_sinks::destinations::register(&mut registry);
    use hogstream_example_plugin as example;
    registry.register(
        "tag-internal",
        Factory::Transform(example::TagInternal::from_config),
    );
    registry.register(
        "event-counter",
        Factory::Destination(example::EventCounter::from_config),
    );
    registry.register("heartbeat", Factory::Task(example::Heartbeat::from_config));
    registry.register("chaos", Factory::Transform(example::Chaos::from_config));
    registry
}
