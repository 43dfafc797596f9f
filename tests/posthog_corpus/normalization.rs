//! What normalization does to an event before it is stored.

use serde_json::json;

use crate::harness::Engine;

/// process-event.test.ts "long event name substr": 200 characters.
#[test]
fn event_names_are_cut_to_200_characters() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "é".repeat(250), "distinct_id": "u", "timestamp": 1,
        "properties": {}}),
    ]);
    assert_eq!(out.0.events[0].event.chars().count(), 200);
}

/// elements-chain.test.ts "truncates $el_text to 400 chars and attr__href to 2048 chars" and
/// process-event.test.ts "long htext": the element's `text` and `href` are cut; like PostHog's
/// `extractElements`, the raw `attr__*` attributes are kept as sent.
#[test]
fn legacy_elements_become_a_truncated_elements_chain() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$autocapture", "distinct_id": "u", "timestamp": 1,
        "properties": {"$elements": [
            {"tag_name": "a", "$el_text": "t".repeat(500), "attr__href": "h".repeat(3000),
             "nth_child": 1, "nth_of_type": 2, "attr__class": "btn primary"},
            {"tag_name": "div"}
        ]}}),
    ]);
    let row = out.event("u", "$autocapture");
    let chain = &row.elements_chain;
    assert!(chain.starts_with("a.btn.primary:"), "{chain}");
    assert!(chain.contains(&format!("text=\"{}\"", "t".repeat(400))));
    assert!(!chain.contains(&"t".repeat(401)));
    assert!(chain.contains(&format!("href=\"{}\"", "h".repeat(2048))));
    assert!(chain.contains(&format!("attr__href=\"{}\"", "h".repeat(3000))));
    assert!(
        chain.ends_with(";div:nth-child=\"0\"nth-of-type=\"0\""),
        "{chain}"
    );
    let props = out.properties("u", "$autocapture");
    assert!(!props.contains_key("$elements") && !props.contains_key("$elements_chain"));
}

/// prepareEventStep.test.ts "extracts elements_chain from properties" and "uses elements_chain
/// if both elements and elements_chain are present".
#[test]
fn an_elements_chain_is_stored_as_sent() {
    let mut e = Engine::new();
    let chain = "button.cta:nth-child=\"1\"nth-of-type=\"1\"text=\"Buy\"";
    let out = e.send(&[
        json!({"event": "$autocapture", "distinct_id": "u", "timestamp": 1,
        "properties": {"$elements_chain": chain, "$elements": [{"tag_name": "div"}], "a": 1}}),
    ]);
    assert_eq!(out.event("u", "$autocapture").elements_chain, chain);
    let props = out.properties("u", "$autocapture");
    assert!(!props.contains_key("$elements") && !props.contains_key("$elements_chain"));
    assert_eq!(props["a"], json!(1));
}

/// prepareEventStep.test.ts "processes elements correctly".
#[test]
fn elements_become_posthogs_chain_text() {
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$autocapture", "distinct_id": "u", "timestamp": 1,
        "properties": {"a": 1, "$elements": [
            {"tag_name": "div", "nth_child": 1, "nth_of_type": 2, "$el_text": "text"}]}}),
    ]);
    assert_eq!(
        out.event("u", "$autocapture").elements_chain,
        "div:nth-child=\"1\"nth-of-type=\"2\"text=\"text\""
    );
}

/// process-event.test.ts "ip capture", "ip override" and "anonymized ip capture": the request's
/// IP becomes `$ip` unless the event has one; a team with `anonymize_ips` keeps none.
#[test]
fn ips_are_removed_for_teams_that_anonymize_them() {
    let mut e = Engine::with_team(|t| t.anonymize_ips = true);
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$ip": "198.51.100.4"}}),
    ]);
    assert!(!out.properties("u", "$pageview").contains_key("$ip"));
    let mut e = Engine::new();
    let out = e.send(&[
        json!({"event": "$pageview", "distinct_id": "u", "timestamp": 1,
        "properties": {"$ip": "198.51.100.4"}}),
    ]);
    assert_eq!(
        out.properties("u", "$pageview")["$ip"],
        json!("198.51.100.4")
    );
    let out = e.send(&[
        json!({"event": "$pageleave", "distinct_id": "u", "timestamp": 2,
        "properties": {}}),
    ]);
    assert_eq!(
        out.properties("u", "$pageleave")["$ip"],
        json!("203.0.113.7")
    );
}
