//! The plugins this binary knows: the built-in transforms and destinations, plus any plugin crate
//! registered here. Plugins are Rust, compiled in: to add yours, depend on its crate in
//! `Cargo.toml` and register it below under the name `[[plugins]] plugin = "…"` uses
//! (docs/plugins.md). The example crate's plugins are registered only in builds with the
//! `example-plugins` feature (tests, trying plugins out): its `chaos` panics on demand and must
//! not be reachable from a production configuration.

use hogstream_engine::views::ViewRegistry;
use hogstream_plugin::Registry;

/// The views this binary knows: the built-ins, plus any view crate registered here (the
/// example crate's in builds with the `example-plugins` feature).
pub fn views() -> ViewRegistry {
    #[allow(unused_mut)]
    let mut registry = ViewRegistry::new();
    #[cfg(feature = "example-plugins")]
    {
        registry.register(hogstream_example_plugin::PersonsByBrowser);
        registry.register(hogstream_example_plugin::ActivePersonsByPlan);
    }
    registry
}

pub fn registry() -> Registry {
    let mut registry = Registry::new();
    hogstream_builtins::register(&mut registry);
    #[cfg(feature = "example-plugins")]
    register_examples(&mut registry);
    registry
}

#[cfg(feature = "example-plugins")]
fn register_examples(registry: &mut Registry) {
    use hogstream_example_plugin as example;
    use hogstream_plugin::Factory;
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
}

#[cfg(test)]
mod tests {
    use hogstream_plugin::PluginConfig;

    #[test]
    fn chaos_is_reachable_only_in_builds_with_the_example_plugins() {
        let entry: PluginConfig = serde_json::from_value(serde_json::json!({
            "plugin": "chaos",
            "config": {"panic_on": ["boom"]}
        }))
        .unwrap();
        let result = super::registry().check(&[entry], &[1]);
        if cfg!(feature = "example-plugins") {
            assert!(result.is_ok(), "{:?}", result.err());
        } else {
            let err = result.err().expect("chaos must be unknown").to_string();
            assert!(err.contains("unknown plugin"), "{err}");
        }
    }
}
