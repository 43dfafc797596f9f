//! In-process tests of the whole HTTP surface, with an in-memory producer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::config::CaptureConfig;
use crate::payload::decompress::gzip;
use crate::producer::{MemoryProducer, ProduceError, ProduceRecord};
use crate::state::AppState;

const TOKEN: &str = "phc_router_test";

fn app_with(config: CaptureConfig) -> (Router, Arc<MemoryProducer>) {
    let producer = Arc::new(MemoryProducer::new());
    let state = AppState::new(&config, producer.clone()).unwrap();
    (router(state), producer)
}

fn app() -> (Router, Arc<MemoryProducer>) {
    app_with(CaptureConfig::default())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn assert_ok(&self) {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json(), json!({"status": "Ok"}));
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(body["status"], status);
        assert_eq!(body["code"], code);
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
}

async fn call(app: &Router, req: Request<Body>) -> Answer {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn post_json(uri: &str, value: Value) -> Request<Body> {
    post(uri, serde_json::to_vec(&value).unwrap())
}

fn event(name: &str, distinct_id: &str) -> Value {
    json!({"event": name, "distinct_id": distinct_id, "token": TOKEN, "properties": {}})
}

fn payload(record: &ProduceRecord) -> Value {
    serde_json::from_str(&record.payload).unwrap()
}

const ROUTES: [&str; 6] = ["/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch"];

#[tokio::test]
async fn every_route_accepts_post_and_get_with_and_without_slash() {
    let (app, producer) = app();
    let mut expected = 0;
    for route in ROUTES {
        for path in [route.to_string(), format!("{route}/")] {
            call(&app, post_json(&path, event("posted", "d")))
                .await
                .assert_ok();
            let data = STANDARD.encode(serde_json::to_vec(&event("got", "d")).unwrap());
            let uri = format!("{path}?data={}", urlencode(&data));
            let req = Request::get(uri).body(Body::empty()).unwrap();
            call(&app, req).await.assert_ok();
            expected += 2;
        }
    }
    let records = producer.records();
    assert_eq!(records.len(), expected);
    assert!(records.iter().all(|r| r.topic == "events_plugin_ingestion"));
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn options_answers_ok_with_cors_headers() {
    let (app, _) = app();
    for route in ROUTES {
        for path in [route.to_string(), format!("{route}/")] {
            let req = Request::builder()
                .method(Method::OPTIONS)
                .uri(&path)
                .header(header::ORIGIN, "https://app.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "content-type,x-custom",
                )
                .body(Body::empty())
                .unwrap();
            let answer = call(&app, req).await;
            answer.assert_ok();
            let h = &answer.headers;
            assert_eq!(
                h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
                "https://app.example"
            );
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
            assert_eq!(
                h[header::ACCESS_CONTROL_ALLOW_HEADERS],
                "content-type,x-custom"
            );
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        }
    }
    // A bare OPTIONS without CORS headers gets the same body.
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("/e/")
        .body(Body::empty())
        .unwrap();
    call(&app, req).await.assert_ok();
}

#[tokio::test]
async fn cors_mirrors_origin_on_posts() {
    let (app, _) = app();
    let mut req = post_json("/e/", event("e", "d"));
    req.headers_mut()
        .insert(header::ORIGIN, "https://site.example".parse().unwrap());
    let answer = call(&app, req).await;
    answer.assert_ok();
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://site.example"
    );
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
        "true"
    );
}

#[tokio::test]
async fn health_endpoints() {
    let (app, producer) = app();
    for (path, body) in [
        ("/", "capture"),
        ("/_liveness", "ok"),
        ("/_readiness", "ok"),
    ] {
        let answer = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body, body.as_bytes(), "{path}");
    }
    producer.set_ready(false);
    let answer = call(
        &app,
        Request::get("/_readiness").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let answer = call(
        &app,
        Request::get("/_liveness").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "liveness does not depend on Kafka"
    );
}

