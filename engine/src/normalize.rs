//! Decoding and normalization of captured events, as PostHog's pipeline does it before persons
//! (`docs/posthog-rules.md` §2 "Ingestion before persons"): team resolution, drop
//! lists, `$process_person_profile`, property lifting, event-name sanitizing, timestamps and
//! `elements_chain`. Pure functions: no I/O, so every rule is unit-tested here.

use chrono::{DateTime, Utc};
use hogstream_event::{CapturedEvent, time::parse_rfc3339};
use serde_json::{Map, Value};
use uuid::Uuid;

use hogstream_plugin::{Chain, ChainOutcome, PluginEvent};
use std::{collections::HashMap, sync::LazyLock};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::teams::Teams;
use hogstream_state::persons::Personless;

/// A captured event ready for the person stage.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedEvent {
    pub team_id: i64,
    pub uuid: Uuid,
    pub event: String,
    pub distinct_id: String,
    pub properties: Map<String, Value>,
    pub timestamp: DateTime<Utc>,
    /// When capture received the event.
    pub now: DateTime<Utc>,
    pub elements_chain: String,
    pub process_person: bool,
    /// What the event may learn of its id's person when it does not process it.
    pub personless: Personless,
}

/// An ingestion warning for the `ingestion_warnings` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// When capture received the event: the same on every replay, so a replayed warning is
    /// deduplicated like the event.
    pub at: DateTime<Utc>,
    pub team_id: i64,
    pub kind: &'static str,
    pub details: Value,
}

/// What normalizing one captured message produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Event(NormalizedEvent, Vec<Warning>),
    /// Not stored, on purpose; `reason` labels the dropped-events counter.
    Dropped {
        reason: &'static str,
        warning: Option<Warning>,
    },
    /// The message cannot be processed: it goes to the dead-letter topic with this reason.
    DeadLetter(String),
}

/// Engine-wide rules that are not per team.
#[derive(Debug, Default)]
pub struct Rules {
    /// Entries `token` or `token:distinct_id` whose events are dropped.
    pub drop_events: Vec<String>,
    pub transforms: TeamTransforms,
}

/// Each team's plugin transforms, in configured order.
#[derive(Default)]
pub struct TeamTransforms(pub HashMap<i64, Chain>);

impl std::fmt::Debug for TeamTransforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(team, chain)| (team, chain.len())))
            .finish()
    }
}

const MAX_DISTINCT_ID_CHARS: usize = 400;
/// PostHog's limit of a `$groupidentify`'s `$group_key`, in UTF-16 code units (its Postgres
/// column is `varchar(400)`; JavaScript measures strings so).
const MAX_GROUP_KEY_LENGTH: usize = 400;
/// Legacy `$elements`: PostHog cuts each element's text and href to these many characters.
const MAX_ELEMENT_TEXT_CHARS: usize = 400;
const MAX_ELEMENT_HREF_CHARS: usize = 2048;
const MAX_EVENT_NAME_CHARS: usize = 200;
const PERSON_EVENTS: &[&str] = &[
    "$identify",
    "$create_alias",
    "$merge_dangerously",
    "$groupidentify",
];

/// Event properties PostHog copies into `$set` and, as `$initial_*`, into `$set_once`: each
/// with its `$initial_` name.
const LIFTED: &[(&str, &str)] = &[
    ("$browser", "$initial_browser"),
    ("$browser_version", "$initial_browser_version"),
    ("$os", "$initial_os"),
    ("$os_version", "$initial_os_version"),
    ("$device_type", "$initial_device_type"),
    ("$current_url", "$initial_current_url"),
    ("$pathname", "$initial_pathname"),
    ("$referrer", "$initial_referrer"),
    ("$referring_domain", "$initial_referring_domain"),
    ("$app_build", "$initial_app_build"),
    ("$app_name", "$initial_app_name"),
    ("$app_namespace", "$initial_app_namespace"),
    ("$app_version", "$initial_app_version"),
    ("$raw_user_agent", "$initial_raw_user_agent"),
    ("utm_source", "$initial_utm_source"),
    ("utm_medium", "$initial_utm_medium"),
    ("utm_campaign", "$initial_utm_campaign"),
    ("utm_content", "$initial_utm_content"),
    ("utm_term", "$initial_utm_term"),
    ("gclid", "$initial_gclid"),
    ("gad_source", "$initial_gad_source"),
    ("gclsrc", "$initial_gclsrc"),
    ("dclid", "$initial_dclid"),
    ("gbraid", "$initial_gbraid"),
    ("wbraid", "$initial_wbraid"),
    ("fbclid", "$initial_fbclid"),
    ("msclkid", "$initial_msclkid"),
    ("twclid", "$initial_twclid"),
    ("li_fat_id", "$initial_li_fat_id"),
    ("mc_cid", "$initial_mc_cid"),
    ("igshid", "$initial_igshid"),
    ("ttclid", "$initial_ttclid"),
    ("rdt_cid", "$initial_rdt_cid"),
    ("irclid", "$initial_irclid"),
    ("_kx", "$initial__kx"),
];

/// [`LIFTED`]'s keys → their place in it: one lookup per property of an event instead of one
/// per lifted key.
static LIFTED_INDEX: LazyLock<HashMap<&str, usize, Xxh3DefaultBuilder>> = LazyLock::new(|| {
    LIFTED
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (*k, i))
        .collect()
});

