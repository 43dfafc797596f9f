//! Webhook templates, after PostHog's destination inputs: a JSON value whose strings may hold
//! `{event.properties.$browser}`-style paths into `{"event": …, "person": …}`. A string that is
//! exactly one path becomes the value itself (number, object, …); elsewhere a path becomes text.
//! A missing path renders as `null`, or as nothing inside text.

use hogstream_plugin::ProcessedEvent;
use serde_json::{Map, Value, json};

/// What templates can refer to.
pub fn scope(event: &ProcessedEvent) -> Value {
    json!({
        "event": {
            "uuid": event.uuid,
            "team_id": event.team_id,
            "event": event.event,
            "distinct_id": event.distinct_id,
            "timestamp": event.timestamp,
            "properties": event.properties,
            "elements_chain": event.elements_chain,
        },
        "person": event.person,
    })
}

fn lookup<'a>(scope: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(scope, |v, part| v.get(part))
}

fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '-'))
}

fn render_text(template: &str, scope: &Value) -> Value {
    let trimmed = template.trim();
    if let Some(path) = trimmed.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
        && is_path(path)
    {
        return lookup(scope, path).cloned().unwrap_or(Value::Null);
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_path(&after[..close]) => {
                match lookup(scope, &after[..close]) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => {}
                    Some(other) => out.push_str(&other.to_string()),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

/// Renders `template` for `event`.
pub fn render(template: &Value, event: &ProcessedEvent) -> Value {
    render_in(template, &scope(event))
}

fn render_in(template: &Value, scope: &Value) -> Value {
    match template {
        Value::String(s) => render_text(s, scope),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_in(v, scope)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_in(v, scope)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hogstream_plugin::testing;

    #[test]
    fn whole_values_text_and_missing_paths() {
        let mut e = testing::processed("$pageview", "user-1");
        e.properties.insert("$browser".into(), json!("Firefox"));
        e.properties.insert("n".into(), json!(3));
        e.person
            .properties
            .insert("email".into(), json!("a@example.com"));
        let t = json!({
            "text": "{event.event} by {person.properties.email} on {event.properties.$browser} ({event.properties.n}){event.properties.nope}",
            "count": "{event.properties.n}",
            "props": "{event.properties}",
            "missing": "{person.properties.nope}",
            "literal": "{not a path} {",
            "list": ["{event.distinct_id}", 1],
        });
        let r = render(&t, &e);
        assert_eq!(
            r["text"],
            json!("$pageview by a@example.com on Firefox (3)")
        );
        assert_eq!(r["count"], json!(3));
        assert_eq!(r["props"]["$browser"], json!("Firefox"));
        assert_eq!(r["missing"], Value::Null);
        assert_eq!(r["literal"], json!("{not a path} {"));
        assert_eq!(r["list"], json!(["user-1", 1]));
    }
}
