//! A small exact-path router for the admin API. Adding an endpoint is one `.route(...)` line;
//! the router itself answers `/` (the index), unknown paths (404) and wrong methods (405).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::response::{self, AdminRequest, AdminResponse};
use super::AdminState;

type HandlerFuture = Pin<Box<dyn Future<Output = AdminResponse> + Send>>;
type Handler = Arc<dyn Fn(Arc<AdminState>, AdminRequest) -> HandlerFuture + Send + Sync>;

/// Maps (path, method) to handlers.
#[derive(Clone, Default)]
pub struct Router {
    routes: BTreeMap<&'static str, Vec<(Method, Handler)>>,
}

impl Router {
    /// A router with no endpoints (besides the built-in index).
    pub fn new() -> Self {
        Router::default()
    }

    /// Serves `method path` with `handler`; registering the same pair again replaces it.
    pub fn route<F, Fut>(mut self, path: &'static str, method: Method, handler: F) -> Self
    where
        F: Fn(Arc<AdminState>, AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AdminResponse> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |state, req| Box::pin(handler(state, req)));
        let methods = self.routes.entry(path).or_default();
        methods.retain(|(m, _)| *m != method);
        methods.push((method, handler));
        self
    }

    /// `[{"path": "/metrics", "methods": ["GET"]}, ...]`, for the index and 404 bodies.
    pub fn endpoints(&self) -> Value {
        let list: Vec<Value> = self
            .routes
            .iter()
            .map(|(path, methods)| {
                let names: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
                json!({ "path": path, "methods": names })
            })
            .collect();
        Value::Array(list)
    }

    pub(crate) async fn dispatch(
        &self,
        state: Arc<AdminState>,
        req: AdminRequest,
    ) -> AdminResponse {
        let path = req.uri().path();
        let Some(methods) = self.routes.get(path) else {
            if path == "/" {
                return self.index(req.method());
            }
            let body =
                json!({ "error": format!("no endpoint {path}"), "endpoints": self.endpoints() });
            return response::json(StatusCode::NOT_FOUND, &body);
        };
        // HEAD is served by the GET handler; hyper leaves the body out.
        let wanted = if req.method() == Method::HEAD {
            Method::GET
        } else {
            req.method().clone()
        };
        match methods.iter().find(|(m, _)| *m == wanted) {
            Some((_, handler)) => handler(state, req).await,
            None => method_not_allowed(methods.iter().map(|(m, _)| m)),
        }
    }

    fn index(&self, method: &Method) -> AdminResponse {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed([&Method::GET]);
        }
        response::json(StatusCode::OK, &json!({ "endpoints": self.endpoints() }))
    }
}

fn method_not_allowed<'a>(allowed: impl IntoIterator<Item = &'a Method>) -> AdminResponse {
    let mut names: Vec<&str> = allowed.into_iter().map(Method::as_str).collect();
    if names.contains(&"GET") {
        names.push("HEAD");
    }
    let allow = names.join(", ");
    let mut resp = response::json(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": "method not allowed", "allow": allow }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}
