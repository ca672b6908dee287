//! Request and response types of the admin API and helpers to build responses.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;

/// A request as the admin server receives it.
pub type AdminRequest = http::Request<hyper::body::Incoming>;
/// Admin responses are small and built whole.
pub type AdminResponse = http::Response<Full<Bytes>>;

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A response with `body` and its content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> AdminResponse {
    let mut resp = http::Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Pretty JSON with a trailing newline (the API is read by people with curl as often as by tools).
pub fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    // Serializing a `Value` to a string cannot fail: its map keys are always strings.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    with_body(status, JSON, text)
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}
