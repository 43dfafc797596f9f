//! One validated client event turned into the Kafka message PostHog's capture would write.

use chrono::{DateTime, Utc};
use hogstream_event::time::rfc3339;
use hogstream_event::{CapturedEvent, CapturedHeaders, RawEvent, headers};
use serde_json::Value;
use uuid::Uuid;

use crate::distinct_id::resolve_distinct_id;
use crate::error::CaptureError;
use crate::timestamp::compute_timestamp;

/// What every event of one request shares.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The validated token of the request.
    pub token: String,
    /// The client address (first `X-Forwarded-For` entry, else the peer).
    pub ip: String,
    pub now: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub historical_migration: bool,
}

/// A captured event ready to route: the message value plus the headers that always go with it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage {
    pub event: CapturedEvent,
    pub headers: CapturedHeaders,
}

impl EventMessage {
    /// `token:distinct_id`, or `token:ip` in cookieless mode.
    pub fn partition_key(&self) -> String {
        self.event.partition_key()
    }
}

/// Validates one event and builds its message. Errors fail the whole request.
pub fn process_event(raw: RawEvent, ctx: &RequestContext) -> Result<EventMessage, CaptureError> {
    if raw.event.is_empty() {
        return Err(CaptureError::MissingEventName);
    }
    let distinct_id = resolve_distinct_id(&raw)?;
    let is_cookieless_mode = match raw.properties.get("$cookieless_mode") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(CaptureError::InvalidCookielessMode),
    };
    // Events that PostHog's own services send on behalf of a client must not be geolocated to
    // the service's address.
    let ip = if raw.properties.contains_key("capture_internal") {
        "127.0.0.1".to_owned()
    } else {
        ctx.ip.clone()
    };
    let ignore_sent_at = matches!(
        raw.properties.get("$ignore_sent_at"),
        Some(Value::Bool(true))
    );
    let timestamp = compute_timestamp(
        raw.timestamp.as_deref(),
        raw.offset,
        ctx.sent_at,
        ignore_sent_at,
        ctx.now,
    );
    let uuid = raw.uuid.unwrap_or_else(Uuid::now_v7);
    let session_id = raw
        .properties
        .get("$session_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let data = serde_json::to_string(&raw)
        .map_err(|e| CaptureError::Internal(format!("could not re-serialize an event: {e}")))?;
    let now = rfc3339(ctx.now);

    let mut hdrs = CapturedHeaders::default();
    hdrs.set(headers::TOKEN, ctx.token.as_str())
        .set(headers::DISTINCT_ID, distinct_id.as_str())
        .set(headers::TIMESTAMP, timestamp.timestamp_millis().to_string())
        .set(headers::EVENT, raw.event.as_str())
        .set(headers::UUID, uuid.to_string())
        .set(headers::NOW, now.as_str());
    if let Some(session_id) = session_id {
        hdrs.set(headers::SESSION_ID, session_id);
    }
    if ctx.historical_migration {
        hdrs.set(headers::HISTORICAL_MIGRATION, "true");
    }

    let event = CapturedEvent {
        uuid,
        distinct_id,
        ip,
        data,
        now,
        sent_at: ctx.sent_at.map(rfc3339),
        token: ctx.token.clone(),
        event: raw.event,
        timestamp: rfc3339(timestamp),
        is_cookieless_mode,
        historical_migration: ctx.historical_migration,
    };
    Ok(EventMessage {
        event,
        headers: hdrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> RequestContext {
        RequestContext {
            token: "phc_t".into(),
            ip: "10.1.2.3".into(),
            now: DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
                .unwrap()
                .to_utc(),
            sent_at: None,
            historical_migration: false,
        }
    }

    fn raw(v: Value) -> RawEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn builds_message_and_headers() {
        let id = "0190f4a6-0000-7000-8000-000000000001";
        let e = raw(json!({
            "event": "$pageview", "distinct_id": 42, "uuid": id,
            "timestamp": "2026-03-01T11:00:00Z",
            "properties": {"$session_id": "s1", "x": 1}
        }));
        let p = process_event(e.clone(), &ctx()).unwrap();
        assert_eq!(p.event.uuid.to_string(), id);
        assert_eq!(p.event.distinct_id, "42");
        assert_eq!(p.event.ip, "10.1.2.3");
        assert_eq!(p.event.token, "phc_t");
        assert_eq!(p.event.event, "$pageview");
        assert_eq!(p.event.timestamp, "2026-03-01T11:00:00.000000Z");
        assert_eq!(p.event.now, "2026-03-01T12:00:00.000000Z");
        assert_eq!(p.event.sent_at, None);
        let data: RawEvent = serde_json::from_str(&p.event.data).unwrap();
        assert_eq!(data, e);
        assert_eq!(p.partition_key(), "phc_t:42");

        let h = &p.headers;
        assert_eq!(h.get("token"), Some("phc_t"));
        assert_eq!(h.get("distinct_id"), Some("42"));
        assert_eq!(h.get("session_id"), Some("s1"));
        assert_eq!(h.get("timestamp"), Some("1772362800000"));
        assert_eq!(h.get("event"), Some("$pageview"));
        assert_eq!(h.get("uuid"), Some(id));
        assert_eq!(h.get("now"), Some("2026-03-01T12:00:00.000000Z"));
        assert_eq!(h.get("historical_migration"), None);
    }

    #[test]
    fn generates_uuid_v7_and_omits_session_header() {
        let p = process_event(raw(json!({"event":"e","distinct_id":"d"})), &ctx()).unwrap();
        assert_eq!(p.event.uuid.get_version_num(), 7);
        assert_eq!(p.headers.get("session_id"), None);
        assert_eq!(p.event.timestamp, p.event.now);
    }

    #[test]
    fn sent_at_and_historical_flow_into_the_message() {
        let mut c = ctx();
        c.sent_at = Some(
            DateTime::parse_from_rfc3339("2026-03-01T11:00:00Z")
                .unwrap()
                .to_utc(),
        );
        c.historical_migration = true;
        let e = raw(json!({"event":"e","distinct_id":"d","timestamp":"2026-03-01T10:59:00Z"}));
        let p = process_event(e, &c).unwrap();
        assert_eq!(
            p.event.sent_at.as_deref(),
            Some("2026-03-01T11:00:00.000000Z")
        );
        assert_eq!(p.event.timestamp, "2026-03-01T11:59:00.000000Z");
        assert!(p.event.historical_migration);
        assert_eq!(p.headers.get("historical_migration"), Some("true"));

        let e = raw(
            json!({"event":"e","distinct_id":"d","timestamp":"2026-03-01T10:59:00Z",
                           "properties":{"$ignore_sent_at":true}}),
        );
        assert_eq!(
            process_event(e, &c).unwrap().event.timestamp,
            "2026-03-01T10:59:00.000000Z"
        );
    }

    #[test]
    fn empty_event_name_is_refused() {
        let err = process_event(raw(json!({"event":"","distinct_id":"d"})), &ctx()).unwrap_err();
        assert_eq!(err, CaptureError::MissingEventName);
    }

    #[test]
    fn missing_distinct_id_is_refused() {
        let err = process_event(raw(json!({"event":"e"})), &ctx()).unwrap_err();
        assert_eq!(err, CaptureError::MissingDistinctId);
    }

    #[test]
    fn cookieless_mode_must_be_boolean_and_keys_by_ip() {
        let e = raw(json!({"event":"e","distinct_id":"d","properties":{"$cookieless_mode":"yes"}}));
        assert_eq!(
            process_event(e, &ctx()).unwrap_err(),
            CaptureError::InvalidCookielessMode
        );
        let e = raw(json!({"event":"e","distinct_id":"d","properties":{"$cookieless_mode":true}}));
        let p = process_event(e, &ctx()).unwrap();
        assert!(p.event.is_cookieless_mode);
        assert_eq!(p.partition_key(), "phc_t:10.1.2.3");
        let e = raw(json!({"event":"e","distinct_id":"d","properties":{"$cookieless_mode":false}}));
        assert!(!process_event(e, &ctx()).unwrap().event.is_cookieless_mode);
    }

    #[test]
    fn capture_internal_replaces_the_ip() {
        let e = raw(json!({"event":"e","distinct_id":"d","properties":{"capture_internal":true}}));
        assert_eq!(process_event(e, &ctx()).unwrap().event.ip, "127.0.0.1");
    }

    #[test]
    fn offset_overrides_the_timestamp() {
        let e = raw(
            json!({"event":"e","distinct_id":"d","timestamp":"2020-01-01T00:00:00Z","offset":60000}),
        );
        let p = process_event(e, &ctx()).unwrap();
        assert_eq!(p.event.timestamp, "2026-03-01T11:59:00.000000Z");
        assert_eq!(p.headers.get("timestamp"), Some("1772366340000"));
    }
}
