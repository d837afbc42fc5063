//! `GET /healthz` and `GET /readyz`, always on: tiny JSON bodies for load balancers and
//! orchestrators. They read nothing but the shutdown token.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `200 {"status":"ok"}` while the process serves HTTP at all.
pub(crate) async fn healthz() -> Response {
    no_store(StatusCode::OK, "ok")
}

/// `200 {"status":"ready"}` once every listener is bound (the player port serves only after
/// the streamer, player and SFU ports are all bound); `503 {"status":"shutting down"}` once
/// shutdown has begun, so a load balancer stops sending new players.
pub(super) async fn readyz(shutdown: CancellationToken) -> Response {
    if shutdown.is_cancelled() {
        no_store(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        no_store(StatusCode::OK, "ready")
    }
}

fn no_store(status: StatusCode, text: &str) -> Response {
    let mut response = (status, Json(json!({ "status": text }))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