/// Normalizes one captured message: the steps below, in PostHog's order. Each step either
/// passes the event on or ends it with its [`Outcome`].
pub fn normalize(payload: &[u8], force_personless: bool, teams: &Teams, rules: &Rules) -> Outcome {
    match steps(payload, force_personless, teams, rules) {
        Ok(outcome) => outcome,
        Err(ended) => *ended,
    }
}

/// A step's result: `Err` ends normalization with that outcome (boxed: the common path is `Ok`).
type Step<T> = Result<T, Box<Outcome>>;

fn steps(payload: &[u8], force_personless: bool, teams: &Teams, rules: &Rules) -> Step<Outcome> {
    let (captured, mut data) = decode(payload)?;
    let now = parse_rfc3339(&captured.now).unwrap_or_else(Utc::now);
    let team = admit(&captured, now, teams, &rules.drop_events)?;
    let mut properties = match data.remove("properties") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let event = sanitize_event_name(&captured.event);
    drop_internal_events(&event, &properties, &captured, team.id, now)?;
    client_ip(&mut properties, &captured.ip, team.anonymize_ips);
    let (event, distinct_id, mut properties) = run_plugins(
        rules,
        team.id,
        captured.uuid,
        event,
        captured.distinct_id.clone(),
        properties,
    )?;
    let context = Context {
        at: now,
        team_id: team.id,
        uuid: captured.uuid,
        event: &event,
        distinct_id: &distinct_id,
    };
    let mut warnings = Vec::new();
    let forced = force_personless || team.person_processing_opt_out;
    let personless = if force_personless {
        Personless::Unlinked
    } else if team.person_processing_opt_out {
        Personless::NeverUpgraded
    } else {
        Personless::Upgradable
    };
    let process_person = person_processing(&context, forced, &mut properties, &mut warnings)?;
    check_group_key(&context, &properties)?;
    person_properties(
        &mut data,
        &mut properties,
        &event,
        captured.sent_at.as_deref(),
        process_person,
    );
    let timestamp = event_timestamp(&context, &captured.timestamp, &mut warnings);
    let elements_chain = take_elements_chain(&mut properties);
    Ok(Outcome::Event(
        NormalizedEvent {
            team_id: team.id,
            uuid: captured.uuid,
            event,
            distinct_id,
            properties,
            timestamp,
            now,
            elements_chain,
            process_person,
            personless,
        },
        warnings,
    ))
}

/// What a warning about the event being normalized names.
struct Context<'a> {
    at: DateTime<Utc>,
    team_id: i64,
    uuid: Uuid,
    event: &'a str,
    distinct_id: &'a str,
}

impl Context<'_> {
    /// A warning whose details name the event (uuid, name, distinct id), then `extra`.
    fn warning(&self, kind: &'static str, extra: Option<(&str, &Value)>) -> Warning {
        let mut details = serde_json::json!({
            "eventUuid": self.uuid,
            "event": self.event,
            "distinctId": self.distinct_id,
        });
        if let (Value::Object(d), Some((key, value))) = (&mut details, extra) {
            d.insert(key.to_owned(), value.clone());
        }
        Warning {
            at: self.at,
            team_id: self.team_id,
            kind,
            details,
        }
    }
}

/// The captured envelope and its `data` object; anything undecodable is a dead letter.
fn decode(payload: &[u8]) -> Step<(CapturedEvent, Map<String, Value>)> {
    let captured: CapturedEvent = serde_json::from_slice(payload)
        .map_err(|e| Outcome::DeadLetter(format!("undecodable captured event: {e}")))?;
    match crate::json::parse(&captured.data) {
        Ok(Value::Object(m)) => Ok((captured, m)),
        Ok(_) => Err(Box::new(Outcome::DeadLetter(
            "captured event `data` is not a JSON object".into(),
        ))),
        Err(e) => Err(Box::new(Outcome::DeadLetter(format!(
            "captured event `data` is not JSON: {e}"
        )))),
    }
}

/// The event's team, unless its token is missing or unknown, it is on the drop list, or its
/// distinct id is too long.
fn admit<'t>(
    captured: &CapturedEvent,
    now: DateTime<Utc>,
    teams: &'t Teams,
    drop_events: &[String],
) -> Step<&'t crate::teams::Team> {
    let dropped = |reason, warning| Box::new(Outcome::Dropped { reason, warning });
    if captured.token.is_empty() {
        return Err(dropped("no_token", None));
    }
    let team = teams
        .by_token(&captured.token)
        .ok_or_else(|| dropped("invalid_token", None))?;
    let listed = |d: &String| {
        *d == captured.token
            || d.strip_prefix(captured.token.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                == Some(captured.distinct_id.as_str())
    };
    if drop_events.iter().any(listed) {
        return Err(dropped("drop_list", None));
    }
    if captured.distinct_id.chars().count() > MAX_DISTINCT_ID_CHARS {
        return Err(dropped(
            "invalid_distinct_id",
            Some(Warning {
                at: now,
                team_id: team.id,
                kind: "skipping_event_invalid_distinct_id",
                details: serde_json::json!({ "eventUuid": captured.uuid, "distinctId": captured.distinct_id }),
            }),
        ));
    }
    Ok(team)
}