#[tokio::test]
async fn metrics_endpoint_renders_prometheus_text() {
    let handle = crate::metrics::install_prometheus().expect("no other recorder in unit tests");
    let producer = Arc::new(MemoryProducer::new());
    let state = AppState::new(&CaptureConfig::default(), producer)
        .unwrap()
        .with_metrics(Some(handle));
    let app = router(state.clone());
    call(&app, post_json("/i/v0/e", event("e", "metrics-user")))
        .await
        .assert_ok();
    state.housekeeping();
    let answer = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8(answer.body).unwrap();
    assert!(text.contains("capture_requests_total{"), "{text}");
    assert!(text.contains(r#"route="/i/v0/e""#), "{text}");
    assert!(text.contains("capture_events_total{"), "{text}");
    assert!(
        text.contains("capture_request_duration_seconds_bucket"),
        "{text}"
    );

    let (plain, _) = app_with(CaptureConfig::default());
    let answer = call(
        &plain,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_private_metrics_address_takes_metrics_off_the_public_port() {
    let config = CaptureConfig {
        metrics_address: Some("127.0.0.1:0".parse().unwrap()),
        ..CaptureConfig::default()
    };
    let state = AppState::new(&config, Arc::new(MemoryProducer::new())).unwrap();
    let public = router(state.clone());
    let private = super::private_router(state);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    call(&public, get("/metrics"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        call(&public, get("/_liveness")).await.status,
        StatusCode::OK
    );
    // Routed on the private port (503 only because this test installs no recorder).
    assert_eq!(
        call(&private, get("/metrics")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(&private, get("/_liveness")).await.status,
        StatusCode::OK
    );
    call(&private, post_json("/i/v0/e", event("e", "private")))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn recordings_and_unknown_paths_get_json_errors() {
    let (app, _) = app();
    for path in ["/s", "/s/"] {
        call(&app, post_json(path, json!({})))
            .await
            .assert_error(501, "recordings_not_supported");
    }
    call(&app, post_json("/nope", json!({})))
        .await
        .assert_error(404, "not_found");
    // Feature flags are PostHog's flags service: an SDK asking capture gets a clear JSON 404.
    for path in ["/decide/?v=3", "/flags/?v=2"] {
        call(
            &app,
            post_json(path, json!({"token": "phc_x", "distinct_id": "d"})),
        )
        .await
        .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn posthog_js_gzip_request_is_stored_with_headers_and_key() {
    let (app, producer) = app();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // The client clock runs 1 h behind the server; its event happened 10 s before sending.
    let client_sent_ms = now_ms - 3_600_000;
    let client_ts = chrono::DateTime::from_timestamp_millis(client_sent_ms - 10_000).unwrap();
    let uuid = "01900000-0000-7000-8000-0000000000aa";
    let events = json!([{
        "event": "$pageview", "uuid": uuid, "timestamp": client_ts.to_rfc3339(),
        "properties": {"distinct_id": "js-user", "token": TOKEN, "$session_id": "sess-1"}
    }]);
    let body = gzip(&serde_json::to_vec(&events).unwrap());
    let mut req = post(
        &format!("/e/?compression=gzip-js&ip=1&_={client_sent_ms}&ver=1.200.0"),
        body,
    );
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
    call(&app, req).await.assert_ok();

    let records = producer.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.topic, "events_plugin_ingestion");
    assert_eq!(r.key.as_deref(), Some("phc_router_test:js-user"));
    let v = payload(r);
    assert_eq!(v["uuid"], uuid);
    assert_eq!(v["distinct_id"], "js-user");
    assert_eq!(v["ip"], "203.0.113.9");
    assert_eq!(v["token"], TOKEN);
    assert_eq!(v["event"], "$pageview");
    let data: Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["properties"]["$session_id"], "sess-1");
    // Skew-corrected: about 10 s before the server's now, not 1 h.
    let stored = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
    let server_now = chrono::DateTime::parse_from_rfc3339(v["now"].as_str().unwrap()).unwrap();
    let behind = (server_now - stored).num_milliseconds();
    assert!(
        (9_000..=11_000).contains(&behind),
        "event is {behind} ms behind now"
    );

    assert_eq!(r.headers.get("token"), Some(TOKEN));
    assert_eq!(r.headers.get("distinct_id"), Some("js-user"));
    assert_eq!(r.headers.get("session_id"), Some("sess-1"));
    assert_eq!(r.headers.get("event"), Some("$pageview"));
    assert_eq!(r.headers.get("uuid"), Some(uuid));
    assert_eq!(
        r.headers.get("timestamp"),
        Some(stored.timestamp_millis().to_string().as_str())
    );
    assert_eq!(r.headers.get("now"), v["now"].as_str());
}

#[tokio::test]
async fn lz64_form_request_from_old_posthog_js() {
    let (app, producer) = app();
    let events = serde_json::to_string(&json!([event("lz", "lz-user")])).unwrap();
    let packed = lz_str::compress_to_base64(events.as_str());
    let body = format!("data={}&compression=lz64", urlencode(&packed));
    let req = Request::post("/e/")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    call(&app, req).await.assert_ok();
    assert_eq!(payload(&producer.records()[0])["event"], "lz");
}

#[tokio::test]
async fn batch_with_api_key_and_historical_migration() {
    let (app, producer) = app();
    let body = json!({
        "api_key": TOKEN, "historical_migration": true, "sent_at": "2026-01-01T00:00:00Z",
        "batch": [{"event": "imported", "distinct_id": "h1"}, {"event": "imported", "distinct_id": "h2"}]
    });
    call(&app, post_json("/batch/", body)).await.assert_ok();
    let records = producer.records();
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.topic, "events_plugin_ingestion_historical");
        assert!(r.key.is_some());
        assert_eq!(r.headers.get("historical_migration"), Some("true"));
        let v = payload(r);
        assert_eq!(v["historical_migration"], true);
        assert_eq!(v["sent_at"], "2026-01-01T00:00:00.000000Z");
    }
}

#[tokio::test]
async fn engage_object_is_identify_on_engage_and_400_elsewhere() {
    let (app, producer) = app();
    let body = json!({"$set": {"plan": "pro"}, "distinct_id": "e1", "token": TOKEN});
    call(&app, post_json("/engage/", body.clone()))
        .await
        .assert_ok();
    assert_eq!(payload(&producer.records()[0])["event"], "$identify");
    call(&app, post_json("/e/", body))
        .await
        .assert_error(400, "request_hydration_error");
    assert_eq!(producer.records().len(), 1);
}

#[tokio::test]
async fn validation_errors_map_to_status_codes() {
    let (app, producer) = app();
    let cases = [
        (json!([]), 400, "empty_batch"),
        (json!({"api_key": TOKEN, "batch": []}), 400, "empty_batch"),
        (json!([{"event": "e", "distinct_id": "d"}]), 401, "no_token"),
        (
            json!([{"event": "e", "distinct_id": "d", "token": "phx_personal"}]),
            403,
            "invalid_token",
        ),
        (
            json!([{"event": "e", "distinct_id": "d", "token": "x".repeat(65)}]),
            403,
            "invalid_token",
        ),
        (
            json!([{"event": "e", "distinct_id": "d", "token": "phc_a"},
                   {"event": "e", "distinct_id": "d", "token": "phc_b"}]),
            400,
            "multiple_tokens",
        ),
        (
            json!([{"event": "e", "token": TOKEN}]),
            400,
            "missing_distinct_id",
        ),
        (
            json!([{"event": "e", "distinct_id": "  ", "token": TOKEN}]),
            400,
            "missing_distinct_id",
        ),
        (
            json!([{"event": "", "distinct_id": "d", "token": TOKEN}]),
            400,
            "missing_event_name",
        ),
        (
            json!([{"event": "e", "distinct_id": "d", "token": TOKEN, "properties": {"$cookieless_mode": 1}}]),
            400,
            "invalid_cookieless_mode",
        ),
        (
            json!([{"event": "e", "distinct_id": "d", "token": TOKEN, "uuid": "nope"}]),
            400,
            "request_parsing_error",
        ),
        (json!("just a string"), 400, "request_parsing_error"),
    ];
    for (body, status, code) in cases {
        call(&app, post_json("/i/v0/e/", body))
            .await
            .assert_error(status, code);
    }
    call(&app, post("/e/", Body::empty()))
        .await
        .assert_error(400, "empty_payload");
    call(&app, post("/e/", &b"{\"event\":\xff}"[..]))
        .await
        .assert_error(400, "request_decoding_error");
    assert!(
        producer.records().is_empty(),
        "nothing from a refused request is stored"
    );
}

#[tokio::test]
async fn one_bad_event_fails_only_its_own_request() {
    let (app, producer) = app();
    let bad = json!([event("good", "d"), {"event": "bad", "token": TOKEN}]);
    call(&app, post_json("/e/", bad))
        .await
        .assert_error(400, "missing_distinct_id");
    assert!(producer.records().is_empty());
    call(&app, post_json("/e/", json!([event("next", "d")])))
        .await
        .assert_ok();
    assert_eq!(producer.records().len(), 1);
}

#[tokio::test]
async fn performance_events_are_filtered() {
    let (app, producer) = app();
    let only_perf = json!([{"event": "$performance_event", "distinct_id": "d", "token": TOKEN}]);
    call(&app, post_json("/e/", only_perf)).await.assert_ok();
    assert!(producer.records().is_empty());
    let mixed = json!([{"event": "$performance_event", "distinct_id": "d", "token": TOKEN}, event("kept", "d")]);
    call(&app, post_json("/e/", mixed)).await.assert_ok();
    let records = producer.records();
    assert_eq!(records.len(), 1);
    assert_eq!(payload(&records[0])["event"], "kept");
}

#[tokio::test]
async fn beacon_answers_204() {
    let (app, producer) = app();
    let answer = call(&app, post_json("/e/?beacon=1", event("b", "d"))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    assert_eq!(producer.records().len(), 1);
    // Errors are still errors.
    call(&app, post_json("/e/?beacon=1", json!([])))
        .await
        .assert_error(400, "empty_batch");
}

#[tokio::test]
async fn failing_producer_gives_503_and_never_200() {
    let (app, producer) = app();
    producer.fail_with(Some(ProduceError::Retryable("broker down".into())));
    let answer = call(
        &app,
        post_json("/e/", json!([event("a", "d"), event("b", "d")])),
    )
    .await;
    answer.assert_error(503, "service_unavailable");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("broker down")
    );

    producer.fail_with(Some(ProduceError::MessageTooLarge("too large".into())));
    call(&app, post_json("/e/", event("a", "d")))
        .await
        .assert_error(413, "event_too_big");

    producer.fail_with(None);
    call(&app, post_json("/e/", event("a", "d")))
        .await
        .assert_ok();
}

#[tokio::test]
async fn an_unreachable_broker_gives_503_at_once_and_stores_nothing() {
    let (app, producer) = app();
    producer.set_ready(false);
    let answer = call(
        &app,
        post_json("/e/", json!([event("a", "d"), event("b", "d")])),
    )
    .await;
    answer.assert_error(503, "service_unavailable");
    assert!(
        producer.records().is_empty(),
        "nothing reached the producer"
    );
    // A request that stores nothing (bad input) is still told what is wrong with it.
    call(&app, post_json("/e/", json!([])))
        .await
        .assert_error(400, "empty_batch");
    producer.set_ready(true);
    call(&app, post_json("/e/", event("a", "d")))
        .await
        .assert_ok();
    assert_eq!(producer.records().len(), 1);
}

#[tokio::test]
async fn body_limits_differ_for_batch_and_are_enforced() {
    let mut config = CaptureConfig::default();
    config.limits.max_body_bytes = 1000;
    config.limits.max_batch_body_bytes = 4000;
    let (app, producer) = app_with(config);
    let padding = "p".repeat(1500);
    let big = json!([{"event": "big", "distinct_id": "d", "token": TOKEN, "properties": {"pad": padding}}]);
    call(&app, post_json("/e/", big.clone()))
        .await
        .assert_error(413, "event_too_big");
    call(&app, post_json("/batch/", big)).await.assert_ok();
    assert_eq!(producer.records().len(), 1);

    // A body streamed without Content-Length is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 500])).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    call(&app, post("/e/", body))
        .await
        .assert_error(413, "event_too_big");
}

#[tokio::test]
async fn decompressed_size_is_capped() {
    let mut config = CaptureConfig::default();
    config.limits.max_decompressed_bytes = 64 * 1024;
    let (app, producer) = app_with(config);
    let bomb = gzip(&vec![b' '; 1 << 20]);
    call(&app, post("/e/", bomb))
        .await
        .assert_error(413, "event_too_big");
    assert!(producer.records().is_empty());
}

#[tokio::test]
async fn event_above_kafka_message_limit_is_413_and_nothing_is_produced() {
    let mut config = CaptureConfig::default();
    config.kafka.message_max_bytes = 2000;
    let (app, producer) = app_with(config);
    let big = json!({"event": "big", "distinct_id": "d", "token": TOKEN, "properties": {"pad": "p".repeat(3000)}});
    call(&app, post_json("/e/", json!([event("small", "d"), big])))
        .await
        .assert_error(413, "event_too_big");
    assert!(producer.records().is_empty());
}

#[tokio::test]
async fn slow_body_times_out_with_408() {
    let mut config = CaptureConfig::default();
    config.limits.body_read_timeout_ms = 50;
    let (app, _) = app_with(config);
    let first: Result<Vec<u8>, std::io::Error> = Ok(b"[".to_vec());
    let stalled = futures_util::StreamExt::chain(
        futures_util::stream::iter([first]),
        futures_util::stream::pending(),
    );
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        call(&app, post("/e/", Body::from_stream(stalled))),
    )
    .await
    .expect("the server must give up on its own");
    answer.assert_error(408, "request_timeout");
}

#[tokio::test]
async fn ip_from_peer_and_capture_internal() {
    let (app, producer) = app();
    let mut req = post_json("/e/", event("peer", "d"));
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 9, 8, 7], 5555))));
    call(&app, req).await.assert_ok();
    let internal = json!({"event": "i", "distinct_id": "d", "token": TOKEN, "properties": {"capture_internal": true}});
    let mut req = post_json("/e/", internal);
    req.headers_mut()
        .insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
    call(&app, req).await.assert_ok();
    let records = producer.records();
    assert_eq!(payload(&records[0])["ip"], "10.9.8.7");
    assert_eq!(payload(&records[1])["ip"], "127.0.0.1");
}

