//! `api-key-auth`: a first-party Sluice plugin that lets a request through only with a
//! configured API key, in a header (default `x-api-key`) or as `Authorization: Bearer <key>`.
//! Anything else gets 401 with `WWW-Authenticate`. See README.md.

pub mod auth;

use std::rc::Rc;

use auth::{bearer_token, Config};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
}}

struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&raw) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(err) => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Error, &err.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    /// None only when the host runs the plugin without a successful on_configure: then every
    /// request is refused (fail closed), never let through.
    config: Option<Rc<Config>>,
}

impl Stream {
    fn deny(&self, config: Option<&Config>, code: &str, message: &str) -> Action {
        let challenges = config.map(Config::challenges).unwrap_or_default();
        let mut headers: Vec<(&str, &str)> = challenges
            .iter()
            .map(|c| ("www-authenticate", c.as_str()))
            .collect();
        headers.push(("content-type", "application/json"));
        headers.push(("cache-control", "no-store"));
        let body = format!("{{\"error\":\"{code}\",\"message\":\"{message}\"}}\n");
        self.send_http_response(401, headers, Some(body.as_bytes()));
        Action::Pause
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return self.deny(
                None,
                "not_configured",
                "the api-key-auth plugin has no configuration",
            );
        };
        // A client must never choose the consumer name the upstream trusts.
        if let Some(consumer_header) = &config.consumer_header {
            self.set_http_request_header(consumer_header, None);
        }
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if config.skipped(&path) {
            return Action::Continue;
        }
        // The dedicated header wins; a Bearer token is only looked at without it.
        let (presented, from_bearer) = match self.get_http_request_header_bytes(&config.header) {
            Some(key) => (Some(key), false),
            None if config.bearer => {
                let authorization = self.get_http_request_header("authorization");
                let token = authorization.as_deref().and_then(bearer_token);
                (token.map(|t| t.as_bytes().to_vec()), true)
            }
            None => (None, false),
        };
        let Some(presented) = presented else {
            return self.deny(
                Some(&config),
                "missing_api_key",
                "this endpoint needs an API key",
            );
        };
        let Some(consumer) = config.consumer(&presented) else {
            return self.deny(Some(&config), "invalid_api_key", "the API key is not valid");
        };
        if config.strip {
            // Only the credential that was used: another Authorization value may be meant
            // for the upstream.
            let used = if from_bearer {
                "authorization"
            } else {
                config.header.as_str()
            };
            self.set_http_request_header(used, None);
        }
        if let Some(consumer_header) = &config.consumer_header {
            self.set_http_request_header(consumer_header, Some(consumer));
        }
        Action::Continue
    }
}
