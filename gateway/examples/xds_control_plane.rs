//! A small ADS control plane for trying Sluice's xDS client: it reads a YAML file describing
//! listeners, routes, clusters and ECDS filter configs (wasm plugins or Sluice native filters),
//! turns it into Envoy resources with envoy-types and serves them over state-of-the-world
//! or Delta ADS (gRPC, h2c). It re-reads the file every second and pushes a new version when it changed, so
//! editing the file changes the running gateway. See examples/xds/README.md.
//!
//! ```sh
//! cargo run -p sluice --example xds_control_plane -- examples/xds/resources.yaml 127.0.0.1:18000
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier as AsyncSpecifier;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, AsyncDataSource, ConfigSource, DataSource,
    ExtensionConfigSource, HttpUri, RemoteDataSource, SocketAddress, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use envoy_types::util::pack_any;
use futures_util::Stream;
use prost::Message as _;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// The file: a much smaller vocabulary than Envoy's, enough to show each resource type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listeners: Vec<ListenerSpec>,
    #[serde(default)]
    clusters: Vec<ClusterSpec>,
    #[serde(default)]
    extension_configs: Vec<ExtensionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSpec {
    name: String,
    address: SocketAddr,
    routes: Vec<RouteSpec>,
    /// Names of `extension_configs`, run in order before the router (through ECDS).
    #[serde(default)]
    filters: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    prefix: String,
    cluster: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    name: String,
    endpoints: Vec<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionSpec {
    name: String,
    /// A Sluice native filter by name (`headers`, `local-rate-limit`, ...) ...
    #[serde(default)]
    native: Option<String>,
    /// ... or a wasm plugin: `file` (read here and sent inline) or `url` + `sha256`.
    #[serde(default)]
    wasm: Option<WasmSpec>,
    #[serde(default)]
    root_id: String,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmSpec {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

/// `xds.type.v3.TypedStruct`, which envoy-types does not generate.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Struct>,
}

fn to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    Value { kind: Some(kind) }
}

fn to_struct(o: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn socket(a: SocketAddr) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(a.port()))),
            ..Default::default()
        })),
    }
}

