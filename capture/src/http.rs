//! The HTTP surface: capture routes, health, metrics, CORS.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tower_http::cors::CorsLayer;

use crate::error::CaptureError;
use crate::handler::{Endpoint, capture};
use crate::state::AppState;

/// Builds the capture application around `state`.
///
/// Every capture route answers GET and POST with and without a trailing slash. CORS is fully
/// permissive like PostHog's: origin, headers and methods are mirrored and credentials allowed.
/// OPTIONS on any path answers 200 `{"status":"Ok"}` with the CORS headers.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/", get(index))
        .route("/_liveness", get(liveness))
        .route("/_readiness", get(readiness));
    if !state.shared.private_metrics {
        app = app.route("/metrics", get(metrics_text));
    }
    app = app
        .route("/s", any(recordings))
        .route("/s/", any(recordings));
    for endpoint in Endpoint::ALL {
        let handler =
            move |State(state): State<AppState>, req: Request| capture(state, endpoint, req);
        let path = endpoint.path();
        // Every method reaches the handler, which refuses all but GET and POST with a JSON 405.
        app = app
            .route(path, any(handler))
            .route(&format!("{path}/"), any(handler));
    }
    app.fallback(not_found)
        .layer(CorsLayer::very_permissive())
        // Outside CORS, which answers OPTIONS itself with an empty body.
        .layer(middleware::from_fn(options_ok))
        .with_state(state)
}

async fn options_ok(req: Request, next: Next) -> Response {
    let is_options = req.method() == Method::OPTIONS;
    let response = next.run(req).await;
    if !is_options || !response.status().is_success() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(r#"{"status":"Ok"}"#))
}

/// The private listener of `[capture] metrics_address`: metrics and health, nothing else.
pub fn private_router(state: AppState) -> Router {
    Router::new()
        .route("/_liveness", get(liveness))
        .route("/_readiness", get(readiness))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(state)
}

async fn index() -> &'static str {
    "capture"
}

async fn liveness() -> &'static str {
    "ok"
}

async fn readiness(State(state): State<AppState>) -> Response {
    if state.producer().is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "kafka unavailable").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    crate::metrics::render(state.metrics.as_ref())
}

async fn recordings() -> Response {
    CaptureError::RecordingsNotSupported.into_response()
}

async fn not_found() -> Response {
    CaptureError::NotFound.into_response()
}

#[cfg(test)]
mod tests;
