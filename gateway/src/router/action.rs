//! What a matched route does: proxy to a cluster (or one of weighted clusters), redirect, or
//! answer directly.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};

use crate::config::model::RedirectConfig;
use crate::filter::LocalResponse;
use crate::upstream::Cluster;

pub struct WeightedTarget {
    pub cluster: Arc<Cluster>,
    /// Running total of weights up to and including this target.
    pub cumulative: u32,
}

pub enum Action {
    Cluster(Arc<Cluster>),
    Weighted {
        targets: Vec<WeightedTarget>,
        total: u32,
    },
    Redirect(Redirect),
    Direct(LocalResponse),
}

impl Action {
    /// The cluster for this request (weighted: drawn at random by weight).
    pub fn pick_cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Action::Cluster(c) => Some(c),
            Action::Weighted { targets, total } => {
                let draw = rand::random::<u32>() % (*total).max(1);
                targets
                    .iter()
                    .find(|t| draw < t.cumulative)
                    .or(targets.last())
                    .map(|t| &t.cluster)
            }
            _ => None,
        }
    }
}

/// A compiled redirect.
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// (route's match prefix, replacement)
    pub prefix: Option<(String, String)>,
    pub status: StatusCode,
}

impl Redirect {
    /// # Errors
    /// A bad status code.
    pub fn compile(cfg: &RedirectConfig, match_prefix: Option<&str>) -> Result<Self, String> {
        let status = cfg.status.unwrap_or(301);
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Err(format!(
                "redirect status {status} is not one of 301, 302, 303, 307, 308"
            ));
        }
        let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
        let scheme = if cfg.https_redirect {
            Some("https".to_string())
        } else {
            cfg.scheme.clone()
        };
        let prefix = cfg
            .path_prefix
            .as_ref()
            .map(|p| (match_prefix.unwrap_or("/").to_string(), p.clone()));
        Ok(Redirect {
            scheme,
            host: cfg.host.clone(),
            port: cfg.port,
            path: cfg.path.clone(),
            prefix,
            status,
        })
    }

    /// The Location for a request with these parts, as a local response.
    pub fn respond(&self, req: &http::request::Parts, req_scheme: &str) -> LocalResponse {
        let scheme = self.scheme.as_deref().unwrap_or(req_scheme);
        let req_host = super::request_host(&req.uri, &req.headers);
        let host = self.host.as_deref().unwrap_or(req_host);
        let path = req.uri.path();
        let new_path = if let Some(p) = &self.path {
            p.clone()
        } else if let Some((from, to)) = &self.prefix {
            match path.strip_prefix(from.as_str()) {
                Some(rest) => format!("{to}{rest}"),
                None => path.to_string(),
            }
        } else {
            path.to_string()
        };
        let mut loc = String::with_capacity(scheme.len() + host.len() + new_path.len() + 16);
        loc.push_str(scheme);
        loc.push_str("://");
        loc.push_str(host);
        // A port is kept only when explicitly set; a scheme change drops the old port.
        if let Some(port) = self.port {
            loc.push(':');
            loc.push_str(&port.to_string());
        }
        loc.push_str(&new_path);
        if let Some(q) = req.uri.query() {
            loc.push('?');
            loc.push_str(q);
        }
        let mut r = LocalResponse::new(self.status, "redirect");
        if let Ok(v) = HeaderValue::from_str(&loc) {
            r.headers.insert(http::header::LOCATION, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: &str) -> http::request::Parts {
        http::Request::builder()
            .uri(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn prefix_redirect_keeps_rest_and_query() {
        let cfg = RedirectConfig {
            path_prefix: Some("/new/".into()),
            ..Default::default()
        };
        let r = Redirect::compile(&cfg, Some("/old/")).unwrap();
        let resp = r.respond(&parts("/old/a/b?x=1", "example.com:8080"), "http");
        assert_eq!(resp.status, 301);
        assert_eq!(resp.headers["location"], "http://example.com/new/a/b?x=1");
    }

    #[test]
    fn https_redirect() {
        let cfg = RedirectConfig {
            https_redirect: true,
            status: Some(308),
            ..Default::default()
        };
        let r = Redirect::compile(&cfg, None).unwrap();
        let resp = r.respond(&parts("/p", "example.com"), "http");
        assert_eq!(resp.status, 308);
        assert_eq!(resp.headers["location"], "https://example.com/p");
    }

    #[test]
    fn bad_status_rejected() {
        let cfg = RedirectConfig {
            status: Some(200),
            ..Default::default()
        };
        assert!(Redirect::compile(&cfg, None).is_err());
    }
}