#[tokio::test]
async fn cookieless_events_are_keyed_by_ip() {
    let (app, producer) = app();
    let body = json!({"event": "c", "distinct_id": "$posthog_cookieless", "token": TOKEN,
                      "properties": {"$cookieless_mode": true}});
    let mut req = post_json("/e/", body);
    req.headers_mut()
        .insert("x-forwarded-for", "192.0.2.5".parse().unwrap());
    call(&app, req).await.assert_ok();
    let r = &producer.records()[0];
    assert_eq!(r.key.as_deref(), Some("phc_router_test:192.0.2.5"));
    assert_eq!(payload(r)["is_cookieless_mode"], true);
}

#[tokio::test]
async fn drop_list_is_silent() {
    let config = CaptureConfig {
        drop_events: vec![format!("{TOKEN}:dropped")],
        ..CaptureConfig::default()
    };
    let (app, producer) = app_with(config);
    call(
        &app,
        post_json("/e/", json!([event("x", "dropped"), event("y", "kept")])),
    )
    .await
    .assert_ok();
    let records = producer.records();
    assert_eq!(records.len(), 1);
    assert_eq!(payload(&records[0])["distinct_id"], "kept");
}

#[tokio::test]
async fn force_overflow_goes_unkeyed_and_dlq_list_carries_reason() {
    let mut config = CaptureConfig::default();
    config.overflow.force_overflow = vec![format!("{TOKEN}:hot")];
    config.dlq_events = vec![format!("{TOKEN}:quarantined")];
    config.topics.overflow = "custom_overflow".into();
    let (app, producer) = app_with(config);
    let body = json!([
        event("a", "hot"),
        event("b", "quarantined"),
        event("c", "normal")
    ]);
    call(&app, post_json("/e/", body)).await.assert_ok();
    let records = producer.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].topic, "custom_overflow");
    assert_eq!(records[0].key, None);
    assert_eq!(records[1].topic, "events_plugin_ingestion_dlq");
    assert_eq!(records[1].headers.get("dlq_reason"), Some("dlq_list"));
    assert_eq!(records[1].headers.get("dlq_step"), Some("capture"));
    assert!(records[1].headers.get("dlq_timestamp").is_some());
    assert_eq!(records[2].topic, "events_plugin_ingestion");
}

