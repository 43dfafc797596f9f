//! The plugins this binary knows: the built-ins, plus any plugin crate registered here. Plugins
//! are Rust, compiled in: to add yours, depend on its crate in `Cargo.toml` and register it
//! below under the name `[[plugins]] plugin = "…"` uses (docs/plugins.md).

use hogstream_plugin::Registry;

pub fn registry() -> Registry {
    let mut registry = Registry::builtins();
    registry.register(
        "tag-internal",
        hogstream_example_plugin::TagInternal::from_config,
    );
    registry
}
