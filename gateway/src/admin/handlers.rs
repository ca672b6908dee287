//! The built-in admin endpoints. Each is `async fn(Arc<AdminState>, AdminRequest) -> AdminResponse`
//! so that it plugs into [`Router::route`](super::Router::route) as is.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::response::{self, AdminRequest, AdminResponse};
use super::AdminState;
use crate::telemetry::metrics::CONTENT_TYPE as PROMETHEUS;

/// `GET /healthz`: the process is alive and its admin runtime answers.
pub async fn healthz(_: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    response::with_body(StatusCode::OK, response::TEXT, "ok")
}

/// `GET /ready`: 200 once the first snapshot serves traffic, 503 before that and while draining,
/// so a load balancer stops sending new connections before shutdown.
pub async fn ready(state: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    let ready = state.ready.load(Ordering::Acquire);
    let draining = state.draining.load(Ordering::Acquire);
    match (ready, draining) {
        (true, false) => response::with_body(StatusCode::OK, response::TEXT, "ready"),
        (_, true) => {
            response::with_body(StatusCode::SERVICE_UNAVAILABLE, response::TEXT, "draining")
        }
        (false, false) => {
            response::with_body(StatusCode::SERVICE_UNAVAILABLE, response::TEXT, "not ready")
        }
    }
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(state: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    let body = state.services.metrics.render();
    response::with_body(StatusCode::OK, PROMETHEUS, body)
}

/// `GET /config`: the live configuration as JSON.
pub async fn config(state: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    response::json(StatusCode::OK, &(state.config_json)())
}

/// `GET /plugins`: loaded plugins, their versions and state.
pub async fn plugins(state: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    response::json(StatusCode::OK, &(state.plugins_json)())
}

/// `POST /reload`: re-reads the configuration. 200 with the new version; 500 with the reason
/// when it is rejected (the old configuration stays live); 409 while another reload through this
/// API runs; 501 when the gateway was started without a reload hook.
pub async fn reload(state: Arc<AdminState>, _: AdminRequest) -> AdminResponse {
    if state.reload.is_none() {
        return response::error(StatusCode::NOT_IMPLEMENTED, "reload is not available");
    }
    if state.reloading.swap(true, Ordering::AcqRel) {
        return response::error(StatusCode::CONFLICT, "a reload is already in progress");
    }
    // Building a snapshot parses files and compiles plugins: keep it off the admin runtime.
    let worker = state.clone();
    let outcome = tokio::task::spawn_blocking(move || match &worker.reload {
        Some(reload) => reload(),
        None => Err("reload is not available".to_string()),
    })
    .await;
    state.reloading.store(false, Ordering::Release);
    match outcome {
        Ok(Ok(version)) => response::json(StatusCode::OK, &json!({ "version": version })),
        Ok(Err(reason)) => response::error(StatusCode::INTERNAL_SERVER_ERROR, &reason),
        Err(join) => response::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reload failed: {join}"),
        ),
    }
}