#[tokio::test]
async fn limiter_overflows_hot_keys_keeping_their_key() {
    let mut config = CaptureConfig::default();
    config.overflow.per_second = 1;
    config.overflow.burst = 3;
    let (app, producer) = app_with(config);
    let body: Vec<Value> = (0..5).map(|_| event("burst", "busy")).collect();
    call(&app, post_json("/e/", Value::Array(body)))
        .await
        .assert_ok();
    call(&app, post_json("/e/", event("calm", "quiet")))
        .await
        .assert_ok();
    let topics: Vec<_> = producer.records().iter().map(|r| r.topic.clone()).collect();
    assert_eq!(
        topics,
        [
            "events_plugin_ingestion",
            "events_plugin_ingestion",
            "events_plugin_ingestion",
            "events_plugin_ingestion_overflow",
            "events_plugin_ingestion_overflow",
            "events_plugin_ingestion",
        ]
    );
    let records = producer.records();
    assert_eq!(records[4].key.as_deref(), Some("phc_router_test:busy"));
}

#[tokio::test]
async fn disable_person_processing_sets_header() {
    let config = CaptureConfig {
        disable_person_processing: vec![TOKEN.to_string()],
        ..CaptureConfig::default()
    };
    let (app, producer) = app_with(config);
    call(&app, post_json("/e/", event("p", "d")))
        .await
        .assert_ok();
    let r = &producer.records()[0];
    assert_eq!(
        r.headers.get("force_disable_person_processing"),
        Some("true")
    );
    assert_eq!(r.topic, "events_plugin_ingestion");
}

