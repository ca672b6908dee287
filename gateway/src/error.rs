//! The one table that maps why the gateway could not proxy a request to the status it answers.
//!
//! Every local error response goes through [`ProxyError::response`], so a given cause always gives
//! the same status, body and access-log `details`, and gRPC requests get gRPC-shaped errors.

use http::{HeaderValue, StatusCode};

use crate::filter::LocalResponse;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// Why a request was answered by the gateway instead of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    NoRoute,
    Upstream(UpstreamErrorKind),
    UnknownCluster,
    RequestBodyTooLarge,
    BadRequest,
    /// A plugin failed (trap, deadline) and its policy is fail_closed.
    PluginFailed,
}

impl From<&UpstreamError> for ProxyError {
    fn from(e: &UpstreamError) -> Self {
        ProxyError::Upstream(e.kind)
    }
}

/// (status, details, gRPC status code) for each cause: the whole mapping, in one place.
const fn table(e: ProxyError) -> (StatusCode, &'static str, u8) {
    use UpstreamErrorKind as K;
    match e {
        ProxyError::NoRoute => (StatusCode::NOT_FOUND, "route_not_found", 12),
        ProxyError::UnknownCluster => (StatusCode::SERVICE_UNAVAILABLE, "cluster_not_found", 14),
        ProxyError::RequestBodyTooLarge => {
            (StatusCode::PAYLOAD_TOO_LARGE, "request_body_too_large", 8)
        }
        ProxyError::BadRequest => (StatusCode::BAD_REQUEST, "bad_request", 3),
        ProxyError::PluginFailed => (StatusCode::SERVICE_UNAVAILABLE, "plugin_failed", 14),
        ProxyError::Upstream(k) => match k {
            K::NoHealthyEndpoint => (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_upstream", 14),
            K::ConnectRefused => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_connect_refused",
                14,
            ),
            K::ConnectFailed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_connect_failure",
                14,
            ),
            K::ConnectTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_connect_timeout", 4),
            K::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_response_timeout", 4),
            K::Reset => (StatusCode::BAD_GATEWAY, "upstream_reset", 14),
            K::BadResponse => (StatusCode::BAD_GATEWAY, "upstream_bad_response", 13),
        },
    }
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        table(self).0
    }

    pub fn details(self) -> &'static str {
        table(self).1
    }

    /// The local response for this cause. For gRPC requests: HTTP 200 with `grpc-status` and
    /// `grpc-message` (trailers-only form), as gRPC clients expect.
    pub fn response(self, grpc: bool) -> LocalResponse {
        let (status, details, grpc_status) = table(self);
        if grpc {
            return grpc_error(grpc_status, details);
        }
        let mut body = String::with_capacity(details.len() + 1);
        body.push_str(details);
        body.push('\n');
        LocalResponse::new(status, details)
            .with_body(body)
            .with_header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            )
    }
}

/// A trailers-only gRPC error response.
pub fn grpc_error(code: u8, details: &'static str) -> LocalResponse {
    LocalResponse::new(StatusCode::OK, details)
        .with_header(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        )
        .with_header(
            http::HeaderName::from_static("grpc-status"),
            HeaderValue::from(u16::from(code)),
        )
        .with_header(
            http::HeaderName::from_static("grpc-message"),
            HeaderValue::from_static(details),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_contract() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(
            ProxyError::Upstream(UpstreamErrorKind::ConnectRefused).status(),
            503
        );
        assert_eq!(
            ProxyError::Upstream(UpstreamErrorKind::Timeout).status(),
            504
        );
        assert_eq!(
            ProxyError::Upstream(UpstreamErrorKind::BadResponse).status(),
            502
        );
        assert_eq!(ProxyError::RequestBodyTooLarge.status(), 413);
    }

    #[test]
    fn grpc_errors_are_trailers_only() {
        let r = ProxyError::Upstream(UpstreamErrorKind::ConnectRefused).response(true);
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["grpc-status"], "14");
    }
}