fn listener(l: &ListenerSpec) -> Any {
    let routes = l
        .routes
        .iter()
        .map(|r| Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(r.prefix.clone())),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(r.cluster.clone())),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let ads = ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    };
    let mut http_filters: Vec<HttpFilter> = l
        .filters
        .iter()
        .map(|name| HttpFilter {
            name: name.clone(),
            config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                ExtensionConfigSource {
                    config_source: Some(ads.clone()),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        ..Default::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: l.name.clone(),
        http_filters,
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: l.name.clone(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    pack_any(Listener {
        name: l.name.clone(),
        address: Some(socket(l.address)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn cluster(c: &ClusterSpec) -> Any {
    let lb_endpoints = c
        .endpoints
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(*e)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    pack_any(Cluster {
        name: c.name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: c.name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn extension(e: &ExtensionSpec, base: &Path) -> anyhow::Result<Any> {
    let config = e.config.as_ref().map(|c| match c {
        serde_json::Value::Object(o) => pack_any(to_struct(o)),
        other => pack_any(envoy_types::pb::google::protobuf::StringValue {
            value: other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_string),
        }),
    });
    let typed = match (&e.native, &e.wasm) {
        (Some(name), None) => Any {
            type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
            value: TypedStruct {
                type_url: format!("type.googleapis.com/sluice.filters.{name}"),
                value: match &e.config {
                    Some(serde_json::Value::Object(o)) => Some(to_struct(o)),
                    _ => None,
                },
            }
            .encode_to_vec(),
        },
        (None, Some(w)) => {
            let code = match (&w.file, &w.url, &w.sha256) {
                (Some(f), None, _) => {
                    let path = base.join(f);
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    AsyncSpecifier::Local(DataSource {
                        specifier: Some(Specifier::InlineBytes(bytes)),
                        watched_directory: None,
                    })
                }
                (None, Some(url), Some(sha)) => AsyncSpecifier::Remote(RemoteDataSource {
                    http_uri: Some(HttpUri {
                        uri: url.clone(),
                        timeout: Some(envoy_types::pb::google::protobuf::Duration {
                            seconds: 10,
                            nanos: 0,
                        }),
                        http_upstream_type: None,
                    }),
                    sha256: sha.clone(),
                    retry_policy: None,
                }),
                _ => anyhow::bail!("{}: wasm needs `file`, or `url` and `sha256`", e.name),
            };
            pack_any(Wasm {
                config: Some(PluginConfig {
                    name: e.name.clone(),
                    root_id: e.root_id.clone(),
                    configuration: config,
                    vm: Some(Vm::VmConfig(VmConfig {
                        runtime: "envoy.wasm.runtime.v8".into(),
                        code: Some(AsyncDataSource {
                            specifier: Some(code),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            })
        }
        _ => anyhow::bail!("{}: give exactly one of `native` or `wasm`", e.name),
    };
    Ok(pack_any(TypedExtensionConfig {
        name: e.name.clone(),
        typed_config: Some(typed),
    }))
}

/// Resources by type URL: (name, resource).
type Snapshot = HashMap<&'static str, Vec<(String, Any)>>;

fn load(path: &Path) -> anyhow::Result<Snapshot> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut s = Snapshot::new();
    s.insert(
        LDS,
        file.listeners
            .iter()
            .map(|l| (l.name.clone(), listener(l)))
            .collect(),
    );
    s.insert(
        CDS,
        file.clusters
            .iter()
            .map(|c| (c.name.clone(), cluster(c)))
            .collect(),
    );
    let mut ext = Vec::new();
    for e in &file.extension_configs {
        ext.push((e.name.clone(), extension(e, base)?));
    }
    s.insert(ECDS, ext);
    Ok(s)
}

/// The served state: a version (bumped on every change) and the resources.
type State = (u64, Snapshot);

#[derive(Clone)]
struct Ads {
    state: watch::Receiver<State>,
}

type SotwStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

fn response(state: &State, type_url: &str, names: &[String], nonce: u64) -> DiscoveryResponse {
    let resources = state
        .1
        .get(type_url)
        .into_iter()
        .flatten()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .map(|(_, a)| a.clone())
        .collect();
    DiscoveryResponse {
        version_info: state.0.to_string(),
        resources,
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<SotwStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.state.clone();
        tokio::spawn(async move {
            let mut subscribed: HashMap<String, Vec<String>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { return };
                        if let Some(e) = &req.error_detail {
                            eprintln!("NACK {}: {}", req.type_url, e.message);
                        } else if !req.response_nonce.is_empty() {
                            eprintln!("ACK  {} version {}", req.type_url, req.version_info);
                        }
                        let changed = subscribed.get(&req.type_url) != Some(&req.resource_names);
                        subscribed.insert(req.type_url.clone(), req.resource_names.clone());
                        if req.response_nonce.is_empty() || changed {
                            nonce += 1;
                            let r = response(&state.borrow(), &req.type_url, &req.resource_names, nonce);
                            if tx.send(Ok(r)).await.is_err() { return }
                        }
                    }
                    c = state.changed() => {
                        if c.is_err() { return }
                        let s = state.borrow_and_update().clone();
                        for t in [CDS, ECDS, LDS] {
                            if let Some(names) = subscribed.get(t) {
                                nonce += 1;
                                if tx.send(Ok(response(&s, t, names, nonce))).await.is_err() { return }
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.state.clone();
        tokio::spawn(async move {
            // Per type: the subscribed names ("*" = all) and what the gateway holds (name → version).
            let mut subs: HashMap<String, (Vec<String>, HashMap<String, String>)> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { return };
                        if let Some(e) = &req.error_detail {
                            eprintln!("NACK {} (delta): {}", req.type_url, e.message);
                        } else if !req.response_nonce.is_empty() {
                            eprintln!("ACK  {} (delta) nonce {}", req.type_url, req.response_nonce);
                        }
                        let (names, held) = subs.entry(req.type_url.clone()).or_default();
                        held.extend(req.initial_resource_versions.clone());
                        names.extend(req.resource_names_subscribe.iter().cloned());
                        names.retain(|n| !req.resource_names_unsubscribe.contains(n));
                        if !req.resource_names_subscribe.is_empty() {
                            nonce += 1;
                            let r = delta(&state.borrow(), &req.type_url, names, held, nonce);
                            if let Some(r) = r {
                                if tx.send(Ok(r)).await.is_err() { return }
                            }
                        }
                    }
                    c = state.changed() => {
                        if c.is_err() { return }
                        let s = state.borrow_and_update().clone();
                        for t in [CDS, ECDS, LDS] {
                            if let Some((names, held)) = subs.get_mut(t) {
                                nonce += 1;
                                if let Some(r) = delta(&s, t, names, held, nonce) {
                                    if tx.send(Ok(r)).await.is_err() { return }
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// What the gateway lacks of `type_url` (new or changed) and what it holds that is gone.
fn delta(
    state: &State,
    type_url: &str,
    names: &[String],
    held: &mut HashMap<String, String>,
    nonce: u64,
) -> Option<DeltaDiscoveryResponse> {
    let version = state.0.to_string();
    let all = state.1.get(type_url).cloned().unwrap_or_default();
    let wanted = |n: &String| names.iter().any(|s| s == "*" || s == n);
    let mut resources = Vec::new();
    for (name, any) in all.iter().filter(|(n, _)| wanted(n)) {
        if held.get(name) != Some(&version) {
            held.insert(name.clone(), version.clone());
            resources.push(Resource {
                name: name.clone(),
                version: version.clone(),
                resource: Some(any.clone()),
                ..Default::default()
            });
        }
    }
    let removed: Vec<String> = held
        .keys()
        .filter(|n| !all.iter().any(|(a, _)| a == *n))
        .cloned()
        .collect();
    for n in &removed {
        held.remove(n);
    }
    (!resources.is_empty() || !removed.is_empty()).then(|| DeltaDiscoveryResponse {
        system_version_info: version,
        resources,
        type_url: type_url.to_string(),
        removed_resources: removed,
        nonce: nonce.to_string(),
        ..Default::default()
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .context("usage: xds_control_plane RESOURCES.yaml [ADDR]")?,
    );
    let addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:18000")
        .parse()?;
    let (tx, rx) = watch::channel((1, load(&path)?));
    let watched = path.clone();
    tokio::spawn(async move {
        let mut seen = modified(&watched);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = modified(&watched);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&watched) {
                Ok(s) => {
                    let version = tx.borrow().0 + 1;
                    eprintln!("{} changed: pushing version {version}", watched.display());
                    tx.send_replace((version, s));
                }
                Err(e) => eprintln!("{} not pushed: {e:#}", watched.display()),
            }
        }
    });
    eprintln!(
        "ADS control plane on {addr}, serving {} (version 1)",
        path.display()
    );
    tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(Ads { state: rx }))
        .serve(addr)
        .await?;
    Ok(())
}
