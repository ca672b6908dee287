//! xDS: a real gRPC control plane (tonic, envoy-types' `AggregatedDiscoveryService` server trait)
//! pushes listeners, routes, clusters and endpoints to a real gateway process over ADS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{QueryParameterMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpConnectionManager, Rds};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};

use crate::load::Load;
use crate::support::*;

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// What the control plane serves: one version for everything, resources by type URL.
#[derive(Clone, Debug, Default)]
struct Resources {
    version: String,
    by_type: HashMap<&'static str, Vec<(String, Any)>>,
}

#[derive(Clone)]
struct Ads {
    state: watch::Receiver<Resources>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

fn response(res: &Resources, type_url: &str, names: &[String], nonce: u64) -> DiscoveryResponse {
    let items = res.by_type.get(type_url).cloned().unwrap_or_default();
    let resources = items
        .into_iter()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .map(|(_, a)| a)
        .collect();
    DiscoveryResponse {
        version_info: res.version.clone(),
        resources,
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.state.clone();
        let log = self.requests.clone();
        tokio::spawn(async move {
            let mut subscribed: HashMap<String, Vec<String>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { return };
                        log.lock().unwrap().push(req.clone());
                        let names_changed = subscribed.get(&req.type_url) != Some(&req.resource_names);
                        subscribed.insert(req.type_url.clone(), req.resource_names.clone());
                        // A first request or a new set of names gets the current resources;
                        // an ACK or NACK of what was just sent gets nothing.
                        if req.response_nonce.is_empty() || names_changed {
                            nonce += 1;
                            let res = state.borrow().clone();
                            if tx.send(Ok(response(&res, &req.type_url, &req.resource_names, nonce))).await.is_err() {
                                return;
                            }
                        }
                    }
                    c = state.changed() => {
                        if c.is_err() { return }
                        let res = state.borrow_and_update().clone();
                        // CDS before LDS, as Envoy's ordering guidance says.
                        for t in [CDS, EDS, LDS, RDS] {
                            if let Some(names) = subscribed.get(t) {
                                nonce += 1;
                                if tx.send(Ok(response(&res, t, names, nonce))).await.is_err() {
                                    return;
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

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "delta xDS is not served by this test control plane",
        ))
    }
}

/// A control plane on its own runtime; dropping the runtime kills it like a crashed process.
struct ControlPlane {
    addr: SocketAddr,
    state: watch::Sender<Resources>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ControlPlane {
    fn start(addr: SocketAddr, initial: Resources) -> ControlPlane {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (state, rx) = watch::channel(initial);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let ads = Ads {
            state: rx,
            requests: requests.clone(),
        };
        let listener = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // The port may linger briefly after a restart.
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(e) if Instant::now() > deadline => panic!("bind {addr}: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let addr = listener.local_addr().expect("addr");
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(ads))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        ControlPlane {
            addr,
            state,
            requests,
            rt: Some(rt),
        }
    }

    fn push(&self, res: Resources) {
        self.state.send_replace(res);
    }

    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Wait for a request matching `f` (generous timeout only to avoid hanging).
    fn wait_request(&self, what: &str, f: impl Fn(&DiscoveryRequest) -> bool) -> DiscoveryRequest {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.requests.lock().unwrap().iter().find(|r| f(r)) {
                return r.clone();
            }
            if Instant::now() > deadline {
                panic!("no {what}; requests: {:#?}", self.requests.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn listener(name: &str, port: u16, rds: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: rds.into(),
            config_source: None,
        })),
        ..Default::default()
    };
    pack_any(Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", port)),
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

fn route_to(name: &str, cluster: &str) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn routes(name: &str, route: Route) -> Any {
    pack_any(RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn eds_cluster(name: &str) -> Any {
    pack_any(Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: name.into(),
            eds_config: None,
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    })
}

fn endpoints(cluster: &str, addr: SocketAddr) -> Any {
    pack_any(ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket("127.0.0.1", addr.port())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Listener `xds` on `port` routing everything to `target`; clusters a and b by EDS.
fn resources(version: &str, port: u16, a: &Upstream, b: &Upstream, route: Route) -> Resources {
    let mut by_type = HashMap::new();
    by_type.insert(
        LDS,
        vec![("xds".to_string(), listener("xds", port, "main"))],
    );
    by_type.insert(RDS, vec![("main".to_string(), routes("main", route))]);
    by_type.insert(
        CDS,
        vec![
            ("a".to_string(), eds_cluster("a")),
            ("b".to_string(), eds_cluster("b")),
        ],
    );
    by_type.insert(
        EDS,
        vec![
            ("a".to_string(), endpoints("a", a.addr)),
            ("b".to_string(), endpoints("b", b.addr)),
        ],
    );
    Resources {
        version: version.into(),
        by_type,
    }
}

fn gateway(cp: SocketAddr) -> Gateway {
    Gateway::start(&format!(
        r#"
workers: 2
listeners:
  - name: static
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "static" }}
xds:
  server: "http://{cp}"
  node: {{ id: edge-1, cluster: edge, metadata: {{ zone: test }} }}
"#
    ))
}

fn get_at(port: u16) -> Result<Resp, String> {
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", "localhost")
        .body(full(""))
        .map_err(|e| e.to_string())?;
    send(SocketAddr::from(([127, 0, 0, 1], port)), req, false)
}

/// Wait until the xDS listener answers from upstream `name`.
fn wait_served_by(gw: &Gateway, port: u16, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match get_at(port) {
            Ok(r) if r.header("x-upstream") == Some(name) => return,
            Ok(r) => last = format!("{} {:?} {}", r.status, r.header("x-upstream"), r.text()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "xDS listener never served by {name}; last: {last}\nlog:\n{}",
        gw.log()
    );
}

fn is_ack(r: &DiscoveryRequest, type_url: &str, version: &str) -> bool {
    r.type_url == type_url
        && !r.response_nonce.is_empty()
        && r.version_info == version
        && r.error_detail.is_none()
}

#[test]
fn xds_pushes_listener_routes_clusters_and_swaps_them_under_load() {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let gw = gateway(cp.addr);
    wait_served_by(&gw, port, "A");
    let first = cp.wait_request("first request", |r| r.node.is_some());
    let node = first.node.expect("node");
    assert_eq!(node.id, "edge-1");
    assert_eq!(node.cluster, "edge");
    for t in [CDS, LDS, RDS, EDS] {
        cp.wait_request("ACK of version 1", |r| is_ack(r, t, "1"));
    }
    // The static listener keeps serving beside the xDS one.
    assert_eq!(get(&gw, "/").text(), "static");
    let cfg = http_get_json(&gw.admin_url("/config"));
    assert_eq!(cfg["xds"]["versions"][LDS], "1", "{cfg}");
    assert_eq!(cfg["xds"]["listeners"][0], "xds", "{cfg}");

    // Swap the route to cluster b while requests flow: none may fail.
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), "/", 4, 200);
    std::thread::sleep(Duration::from_millis(300));
    cp.push(resources("2", port, &a, &b, route_to("r", "b")));
    wait_served_by(&gw, port, "B");
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert!(report.ok > 0);
    assert_eq!(
        report.failed, 0,
        "failed requests during the swap: {:?}",
        report.errors
    );
    cp.wait_request("ACK of version 2", |r| is_ack(r, RDS, "2"));
}

#[test]
fn xds_bad_resource_is_nacked_and_the_old_config_keeps_serving() {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let gw = gateway(cp.addr);
    wait_served_by(&gw, port, "A");
    // A query-parameter match changes which requests a route takes: Sluice cannot honour it.
    let mut bad = route_to("r", "b");
    if let Some(m) = bad.r#match.as_mut() {
        m.query_parameters = vec![QueryParameterMatcher {
            name: "canary".into(),
            ..Default::default()
        }];
    }
    cp.push(resources("2", port, &a, &b, bad));
    let nack = cp.wait_request("NACK of version 2", |r| {
        r.type_url == RDS && r.error_detail.is_some()
    });
    let detail = nack.error_detail.expect("detail").message;
    assert!(detail.contains("query_parameters"), "{detail}");
    assert_eq!(
        nack.version_info, "1",
        "a NACK carries the last accepted version"
    );
    for _ in 0..20 {
        let r = get_at(port).expect("request");
        assert_eq!(r.header("x-upstream"), Some("A"));
    }
    let cfg = http_get_json(&gw.admin_url("/config"));
    assert!(
        cfg["last_error"].is_null() || cfg["xds"]["versions"][RDS] == "1",
        "{cfg}"
    );
    // A good version after the bad one is applied.
    cp.push(resources("3", port, &a, &b, route_to("r", "b")));
    wait_served_by(&gw, port, "B");
}

#[test]
fn xds_control_plane_restart_keeps_serving_and_resubscribes() {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let mut cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let cp_addr = cp.addr;
    let gw = gateway(cp_addr);
    wait_served_by(&gw, port, "A");
    cp.kill();
    for _ in 0..20 {
        let r = get_at(port).expect("request while the control plane is down");
        assert_eq!(r.header("x-upstream"), Some("A"));
        std::thread::sleep(Duration::from_millis(10));
    }
    let cp2 = ControlPlane::start(cp_addr, resources("2", port, &a, &b, route_to("r", "b")));
    let first = cp2.wait_request("resubscription", |r| r.node.is_some());
    // The gateway tells the new control plane what it holds.
    assert!(first.type_url == CDS || first.type_url == LDS, "{first:?}");
    assert_eq!(first.version_info, "1");
    wait_served_by(&gw, port, "B");
    cp2.wait_request("ACK of version 2", |r| is_ack(r, LDS, "2"));
}

fn http_get_json(url: &str) -> serde_json::Value {
    let (ok, out, err) = curl(&["-s", url]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
