//! Admin API handlers for `/xdp/bans` (the admin server routes here):
//! `GET` lists bans, `POST {"addr": "198.18.0.7", "ttl": "10m"}` adds one (ttl optional),
//! `DELETE /xdp/bans?addr=198.18.0.7` (or `/xdp/bans/198.18.0.7`) lifts one.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use super::Xdp;
use crate::body::{full, ProxyBody};
use crate::config::units::Dur;

/// Largest request body accepted.
const MAX_BODY: usize = 4096;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBan {
    addr: IpAddr,
    #[serde(default)]
    ttl: Option<Dur>,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ProxyBody> {
    let mut body = value.to_string();
    body.push('\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<ProxyBody> {
    json(status, serde_json::json!({ "error": msg.to_string() }))
}

/// Handle a request whose path starts with `/xdp/bans`. `xdp` is None when the fast path is
/// not running (503 with the reason).
pub async fn handle_admin<B>(xdp: Option<&Arc<Xdp>>, req: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    let path = req.uri().path().trim_end_matches('/').to_string();
    let Some(rest) = path.strip_prefix("/xdp/bans") else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let Some(xdp) = xdp else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the XDP fast path is not running (see the startup warning)",
        );
    };
    match *req.method() {
        Method::GET if rest.is_empty() => {
            let bans = xdp.bans();
            json(StatusCode::OK, serde_json::json!({ "bans": bans }))
        }
        Method::POST if rest.is_empty() => {
            let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            let add: AddBan = match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("{e}; send {{\"addr\": \"198.18.0.7\", \"ttl\": \"10m\"}}"),
                    )
                }
            };
            match xdp.add_ban(add.addr, add.ttl.map(Dur::get)) {
                Ok(ttl) => json(
                    StatusCode::OK,
                    serde_json::json!({ "banned": add.addr, "ttl_secs": ttl.as_secs() }),
                ),
                // A full table is the caller's signal to back off, not a server fault.
                Err(e @ super::XdpError::BansFull(_)) => error(StatusCode::INSUFFICIENT_STORAGE, e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        Method::DELETE => {
            let from_path = rest.strip_prefix('/').filter(|s| !s.is_empty());
            let from_query = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("addr="))
                    .map(str::to_string)
            });
            let Some(text) = from_path.map(str::to_string).or(from_query) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give the address: /xdp/bans?addr=IP",
                );
            };
            let Ok(addr) = text.parse::<IpAddr>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`{text}` is not an IP address"),
                );
            };
            if xdp.remove_ban(addr) {
                json(StatusCode::OK, serde_json::json!({ "removed": addr }))
            } else {
                error(StatusCode::NOT_FOUND, format!("{addr} is not banned"))
            }
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE"),
    }
}
