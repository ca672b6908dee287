//! The immutable runtime view built from a [`Config`]: listeners with their compiled chains and
//! routers, clusters, plugins. The request path reads it through one `ArcSwap` load; a reload
//! builds a whole new one off the request path and swaps it in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{self, FilterRef, ListenerConfig, Protocol, RouteConfig};
use crate::config::Config;
use crate::filter::chain::{ChainEntry, FilterList};
use crate::filter::{BuildContext, FilterRegistry, LocalResponse};
use crate::router::{self, Action, Redirect, Route, Router, WeightedTarget};
use crate::services::Services;
use crate::telemetry::metrics::RouteMetrics;
use crate::upstream::{Cluster, Upstreams};

/// A problem found while building a snapshot, with the key path it belongs to.
#[derive(Debug, Clone)]
pub struct BuildError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct BuildErrors(pub Vec<BuildError>);

impl std::fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildErrors {}

/// A listener ready to serve.
pub struct ListenerRuntime {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub config: ListenerConfig,
    pub http1: bool,
    pub http2: bool,
    pub chain: Arc<FilterList>,
    pub router: Router,
    /// Metrics for requests that matched no route.
    pub no_route: RouteMetrics,
    /// TLS settings (certificates loaded) when the listener has `tls:`.
    pub tls: Option<Arc<crate::listener::tls::ListenerTls>>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    /// Built plugins by name (compiled through the module cache, checked).
    pub plugins: HashMap<String, Arc<crate::wasm::Plugin>>,
    pub listeners: HashMap<String, Arc<ListenerRuntime>>,
    pub upstreams: Upstreams,
}

impl Snapshot {
    pub fn version(&self) -> &str {
        &self.config.version
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerRuntime>> {
        self.listeners.get(name)
    }

    /// Start background work (DNS, health checks) of every cluster on `rt`.
    pub fn start(&self, rt: &tokio::runtime::Handle) {
        for c in self.upstreams.clusters.values() {
            c.start(rt);
        }
    }
}

struct Builder<'a> {
    config: &'a Config,
    registry: &'a FilterRegistry,
    services: &'a Arc<Services>,
    errors: Vec<BuildError>,
    plugins: HashMap<String, Arc<crate::wasm::Plugin>>,
}

/// Build a snapshot. Every problem is collected; nothing is half-built.
///
/// # Errors
/// All problems found, each with its key path.
pub fn build(
    config: Arc<Config>,
    registry: &FilterRegistry,
    services: &Arc<Services>,
) -> Result<Snapshot, BuildErrors> {
    let mut b = Builder {
        config: &config,
        registry,
        services,
        errors: Vec::new(),
        plugins: HashMap::new(),
    };
    for (i, p) in config.file.plugins.iter().enumerate() {
        let fetched;
        let p = match (&p.wasm, &p.url, &p.sha256) {
            (None, Some(url), Some(sha)) => {
                // Remote code is fetched once per digest and then read from the disk cache.
                match crate::plugin_fetch::fetch_blocking(
                    url,
                    sha,
                    crate::plugin_fetch::DEFAULT_FETCH_TIMEOUT,
                ) {
                    Ok(path) => {
                        fetched = model::PluginConfig {
                            wasm: Some(path.display().to_string()),
                            url: None,
                            ..p.clone()
                        };
                        &fetched
                    }
                    Err(e) => {
                        b.err(
                            format!("plugins[{i}].url"),
                            format!("plugin {}: {e}", p.name),
                        );
                        continue;
                    }
                }
            }
            _ => p,
        };
        match crate::wasm::build_plugin(p, &config.base_dir, services) {
            Ok(plugin) => {
                b.plugins.insert(p.name.clone(), plugin);
            }
            Err(message) => b.err(format!("plugins[{i}].wasm"), message),
        }
    }
    let mut upstreams = Upstreams::default();
    for (i, c) in config.file.clusters.iter().enumerate() {
        // Upstream CA paths are relative to the config file, like every other path.
        let mut c = c.clone();
        if let Some(ca) = c.tls.as_mut().and_then(|t| t.ca.as_mut()) {
            *ca = config.resolve(ca).display().to_string();
        }
        let c = &c;
        match Cluster::build(c, services) {
            Ok(cl) => {
                upstreams.clusters.insert(c.name.clone(), cl);
            }
            Err(message) => b.err(format!("clusters[{i}]"), message),
        }
    }
    let mut listeners = HashMap::new();
    for (i, l) in config.file.listeners.iter().enumerate() {
        if let Some(rt) = b.listener(i, l, &upstreams) {
            listeners.insert(l.name.clone(), Arc::new(rt));
        }
    }
    if !b.errors.is_empty() {
        return Err(BuildErrors(b.errors));
    }
    let plugins = std::mem::take(&mut b.plugins);
    drop(b);
    Ok(Snapshot {
        plugins,
        config,
        listeners,
        upstreams,
    })
}