/// Client ingestion warnings become warnings, heatmap events are not stored.
fn drop_internal_events(
    event: &str,
    properties: &Map<String, Value>,
    captured: &CapturedEvent,
    team_id: i64,
    now: DateTime<Utc>,
) -> Step<()> {
    match event {
        "$$client_ingestion_warning" => {
            let message = properties
                .get("$$client_ingestion_warning_message")
                .cloned()
                .unwrap_or(Value::Null);
            Err(Box::new(Outcome::Dropped {
                reason: "client_ingestion_warning",
                warning: Some(Warning {
                    at: now,
                    team_id,
                    kind: "client_ingestion_warning",
                    details: serde_json::json!({ "eventUuid": captured.uuid, "event": event, "distinctId": captured.distinct_id, "message": message }),
                }),
            }))
        }
        "$$heatmap" => Err(Box::new(Outcome::Dropped {
            reason: "heatmap",
            warning: None,
        })),
        _ => Ok(()),
    }
}

/// `$ip` from the client's address unless the event has one, and never for a team that asked
/// to anonymize. Before the transforms, so GeoIP sees the client's address, and never one the
/// team asked to anonymize.
fn client_ip(properties: &mut Map<String, Value>, ip: &str, anonymize: bool) {
    if !properties.contains_key("$ip") && !ip.is_empty() {
        properties.insert("$ip".into(), Value::String(ip.to_owned()));
    }
    if anonymize {
        properties.remove("$ip");
    }
}

/// The team's transforms, in order: they may change the name, the distinct id and the
/// properties, or drop the event.
fn run_plugins(
    rules: &Rules,
    team_id: i64,
    uuid: Uuid,
    event: String,
    distinct_id: String,
    properties: Map<String, Value>,
) -> Step<(String, String, Map<String, Value>)> {
    let Some(chain) = rules.transforms.0.get(&team_id) else {
        return Ok((event, distinct_id, properties));
    };
    let input = PluginEvent::new(team_id, uuid, event, distinct_id, properties);
    let out = match chain.run(input) {
        ChainOutcome::Kept { event: out, failed } => {
            for plugin in failed {
                metrics::counter!("hogstream_plugin_failures_total", "plugin" => plugin)
                    .increment(1);
            }
            out
        }
        ChainOutcome::Dropped(plugin) => {
            metrics::counter!("hogstream_plugin_drops_total", "plugin" => plugin).increment(1);
            return Err(Box::new(Outcome::Dropped {
                reason: "plugin",
                warning: None,
            }));
        }
    };
    let chars = out.distinct_id.chars().count();
    if out.distinct_id.trim().is_empty() || chars > MAX_DISTINCT_ID_CHARS {
        return Err(Box::new(Outcome::DeadLetter(format!(
            "a plugin set an invalid distinct_id ({chars} chars)"
        ))));
    }
    Ok((
        sanitize_event_name(&out.event),
        out.distinct_id,
        out.properties,
    ))
}

/// Whether the event processes its person: not when `forced` off (the capture header or the
/// team's opt-out) or `$process_person_profile` is false; a person event (`$identify`…) that
/// may not is dropped with a warning. As in PostHog, the stored event then carries
/// `$process_person_profile: false`, and no `$process_person_profile` when it processes its
/// person.
fn person_processing(
    context: &Context<'_>,
    forced_off: bool,
    properties: &mut Map<String, Value>,
    warnings: &mut Vec<Warning>,
) -> Step<bool> {
    let process_person = person_processing_of(context, forced_off, properties, warnings)?;
    if process_person {
        properties.remove("$process_person_profile");
    } else {
        properties.insert("$process_person_profile".into(), Value::Bool(false));
    }
    Ok(process_person)
}

fn person_processing_of(
    context: &Context<'_>,
    forced_off: bool,
    properties: &Map<String, Value>,
    warnings: &mut Vec<Warning>,
) -> Step<bool> {
    let mut process_person = !forced_off;
    match properties.get("$process_person_profile") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => process_person = false,
        Some(other) => warnings.push(context.warning(
            "invalid_process_person_profile",
            Some(("$process_person_profile", other)),
        )),
    }
    if !process_person && PERSON_EVENTS.contains(&context.event) {
        return Err(Box::new(Outcome::Dropped {
            reason: "person_event_without_person_processing",
            warning: Some(
                context.warning("invalid_event_when_process_person_profile_is_false", None),
            ),
        }));
    }
    Ok(process_person)
}

/// A `$groupidentify` whose `$group_key` PostHog could not store (longer than
/// [`MAX_GROUP_KEY_LENGTH`]) is dropped with a `group_key_too_long` warning.
fn check_group_key(context: &Context<'_>, properties: &Map<String, Value>) -> Step<()> {
    if context.event != "$groupidentify" {
        return Ok(());
    }
    let key = match properties.get("$group_key") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Ok(()),
    };
    let length = key.encode_utf16().count();
    if length <= MAX_GROUP_KEY_LENGTH {
        return Ok(());
    }
    let mut warning = context.warning("group_key_too_long", None);
    if let Value::Object(d) = &mut warning.details {
        d.insert("groupKey".into(), Value::String(key));
        d.insert("groupKeyLength".into(), length.into());
        d.insert("maxLength".into(), MAX_GROUP_KEY_LENGTH.into());
    }
    Err(Box::new(Outcome::Dropped {
        reason: "group_key_too_long",
        warning: Some(warning),
    }))
}