#[tokio::test]
async fn large_bodies_decode_on_the_blocking_pool() {
    let (app, producer) = app();
    let events: Vec<Value> = (0..4000)
        .map(|i| event("bulk", &format!("user-{i}")))
        .collect();
    let body = serde_json::to_vec(&json!({"api_key": TOKEN, "batch": events})).unwrap();
    assert!(body.len() > 256 * 1024);
    call(&app, post("/batch", body)).await.assert_ok();
    assert_eq!(producer.records().len(), 4000);
}

/// The inputs a hostile or broken client sends, each with its own clear 4xx (or a 503 it may
/// retry), and nothing stored.
#[tokio::test]
async fn hostile_inputs_get_clear_answers_and_store_nothing() {
    let (app, producer) = app();
    let one = serde_json::to_vec(&event("e", "d")).unwrap();

    let head = Request::builder()
        .method(Method::HEAD)
        .uri("/e/")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(one.clone()))
        .unwrap();
    let answer = call(&app, head).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/batch")
        .body(Body::from(one.clone()))
        .unwrap();
    call(&app, put)
        .await
        .assert_error(405, "method_not_allowed");

    for (body, words) in [
        ("null", "got null"),
        ("true", "the boolean true"),
        ("1234", "the number 1234"),
        ("\"text\"", "a JSON string"),
    ] {
        let answer = call(&app, post("/e/", body)).await;
        answer.assert_error(400, "request_parsing_error");
        let message = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(words), "{body}: {message}");
    }

    let deflated = {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&one).unwrap();
        e.finish().unwrap()
    };
    for encoding in ["deflate", "br", "zstd"] {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/e/")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, encoding)
            .body(Body::from(deflated.clone()))
            .unwrap();
        let answer = call(&app, req).await;
        answer.assert_error(415, "unsupported_encoding");
        assert!(
            answer.json()["error"].as_str().unwrap().contains(encoding),
            "{encoding}"
        );
    }

    let batch_object = json!({"api_key": TOKEN, "batch": event("e", "d")});
    let answer = call(&app, post_json("/batch", batch_object)).await;
    answer.assert_error(400, "request_parsing_error");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("`batch` must be an array"),
        "{:?}",
        answer.json()
    );
    assert!(producer.records().is_empty(), "nothing was stored");

    // The same event, sent plainly and with `Content-Encoding: identity`, is stored.
    let identity = Request::builder()
        .method(Method::POST)
        .uri("/e/")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "identity")
        .body(Body::from(one))
        .unwrap();
    call(&app, identity).await.assert_ok();
    assert_eq!(producer.records().len(), 1);
}