impl Builder<'_> {
    fn err(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(BuildError {
            path,
            message: message.into(),
        });
    }

    fn listener(
        &mut self,
        i: usize,
        l: &ListenerConfig,
        ups: &Upstreams,
    ) -> Option<ListenerRuntime> {
        let address: SocketAddr = match l.address.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(
                    format!("listeners[{i}].address"),
                    format!("`{}` is not an IP:port address", l.address),
                );
                return None;
            }
        };
        let chain = self.chain(
            &format!("listeners[{i}].filters"),
            &format!("listener/{}", l.name),
            &l.filters,
        );
        let mut routes = Vec::new();
        for (j, r) in l.routes.iter().enumerate() {
            if let Some(route) = self.route(i, j, l, r, ups) {
                routes.push(Arc::new(route));
            }
        }
        let http1 = l.protocols.contains(&Protocol::Http1);
        let http2 = l.protocols.contains(&Protocol::Http2);
        let tls = match &l.tls {
            Some(t) => {
                let base = &self.config.base_dir;
                match crate::listener::tls::ListenerTls::build(t, base, &l.name, http1, http2) {
                    Ok(t) => Some(Arc::new(t)),
                    Err(e) => {
                        self.err(format!("listeners[{i}].tls"), e.to_string());
                        None
                    }
                }
            }
            None => None,
        };
        let metrics = &self.services.metrics;
        Some(ListenerRuntime {
            name: l.name.as_str().into(),
            address,
            config: l.clone(),
            http1,
            http2,
            tls,
            chain: Arc::new(FilterList::new(chain)),
            router: Router::new(routes),
            no_route: metrics.route(&l.name, "", ""),
        })
    }

    fn chain(&mut self, path: &str, key: &str, refs: &[FilterRef]) -> Vec<ChainEntry> {
        let mut out = Vec::with_capacity(refs.len());
        for (k, f) in refs.iter().enumerate() {
            let at = format!("{path}[{k}]");
            let use_key = format!("{key}/filters/{k}");
            if let Some(name) = &f.name {
                let Some(factory) = self.registry.get(name) else {
                    self.err(
                        format!("{at}.name"),
                        format!(
                            "unknown filter `{name}`; known filters: {}",
                            self.registry.names().join(", ")
                        ),
                    );
                    continue;
                };
                let cx = BuildContext {
                    base_dir: &self.config.base_dir,
                    services: self.services,
                    key: &use_key,
                };
                match factory.create(f.config.as_ref(), &cx) {
                    Ok(filter) => out.push(ChainEntry::new(filter)),
                    Err(message) => self.err(format!("{at}.config"), message),
                }
            } else if let Some(plugin) = &f.plugin {
                match self.plugin_filter(plugin, f.config.as_ref()) {
                    Ok(filter) => out.push(ChainEntry::new(filter)),
                    Err(message) => self.err(format!("{at}.plugin"), message),
                }
            } else {
                self.err(
                    at,
                    "a chain entry needs `name:` (a native filter) or `plugin:` (a wasm plugin)",
                );
            }
        }
        out
    }

    fn plugin_filter(
        &mut self,
        name: &str,
        per_use: Option<&serde_json::Value>,
    ) -> Result<Arc<dyn crate::filter::HttpFilter>, String> {
        match self.plugins.get(name) {
            Some(p) => p.filter(per_use),
            None if self.config.file.plugins.iter().any(|p| p.name == name) => Err(format!(
                "plugin `{name}` failed to load (see its own error)"
            )),
            None => Err(format!("plugin `{name}` is not defined under `plugins:`")),
        }
    }

    fn route(
        &mut self,
        i: usize,
        j: usize,
        l: &ListenerConfig,
        r: &RouteConfig,
        ups: &Upstreams,
    ) -> Option<Route> {
        let at = format!("listeners[{i}].routes[{j}]");
        let name: Arc<str> = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{}#{j}", l.name))
            .into();
        let matcher = match router::compile(&r.matcher) {
            Ok(m) => m,
            Err(e) => {
                self.err(format!("{at}.match"), e);
                return None;
            }
        };
        let find = |this: &mut Self, path: String, c: &str| -> Option<Arc<Cluster>> {
            match ups.clusters.get(c) {
                Some(cl) => Some(cl.clone()),
                None => {
                    this.err(
                        path,
                        format!("cluster `{c}` is not defined under `clusters:`"),
                    );
                    None
                }
            }
        };
        let mut cluster_name = String::new();
        let action = if let Some(c) = &r.cluster {
            cluster_name = c.clone();
            Action::Cluster(find(self, format!("{at}.cluster"), c)?)
        } else if let Some(ws) = &r.weighted_clusters {
            let mut targets = Vec::new();
            let mut total = 0u32;
            for (k, w) in ws.iter().enumerate() {
                let cl = find(self, format!("{at}.weighted_clusters[{k}].name"), &w.name)?;
                total = total.saturating_add(w.weight);
                targets.push(WeightedTarget {
                    cluster: cl,
                    cumulative: total,
                });
            }
            if total == 0 {
                self.err(
                    format!("{at}.weighted_clusters"),
                    "weights must add up to more than 0",
                );
                return None;
            }
            cluster_name = "weighted".to_string();
            Action::Weighted { targets, total }
        } else if let Some(rd) = &r.redirect {
            match Redirect::compile(rd, r.matcher.path_prefix.as_deref()) {
                Ok(rd) => Action::Redirect(rd),
                Err(e) => {
                    self.err(format!("{at}.redirect"), e);
                    return None;
                }
            }
        } else if let Some(d) = &r.direct_response {
            match direct_response(d) {
                Ok(resp) => Action::Direct(resp),
                Err(e) => {
                    self.err(format!("{at}.direct_response"), e);
                    return None;
                }
            }
        } else {
            self.err(at, "a route needs one of `cluster`, `weighted_clusters`, `redirect`, `direct_response`");
            return None;
        };
        let chain = self.chain(
            &format!("{at}.filters"),
            &format!("listener/{}/route/{name}", l.name),
            &r.filters,
        );
        let rewrite_prefix = r
            .rewrite
            .as_ref()
            .and_then(|rw| rw.path_prefix.clone())
            .map(|to| {
                let from = r
                    .matcher
                    .path_prefix
                    .clone()
                    .unwrap_or_else(|| "/".to_string());
                (from, to)
            });
        let rewrite_host = match r.rewrite.as_ref().and_then(|rw| rw.host.as_deref()) {
            Some(h) => match http::HeaderValue::from_str(h) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.err(
                        format!("{at}.rewrite.host"),
                        format!("`{h}` is not a valid host"),
                    );
                    None
                }
            },
            None => None,
        };
        let metrics = self.services.metrics.route(&l.name, &name, &cluster_name);
        Some(Route {
            name,
            matcher,
            action,
            chain: chain_list(chain),
            timeout: r.timeout.unwrap_or(model::DEFAULT_ROUTE_TIMEOUT).get(),
            retries: r.retries.clone(),
            rewrite_prefix,
            rewrite_host,
            metrics,
        })
    }
}

fn chain_list(v: Vec<ChainEntry>) -> Arc<FilterList> {
    Arc::new(FilterList::new(v))
}

fn direct_response(d: &model::DirectResponseConfig) -> Result<LocalResponse, String> {
    let status = http::StatusCode::from_u16(d.status)
        .map_err(|_| format!("status {} is not a valid HTTP status", d.status))?;
    let mut r = LocalResponse::new(status, "direct_response");
    if let Some(b) = &d.body {
        r.body = bytes::Bytes::from(b.clone());
    }
    for h in &d.headers {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("bad header name `{}`", h.name))?;
        let value = http::HeaderValue::from_str(&h.value)
            .map_err(|_| format!("bad header value for `{}`", h.name))?;
        r.headers.append(name, value);
    }
    Ok(r)
}

/// The default route timeout as a Duration.
pub fn default_timeout() -> Duration {
    model::DEFAULT_ROUTE_TIMEOUT.get()
}