/// `$set`/`$set_once` from the top level, `$sent_at`, lifted person properties; personless
/// events and `$groupidentify` lose their person writes.
fn person_properties(
    data: &mut Map<String, Value>,
    properties: &mut Map<String, Value>,
    event: &str,
    sent_at: Option<&str>,
    process_person: bool,
) {
    merge_top_level(data, properties, "$set");
    merge_top_level(data, properties, "$set_once");
    if let Some(sent_at) = sent_at {
        properties.insert("$sent_at".into(), Value::String(sent_at.to_owned()));
    }
    if event != "$snapshot" && event != "$performance_event" {
        lift_person_properties(properties);
    }
    if !process_person || event == "$groupidentify" {
        for k in ["$set", "$set_once", "$unset"] {
            properties.remove(k);
        }
    }
}

/// The event's timestamp, or capture's receipt time with a warning when it is invalid.
fn event_timestamp(
    context: &Context<'_>,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> DateTime<Utc> {
    parse_rfc3339(text).unwrap_or_else(|| {
        warnings.push(Warning {
            at: context.at,
            team_id: context.team_id,
            kind: "ignored_invalid_timestamp",
            details: serde_json::json!({ "eventUuid": context.uuid, "field": "timestamp", "value": text }),
        });
        context.at
    })
}

fn sanitize_event_name(name: &str) -> String {
    // No more bytes than the limit in characters: nothing to cut (the common case).
    if name.len() <= MAX_EVENT_NAME_CHARS {
        return name.to_owned();
    }
    name.chars().take(MAX_EVENT_NAME_CHARS).collect()
}

/// Top-level `$set`/`$set_once` join `properties.$set`/`$set_once`; the top-level keys win,
/// as in PostHog's `normalizeEvent`.
fn merge_top_level(data: &mut Map<String, Value>, properties: &mut Map<String, Value>, key: &str) {
    let Some(Value::Object(top)) = data.remove(key) else {
        return;
    };
    match properties.get_mut(key) {
        Some(Value::Object(existing)) => existing.extend(top),
        _ => {
            properties.insert(key.into(), Value::Object(top));
        }
    }
}

/// PostHog's `personInitialAndUTMProperties`: lifted keys go into `$set` (an explicit client
/// `$set` wins) and `$initial_*` into `$set_once`. `$os` is not lifted for server events.
/// Public for tests that model what the person stage receives.
pub fn lift_person_properties(properties: &mut Map<String, Value>) {
    // `$os_name` (some SDKs send it) stands in for a missing `$os`, and is lifted as it.
    if !properties.contains_key("$os")
        && let Some(os) = properties.get("$os_name").cloned()
    {
        properties.insert("$os".into(), os);
    }
    let is_server = properties.get("$is_server") == Some(&Value::Bool(true));
    let mut lifted: Vec<(usize, Value)> = properties
        .iter()
        .filter_map(|(k, v)| LIFTED_INDEX.get(k.as_str()).map(|i| (*i, v)))
        .filter(|(i, _)| !(is_server && matches!(LIFTED[*i].0, "$os" | "$os_version")))
        .map(|(i, v)| (i, v.clone()))
        .collect();
    if lifted.is_empty() {
        return;
    }
    // In PostHog's order of the keys, whatever the event's order.
    lifted.sort_unstable_by_key(|(i, _)| *i);
    let mut set = take_object(properties, "$set");
    let mut set_once = take_object(properties, "$set_once");
    for (i, v) in lifted {
        let (key, initial) = LIFTED[i];
        set.entry(key).or_insert_with(|| v.clone());
        set_once.entry(initial).or_insert(v);
    }
    properties.insert("$set".into(), Value::Object(set));
    properties.insert("$set_once".into(), Value::Object(set_once));
}

