//! Event properties PostHog copies into person properties.

use serde_json::json;

use crate::harness::{Engine, object};

fn person_after(properties: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": properties}),
    ]);
    object(&out.person().properties)
}

/// utils.test.ts "adds initial and utm properties" (and "initial current domain regression
/// test"): each lifted key goes to `$set` and, as `$initial_*`, to `$set_once`; the client's
/// own `$set`/`$set_once` values win; other properties are not lifted.
#[test]
fn lifted_keys_set_the_current_and_the_initial_value() {
    let p = person_after(json!({
        "$browser": "Chrome", "$current_url": "https://test.com", "$os": "Mac OS X",
        "$os_version": "10.15.7", "$browser_version": "95",
        "$referring_domain": "https://google.com", "$referrer": "https://google.com/?q=posthog",
        "utm_medium": "twitter", "gclid": "GOOGLE ADS ID", "msclkid": "BING ADS ID",
        "$app_build": 2, "$app_name": "my app", "$app_namespace": "com.posthog.myapp",
        "$app_version": "1.2.3", "not_lifted": 1,
        "$set": {"$browser_version": "manually $set value wins"},
        "$set_once": {"$initial_os_version": "manually $set_once value wins"},
    }));
    for (key, value) in [
        ("$browser", json!("Chrome")),
        ("$current_url", json!("https://test.com")),
        ("$os", json!("Mac OS X")),
        ("$os_version", json!("10.15.7")),
        ("$referring_domain", json!("https://google.com")),
        ("$referrer", json!("https://google.com/?q=posthog")),
        ("utm_medium", json!("twitter")),
        ("gclid", json!("GOOGLE ADS ID")),
        ("msclkid", json!("BING ADS ID")),
        ("$app_build", json!(2)),
        ("$app_name", json!("my app")),
        ("$app_namespace", json!("com.posthog.myapp")),
        ("$app_version", json!("1.2.3")),
    ] {
        assert_eq!(p[key], value, "{key}");
        let initial = format!("$initial_{}", key.trim_start_matches('$'));
        if initial != "$initial_os_version" {
            assert_eq!(p[&initial], value, "{initial}");
        }
    }
    assert_eq!(p["$browser_version"], json!("manually $set value wins"));
    assert_eq!(p["$initial_browser_version"], json!("95"));
    assert_eq!(
        p["$initial_os_version"],
        json!("manually $set_once value wins")
    );
    assert!(!p.contains_key("not_lifted") && !p.contains_key("$initial_not_lifted"));
}

/// utils.test.ts's `$set`/`$set_once` split over two events: a later event changes the current
/// value, never the initial one.
#[test]
fn a_later_event_moves_the_current_value_only() {
    let mut e = Engine::new();
    e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$browser": "Chrome"}}),
    ]);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 2,
        "properties": {"$browser": "Firefox"}}),
    ]);
    let p = object(&out.person().properties);
    assert_eq!(
        (p["$browser"].clone(), p["$initial_browser"].clone()),
        (json!("Firefox"), json!("Chrome"))
    );
}

/// normalize-event-step.test.ts "normalizes with processPerson=true and preserves person
/// properties": the client's own `$set` of a lifted key wins over the lifted value.
#[test]
fn an_explicit_set_wins_over_the_lifted_value() {
    let p = person_after(json!({"$browser": "Chrome", "$set": {"$browser": "Custom"}}));
    assert_eq!(p["$browser"], json!("Custom"));
}

/// utils.test.ts "treats $os_name as fallback for $os": `$os_name` stands in for a missing
/// `$os` (the event's `$os`, `$set.$os`, `$set_once.$initial_os`); `$os` itself wins.
#[test]
fn os_name_is_used_when_os_is_missing() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$os_name": "iOS"}}),
    ]);
    assert_eq!(out.properties("u", "$pageview")["$os"], json!("iOS"));
    let p = object(&out.person().properties);
    assert_eq!(
        (p["$os"].clone(), p["$initial_os"].clone()),
        (json!("iOS"), json!("iOS"))
    );
    let p = person_after(json!({"$os_name": "iOS", "$os": "Android"}));
    assert_eq!(p["$os"], json!("Android"), "$os itself wins");
}

/// utils.test.ts "does not lift device context from an $is_server event, but keeps campaign
/// params" and "maps $os to $initial_os unless $is_server is true: %s".
#[test]
fn server_events_do_not_lift_the_os() {
    let p = person_after(
        json!({"$is_server": true, "$os": "Linux", "$os_version": "5.15.0",
        "utm_source": "newsletter"}),
    );
    for key in ["$os", "$initial_os", "$os_version", "$initial_os_version"] {
        assert!(!p.contains_key(key), "{key}: {p:?}");
    }
    assert_eq!(p["utm_source"], json!("newsletter"));
    assert_eq!(p["$initial_utm_source"], json!("newsletter"));
    let p = person_after(json!({"$is_server": false, "$os": "Linux"}));
    assert_eq!(p["$initial_os"], json!("Linux"));
}