#[tokio::test]
async fn bodies_that_would_pass_the_shared_decoding_budget_get_503() {
    let producer = Arc::new(MemoryProducer::new());
    let mut config = CaptureConfig::default();
    config.limits.max_decompressed_bytes = 8 << 20;
    config.limits.max_decoding_bytes = 16 << 20;
    let state = AppState::new(&config, producer.clone()).unwrap();
    let app = router(state.clone());
    // Another request holds most of the budget right now.
    let mut held = state.shared.decode_budget.reserve();
    held.grow_to(15 << 20).unwrap();
    let big: Vec<Value> = (0..4000)
        .map(|i| event("e", &format!("user-{i}-{}", "x".repeat(500))))
        .collect();
    let packed = gzip(&serde_json::to_vec(&json!({"api_key": TOKEN, "batch": big})).unwrap());
    let request = || {
        Request::builder()
            .method(Method::POST)
            .uri("/batch")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(packed.clone()))
            .unwrap()
    };
    call(&app, request())
        .await
        .assert_error(503, "decoding_capacity");
    assert!(producer.records().is_empty());
    drop(held);
    call(&app, request()).await.assert_ok();
    assert_eq!(producer.records().len(), 4000);
    assert_eq!(
        state.shared.decode_budget.in_use(),
        0,
        "every reservation returned"
    );
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_get_503_and_health_still_answers() {
    let producer = Arc::new(MemoryProducer::new());
    let mut config = CaptureConfig::default();
    config.limits.max_concurrent_requests = 2;
    let state = AppState::new(&config, producer.clone()).unwrap();
    let app = router(state.clone());
    let busy = state
        .shared
        .requests
        .clone()
        .acquire_many_owned(2)
        .await
        .unwrap();
    call(&app, post_json("/e/", event("e", "d")))
        .await
        .assert_error(503, "overloaded");
    let live = call(
        &app,
        Request::get("/_liveness").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(live.status, StatusCode::OK, "health checks are not counted");
    drop(busy);
    call(&app, post_json("/e/", event("e", "d")))
        .await
        .assert_ok();
}
