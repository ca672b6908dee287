//! Helpers shared by the unit tests of the built-in filters: build an exchange and a factory
//! context without a running gateway.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::registry::BuildContext;
use super::{Exchange, Flow, HttpFilter, LocalResponse, RequestInfo};
use crate::services::Services;

/// An exchange for `req` from `client` (an `ip:port`), on listener `public`.
pub fn exchange(client: &str, req: http::Request<()>) -> Exchange {
    let client_addr: SocketAddr = client.parse().expect("test client address");
    let info = RequestInfo {
        client_addr,
        local_addr: "127.0.0.1:8080".parse().expect("test local address"),
        listener: std::rc::Rc::from("public"),
        scheme: "http",
        tls: None,
        start: Instant::now(),
        worker: 0,
        headers_end_stream: !req.headers().contains_key(http::header::TRANSFER_ENCODING)
            && req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0"),
    };
    Exchange::new(info, req.into_parts().0)
}

/// A GET of `/` from `client`.
pub fn get(client: &str) -> Exchange {
    exchange(
        client,
        http::Request::builder()
            .uri("/")
            .body(())
            .expect("test request"),
    )
}

/// Give the exchange a response head with `status`.
pub fn respond(ex: &mut Exchange, status: u16) {
    let resp = http::Response::builder()
        .status(status)
        .body(())
        .expect("test response");
    ex.response = Some(resp.into_parts().0);
}

/// Build a filter with `factory` from a YAML config, with default services.
pub fn build(
    factory: impl Fn(
        Option<&serde_json::Value>,
        &BuildContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, String>,
    yaml: &str,
) -> Result<Arc<dyn HttpFilter>, String> {
    build_with(factory, yaml, &Services::new(), "test/filters/0")
}

/// Build a filter with `factory` from a YAML config (empty: no `config:`), services and use key.
pub fn build_with(
    factory: impl Fn(
        Option<&serde_json::Value>,
        &BuildContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, String>,
    yaml: &str,
    services: &Arc<Services>,
    key: &str,
) -> Result<Arc<dyn HttpFilter>, String> {
    let config: Option<serde_json::Value> = if yaml.trim().is_empty() {
        None
    } else {
        Some(serde_yaml::from_str(yaml).expect("test config is valid YAML"))
    };
    let cx = BuildContext {
        base_dir: Path::new("."),
        services,
        key,
    };
    factory(config.as_ref(), &cx)
}

/// The local response of a flow, panicking on anything else.
pub fn local(flow: Flow) -> LocalResponse {
    match flow {
        Flow::Respond(r) => *r,
        Flow::Continue => panic!("expected a local response, got Continue"),
        Flow::Pause(_) => panic!("expected a local response, got Pause"),
    }
}

/// Whether a flow is `Continue`.
pub fn is_continue(flow: &Flow) -> bool {
    matches!(flow, Flow::Continue)
}