fn take_object(properties: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match properties.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `elements_chain` from `$elements_chain`, else built from legacy `$elements`; both removed.
fn take_elements_chain(properties: &mut Map<String, Value>) -> String {
    let chain = properties.remove("$elements_chain");
    let elements = properties.remove("$elements");
    if let Some(Value::String(s)) = chain {
        return s;
    }
    match elements {
        Some(Value::Array(els)) => els
            .iter()
            .filter_map(Value::as_object)
            .map(element_to_string)
            .collect::<Vec<_>>()
            .join(";"),
        _ => String::new(),
    }
}

fn escape_quotes(s: &str) -> String {
    s.replace('"', "\\\"")
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` cut to its first `max` characters.
fn cut(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text,
    }
}

/// One element of the chain: `tag.class1.class2:attr="value"...`, attributes sorted by name.
fn element_to_string(el: &Map<String, Value>) -> String {
    let mut out = el.get("tag_name").map(text_of).unwrap_or_default();
    let mut classes: Vec<String> = match el.get("attr__class").or_else(|| el.get("classes")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().map(text_of).collect(),
        _ => Vec::new(),
    };
    classes.sort();
    for c in classes {
        out.push('.');
        out.push_str(&c.replace('"', ""));
    }
    let mut attrs: Vec<(String, String)> = vec![
        (
            "nth-child".into(),
            el.get("nth_child")
                .map(text_of)
                .unwrap_or_else(|| "0".into()),
        ),
        (
            "nth-of-type".into(),
            el.get("nth_of_type")
                .map(text_of)
                .unwrap_or_else(|| "0".into()),
        ),
    ];
    if let Some(t) = el.get("$el_text").or_else(|| el.get("text")) {
        attrs.push(("text".into(), cut(text_of(t), MAX_ELEMENT_TEXT_CHARS)));
    }
    if let Some(h) = el.get("attr__href").or_else(|| el.get("href")) {
        attrs.push(("href".into(), cut(text_of(h), MAX_ELEMENT_HREF_CHARS)));
    }
    if let Some(id) = el.get("attr__id") {
        attrs.push(("attr_id".into(), text_of(id)));
    }
    for (k, v) in el {
        if k.starts_with("attr__") {
            attrs.push((k.clone(), text_of(v)));
        }
    }
    attrs.sort();
    out.push(':');
    for (k, v) in attrs {
        out.push_str(&format!("{}=\"{}\"", escape_quotes(&k), escape_quotes(&v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teams::Team;
    use serde_json::json;

    fn teams() -> Teams {
        Teams::new(vec![
            Team {
                id: 1,
                token: "tok".into(),
                ..Default::default()
            },
            Team {
                id: 2,
                token: "optout".into(),
                person_processing_opt_out: true,
                anonymize_ips: true,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn captured(token: &str, event: &str, data: Value) -> Vec<u8> {
        let c = CapturedEvent {
            uuid: Uuid::from_u128(7),
            distinct_id: "d1".into(),
            ip: "10.0.0.1".into(),
            data: data.to_string(),
            now: "2026-01-01T00:00:10Z".into(),
            sent_at: Some("2026-01-01T00:00:09Z".into()),
            token: token.into(),
            event: event.into(),
            timestamp: "2026-01-01T00:00:05.123456Z".into(),
            is_cookieless_mode: false,
            historical_migration: false,
        };
        serde_json::to_vec(&c).unwrap()
    }

    fn event(o: Outcome) -> (NormalizedEvent, Vec<Warning>) {
        match o {
            Outcome::Event(e, w) => (e, w),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn garbage_goes_to_the_dead_letter_queue() {
        assert!(
            matches!(normalize(b"not json", false, &teams(), &Rules::default()), Outcome::DeadLetter(r) if r.contains("undecodable"))
        );
        let mut c: Value = serde_json::from_slice(&captured("tok", "e", json!({}))).unwrap();
        c["data"] = Value::String("[1]".into());
        let out = normalize(c.to_string().as_bytes(), false, &teams(), &Rules::default());
        assert!(matches!(out, Outcome::DeadLetter(r) if r.contains("not a JSON object")));
    }

    #[test]
    fn unknown_token_and_drop_list_are_dropped_with_reasons() {
        let out = normalize(
            &captured("nope", "e", json!({"event":"e"})),
            false,
            &teams(),
            &Rules::default(),
        );
        assert_eq!(
            out,
            Outcome::Dropped {
                reason: "invalid_token",
                warning: None
            }
        );
        let rules = Rules {
            drop_events: vec!["tok:d1".into()],
            ..Rules::default()
        };
        let out = normalize(
            &captured("tok", "e", json!({"event":"e"})),
            false,
            &teams(),
            &rules,
        );
        assert_eq!(
            out,
            Outcome::Dropped {
                reason: "drop_list",
                warning: None
            }
        );
    }

    #[test]
    fn top_level_set_merges_and_ip_and_timestamps_are_kept() {
        let data = json!({"event":"e","properties":{"$set":{"a":1,"b":1}},"$set":{"b":2},"$set_once":{"c":3}});
        let (e, w) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert!(w.is_empty());
        assert_eq!(e.team_id, 1);
        assert_eq!(e.properties["$set"], json!({"a":1,"b":2}));
        assert_eq!(e.properties["$set_once"], json!({"c":3}));
        assert_eq!(e.properties["$ip"], json!("10.0.0.1"));
        assert_eq!(e.properties["$sent_at"], json!("2026-01-01T00:00:09Z"));
        assert_eq!(e.timestamp.to_rfc3339(), "2026-01-01T00:00:05.123456+00:00");
        assert!(e.process_person);
    }

    #[test]
    fn lifted_properties_lose_to_an_explicit_set() {
        let data = json!({"event":"e","properties":{"$browser":"Firefox","utm_source":"ads","$set":{"$browser":"Mine"}}});
        let (e, _) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(
            e.properties["$set"],
            json!({"$browser":"Mine","utm_source":"ads"})
        );
        assert_eq!(
            e.properties["$set_once"],
            json!({"$initial_browser":"Firefox","$initial_utm_source":"ads"})
        );
    }

    #[test]
    fn lifted_properties_keep_posthogs_order_whatever_the_events() {
        let data = json!({"event":"e","properties":{"utm_source":"ads","$os":"Linux","$browser":"Firefox"}});
        let (e, _) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        let keys = |k: &str| -> Vec<String> {
            e.properties[k]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(keys("$set"), ["$browser", "$os", "utm_source"]);
        assert_eq!(
            keys("$set_once"),
            ["$initial_browser", "$initial_os", "$initial_utm_source"]
        );
    }

    #[test]
    fn every_lifted_key_has_its_initial_name() {
        for (key, initial) in LIFTED {
            assert_eq!(
                *initial,
                format!("$initial_{}", key.trim_start_matches('$'))
            );
        }
        assert_eq!(LIFTED_INDEX.len(), LIFTED.len(), "no key twice");
    }

    #[test]
    fn server_events_do_not_lift_os() {
        let data = json!({"event":"e","properties":{"$os":"Linux","$is_server":true}});
        let (e, _) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert!(!e.properties.contains_key("$set"));
    }

    #[test]
    fn personless_rules() {
        let data =
            json!({"event":"e","properties":{"$process_person_profile":false,"$set":{"a":1}}});
        let (e, _) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert!(!e.process_person);
        assert!(!e.properties.contains_key("$set"));

        let data = json!({"event":"$identify","properties":{"$process_person_profile":false}});
        let out = normalize(
            &captured("tok", "$identify", data),
            false,
            &teams(),
            &Rules::default(),
        );
        assert!(
            matches!(out, Outcome::Dropped { reason: "person_event_without_person_processing", warning: Some(w) } if w.kind == "invalid_event_when_process_person_profile_is_false")
        );

        let data = json!({"event":"e","properties":{"$process_person_profile":"yes"}});
        let (e, w) = event(normalize(
            &captured("tok", "e", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert!(e.process_person);
        assert_eq!(w[0].kind, "invalid_process_person_profile");

        let (e, _) = event(normalize(
            &captured("tok", "e", json!({"event":"e"})),
            true,
            &teams(),
            &Rules::default(),
        ));
        assert!(!e.process_person, "the capture header forces personless");
    }

    #[test]
    fn team_opt_out_and_anonymize_ips() {
        let (e, _) = event(normalize(
            &captured("optout", "e", json!({"event":"e"})),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(e.team_id, 2);
        assert!(!e.process_person);
        assert!(!e.properties.contains_key("$ip"));
    }

    #[test]
    fn client_ingestion_warning_becomes_a_warning() {
        let data = json!({"event":"$$client_ingestion_warning","properties":{"$$client_ingestion_warning_message":"oops"}});
        match normalize(
            &captured("tok", "$$client_ingestion_warning", data),
            false,
            &teams(),
            &Rules::default(),
        ) {
            Outcome::Dropped {
                reason,
                warning: Some(w),
            } => {
                assert_eq!(reason, "client_ingestion_warning");
                assert_eq!(w.details["message"], json!("oops"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_names_and_ids() {
        let long = "x".repeat(300);
        let (e, _) = event(normalize(
            &captured("tok", &long, json!({"event":"e"})),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(e.event.chars().count(), 200);

        let mut c: Value =
            serde_json::from_slice(&captured("tok", "e", json!({"event":"e"}))).unwrap();
        c["distinct_id"] = Value::String("y".repeat(401));
        let out = normalize(c.to_string().as_bytes(), false, &teams(), &Rules::default());
        assert!(matches!(
            out,
            Outcome::Dropped {
                reason: "invalid_distinct_id",
                warning: Some(_)
            }
        ));
    }

    #[test]
    fn invalid_timestamp_falls_back_to_now_with_a_warning() {
        let mut c: Value =
            serde_json::from_slice(&captured("tok", "e", json!({"event":"e"}))).unwrap();
        c["timestamp"] = Value::String("yesterday".into());
        let (e, w) = event(normalize(
            c.to_string().as_bytes(),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(e.timestamp, e.now);
        assert_eq!(w[0].kind, "ignored_invalid_timestamp");
    }

    #[test]
    fn elements_chain_from_either_property() {
        let data = json!({"event":"$autocapture","properties":{"$elements_chain":"a:href=\"/x\""}});
        let (e, _) = event(normalize(
            &captured("tok", "$autocapture", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(e.elements_chain, "a:href=\"/x\"");
        assert!(!e.properties.contains_key("$elements_chain"));

        let data = json!({"event":"$autocapture","properties":{"$elements":[
            {"tag_name":"button","attr__class":"b a","nth_child":2,"nth_of_type":1,"$el_text":"Go \"now\""},
            {"tag_name":"div","attr__id":"root"}
        ]}});
        let (e, _) = event(normalize(
            &captured("tok", "$autocapture", data),
            false,
            &teams(),
            &Rules::default(),
        ));
        assert_eq!(
            e.elements_chain,
            "button.a.b:attr__class=\"b a\"nth-child=\"2\"nth-of-type=\"1\"text=\"Go \\\"now\\\"\";div:attr__id=\"root\"attr_id=\"root\"nth-child=\"0\"nth-of-type=\"0\""
        );
        assert!(!e.properties.contains_key("$elements"));
    }

    #[test]
    fn team_plugins_run_before_normalization_and_can_drop() {
        let entries: Vec<hogstream_plugin::PluginConfig> = serde_json::from_value(json!([
            {"plugin": "event-filter", "teams": [1], "config": {"events": ["spam"]}},
            {"plugin": "property-mask", "teams": [1], "config": {"drop": ["secret"]}},
        ]))
        .unwrap();
        let rules = Rules {
            transforms: TeamTransforms({
                let mut registry = hogstream_plugin::Registry::new();
                hogstream_builtins::register(&mut registry);
                registry.check(&entries, &[1, 2]).unwrap().transforms
            }),
            ..Rules::default()
        };
        let dropped = normalize(
            &captured("tok", "spam", json!({"event": "spam"})),
            false,
            &teams(),
            &rules,
        );
        assert_eq!(
            dropped,
            Outcome::Dropped {
                reason: "plugin",
                warning: None
            }
        );
        let data =
            json!({"event": "e", "properties": {"secret": 1, "$set": {"secret": 2, "k": 3}}});
        let (e, _) = event(normalize(
            &captured("tok", "e", data.clone()),
            false,
            &teams(),
            &rules,
        ));
        assert!(e.properties.get("secret").is_none());
        assert_eq!(e.properties["$set"], json!({"k": 3}));
        assert_eq!(
            e.properties["$plugins_succeeded"],
            json!(["event-filter", "property-mask"])
        );
        // Team 2 enabled nothing.
        let (e, _) = event(normalize(
            &captured("optout", "e", data),
            false,
            &teams(),
            &rules,
        ));
        assert_eq!(e.properties["secret"], json!(1));
    }

    /// The steps one by one, with what each decides on its own.
    mod steps {
        use super::super::*;
        use super::{captured, teams};
        use serde_json::json;

        /// A captured event of team 1 (`tok`), distinct id `d1`.
        fn base() -> CapturedEvent {
            serde_json::from_slice(&captured("tok", "e", json!({}))).unwrap()
        }

        fn context(event: &str) -> Context<'_> {
            Context {
                at: DateTime::from_timestamp(1_000, 0).unwrap(),
                team_id: 1,
                uuid: Uuid::from_u128(9),
                event,
                distinct_id: "d",
            }
        }

        fn object(v: Value) -> Map<String, Value> {
            match v {
                Value::Object(m) => m,
                other => panic!("not an object: {other}"),
            }
        }

        #[test]
        fn decode_sends_what_cannot_be_read_to_the_dead_letters() {
            let reason = |o: Outcome| match o {
                Outcome::DeadLetter(r) => r,
                other => panic!("{other:?}"),
            };
            assert!(reason(*decode(b"nope").unwrap_err()).starts_with("undecodable"));
            let mut c = CapturedEvent {
                data: "[1]".into(),
                ..base()
            };
            let payload = serde_json::to_vec(&c).unwrap();
            assert!(reason(*decode(&payload).unwrap_err()).contains("not a JSON object"));
            c.data = r#"{"event": "e"}"#.into();
            let (_, data) = decode(&serde_json::to_vec(&c).unwrap()).unwrap();
            assert_eq!(data["event"], "e");
        }

        #[test]
        fn admit_names_why_an_event_is_not_let_in() {
            let teams = teams();
            let base = base();
            let now = Utc::now();
            let reason = |c: &CapturedEvent, drop: &[String]| match admit(c, now, &teams, drop)
                .map_err(|e| *e)
            {
                Ok(team) => format!("team {}", team.id),
                Err(Outcome::Dropped { reason, .. }) => reason.to_owned(),
                Err(other) => panic!("{other:?}"),
            };
            assert_eq!(reason(&base, &[]), "team 1");
            let no_token = CapturedEvent {
                token: String::new(),
                ..base.clone()
            };
            assert_eq!(reason(&no_token, &[]), "no_token");
            let unknown = CapturedEvent {
                token: "other".into(),
                ..base.clone()
            };
            assert_eq!(reason(&unknown, &[]), "invalid_token");
            assert_eq!(reason(&base, &["tok:d1".into()]), "drop_list");
            assert_eq!(reason(&base, &["tok:d2".into()]), "team 1");
            let long = CapturedEvent {
                distinct_id: "x".repeat(MAX_DISTINCT_ID_CHARS + 1),
                ..base
            };
            assert_eq!(reason(&long, &[]), "invalid_distinct_id");
        }

        #[test]
        fn client_ip_fills_in_and_anonymizes() {
            let mut p = Map::new();
            client_ip(&mut p, "10.0.0.1", false);
            assert_eq!(p["$ip"], "10.0.0.1");
            let mut p = object(json!({"$ip": "1.2.3.4"}));
            client_ip(&mut p, "10.0.0.1", false);
            assert_eq!(p["$ip"], "1.2.3.4", "the event's own $ip wins");
            client_ip(&mut p, "10.0.0.1", true);
            assert!(!p.contains_key("$ip"));
            let mut p = Map::new();
            client_ip(&mut p, "", false);
            assert!(p.is_empty());
        }

        #[test]
        fn person_processing_warns_in_posthogs_words_and_order() {
            let mut warnings = Vec::new();
            let mut props = object(json!({"$process_person_profile": "yes"}));
            assert!(person_processing(&context("e"), false, &mut props, &mut warnings).unwrap());
            assert_eq!(warnings[0].kind, "invalid_process_person_profile");
            // The details' text is stored; its key order is part of the output.
            assert_eq!(
                warnings[0].details.to_string(),
                r#"{"eventUuid":"00000000-0000-0000-0000-000000000009","event":"e","distinctId":"d","$process_person_profile":"yes"}"#
            );
            // PostHog's normalizeEventStep: a person-processing event loses the property, a
            // personless one keeps it as false.
            assert!(!props.contains_key("$process_person_profile"));
            let mut props = object(json!({"$process_person_profile": false}));
            assert!(!person_processing(&context("e"), false, &mut props, &mut warnings).unwrap());
            assert_eq!(props["$process_person_profile"], false);
            let mut props = Map::new();
            assert!(!person_processing(&context("e"), true, &mut props, &mut warnings).unwrap());
            assert_eq!(
                props["$process_person_profile"], false,
                "forced personless: said so on the event"
            );
            match person_processing(&context("$identify"), true, &mut Map::new(), &mut warnings)
                .map_err(|e| *e)
            {
                Err(Outcome::Dropped { reason, warning }) => {
                    assert_eq!(reason, "person_event_without_person_processing");
                    assert_eq!(
                        warning.unwrap().kind,
                        "invalid_event_when_process_person_profile_is_false"
                    );
                }
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn person_properties_join_lift_and_strip() {
            let mut data = object(json!({"$set": {"a": 1}}));
            let mut props = object(json!({"$set": {"a": 0, "b": 2}, "$browser": "Firefox"}));
            person_properties(
                &mut data,
                &mut props,
                "e",
                Some("2026-01-01T00:00:00Z"),
                true,
            );
            assert_eq!(
                props["$set"],
                json!({"a": 1, "b": 2, "$browser": "Firefox"})
            );
            assert_eq!(props["$set_once"], json!({"$initial_browser": "Firefox"}));
            assert_eq!(props["$sent_at"], "2026-01-01T00:00:00Z");
            for (event, process_person) in [("$groupidentify", true), ("e", false)] {
                let mut props =
                    object(json!({"$set": {"a": 1}, "$unset": ["b"], "$browser": "Firefox"}));
                person_properties(&mut Map::new(), &mut props, event, None, process_person);
                assert!(
                    !props.contains_key("$set")
                        && !props.contains_key("$set_once")
                        && !props.contains_key("$unset"),
                    "{event} {process_person}: {props:?}"
                );
            }
        }

        /// PostHog `validate-event-properties.test.ts`: a `$groupidentify` whose group key has
        /// 401 characters is dropped with `group_key_too_long`; 400 are allowed.
        #[test]
        fn a_group_key_over_400_characters_is_dropped_with_a_warning() {
            let c = context("$groupidentify");
            for key in ["k".repeat(399), "k".repeat(400), "é".repeat(400)] {
                let props = object(json!({"$group_type": "company", "$group_key": key}));
                assert!(check_group_key(&c, &props).is_ok());
            }
            let long = "k".repeat(401);
            let props = object(json!({"$group_type": "company", "$group_key": long}));
            match check_group_key(&c, &props).map_err(|e| *e) {
                Err(Outcome::Dropped {
                    reason: "group_key_too_long",
                    warning: Some(w),
                }) => {
                    assert_eq!(w.kind, "group_key_too_long");
                    assert_eq!(w.details["groupKeyLength"], 401);
                    assert_eq!(w.details["maxLength"], 400);
                    assert_eq!(w.details["groupKey"], long);
                }
                other => panic!("{other:?}"),
            }
            // Only `$groupidentify` is checked; a group key elsewhere is just a property.
            assert!(check_group_key(&context("e"), &props).is_ok());
            // 401 UTF-16 code units: an emoji counts two, as in JavaScript.
            let emoji = format!("{}{}", "k".repeat(399), "🦔");
            let props = object(json!({"$group_key": emoji}));
            assert!(check_group_key(&c, &props).is_err());
        }

        /// PostHog `utils.test.ts` "treats $os_name as fallback for $os".
        #[test]
        fn os_name_stands_in_for_a_missing_os() {
            let mut props = object(json!({"$os_name": "Android"}));
            lift_person_properties(&mut props);
            assert_eq!(props["$os"], "Android");
            assert_eq!(props["$set"]["$os"], "Android");
            assert_eq!(props["$set_once"]["$initial_os"], "Android");
            assert_eq!(props["$os_name"], "Android", "the event keeps it");
            let mut props = object(json!({"$os_name": "Android", "$os": "iOS"}));
            lift_person_properties(&mut props);
            assert_eq!(props["$set"]["$os"], "iOS", "$os wins when both are sent");
        }

        /// PostHog `process-event.test.ts` "long htext": a legacy element's text is cut to 400
        /// characters and its href to 2,048.
        #[test]
        fn legacy_elements_have_their_text_and_href_cut() {
            let text = "t".repeat(2050);
            let href = "h".repeat(2050);
            let mut props = object(
                json!({"$elements": [{"tag_name": "a", "$el_text": text, "attr__href": href}]}),
            );
            let chain = take_elements_chain(&mut props);
            assert!(
                chain.contains(&format!("text=\"{}\"", "t".repeat(400))),
                "{chain}"
            );
            assert!(!chain.contains(&"t".repeat(401)));
            // The `href` is cut; the `attr__href` attribute is copied as sent, as in PostHog.
            assert!(chain.contains(&format!("\"href=\"{}\"", "h".repeat(2048))));
            assert!(chain.contains(&format!("attr__href=\"{href}\"")));
            // A chain sent as it is stays as it is.
            let mut props = object(json!({"$elements_chain": format!("a:text=\"{text}\"")}));
            assert!(take_elements_chain(&mut props).contains(&text));
        }

        #[test]
        fn an_invalid_timestamp_becomes_the_receipt_time_with_a_warning() {
            let mut warnings = Vec::new();
            let c = context("e");
            let t = event_timestamp(&c, "2026-01-01T00:00:05Z", &mut warnings);
            assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:05+00:00");
            assert!(warnings.is_empty());
            assert_eq!(event_timestamp(&c, "yesterday", &mut warnings), c.at);
            assert_eq!(
                warnings[0].details.to_string(),
                r#"{"eventUuid":"00000000-0000-0000-0000-000000000009","field":"timestamp","value":"yesterday"}"#
            );
        }
    }
}
