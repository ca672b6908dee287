//! xDS: a real gRPC control plane (tonic, envoy-types' `AggregatedDiscoveryService` server trait)
//! pushes listeners, routes, clusters and endpoints to a real gateway process over ADS.

use std::collections::HashMap;
use std::net::SocketAddr;
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
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpConnectionManager, HttpFilter, Rds};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use crate::load::Load;
use crate::support::*;
use crate::xds_cp::*;

pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub fn listener(name: &str, port: u16, rds: &str) -> Any {
    listener_with(name, port, rds, Vec::new())
}

/// A listener whose HttpConnectionManager runs `http_filters` (the router is added last).
pub fn listener_with(name: &str, port: u16, rds: &str, mut http_filters: Vec<HttpFilter>) -> Any {
    if !http_filters.is_empty() {
        http_filters.push(HttpFilter {
            name: "envoy.filters.http.router".into(),
            ..Default::default()
        });
    }
    let hcm = HttpConnectionManager {
        http_filters,
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

pub fn route_to(name: &str, cluster: &str) -> Route {
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

pub fn routes(name: &str, route: Route) -> Any {
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

pub fn eds_cluster(name: &str) -> Any {
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

pub fn endpoints(cluster: &str, addr: SocketAddr) -> Any {
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
pub fn resources(version: &str, port: u16, a: &Upstream, b: &Upstream, route: Route) -> Resources {
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

pub fn gateway(cp: SocketAddr, delta: bool) -> Gateway {
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
  delta: {delta}
"#
    ))
}

pub fn get_at(port: u16) -> Result<Resp, String> {
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", "localhost")
        .body(full(""))
        .map_err(|e| e.to_string())?;
    send(SocketAddr::from(([127, 0, 0, 1], port)), req, false)
}

/// Wait until the xDS listener answers from upstream `name`.
pub fn wait_served_by(gw: &Gateway, port: u16, name: &str) {
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

#[test]
fn xds_sotw_pushes_listener_routes_clusters_and_swaps_them_under_load() {
    pushes_and_swaps_under_load(false);
}

#[test]
fn xds_delta_pushes_listener_routes_clusters_and_swaps_them_under_load() {
    pushes_and_swaps_under_load(true);
}

fn pushes_and_swaps_under_load(delta: bool) {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let gw = gateway(cp.addr, delta);
    wait_served_by(&gw, port, "A");
    let first = cp.wait_request("first request", |r| r.node.is_some());
    let node = first.node.expect("node");
    assert_eq!(node.id, "edge-1");
    assert_eq!(node.cluster, "edge");
    for t in [CDS, LDS, RDS, EDS] {
        cp.wait_request("ACK of version 1", |r| r.is_ack(t, "1"));
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
    cp.wait_request("ACK of version 2", |r| r.is_ack(RDS, "2"));
}

#[test]
fn xds_sotw_bad_resource_is_nacked_and_the_old_config_keeps_serving() {
    bad_resource_is_nacked(false);
}

#[test]
fn xds_delta_bad_resource_is_nacked_and_the_old_config_keeps_serving() {
    bad_resource_is_nacked(true);
}

fn bad_resource_is_nacked(delta: bool) {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let gw = gateway(cp.addr, delta);
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
        r.type_url == RDS && r.error.is_some()
    });
    let detail = nack.error.expect("detail");
    assert!(detail.contains("query_parameters"), "{detail}");
    if delta {
        assert_eq!(
            nack.version, "2",
            "the NACK names the rejected response's nonce"
        );
    } else {
        assert_eq!(
            nack.version, "1",
            "a NACK carries the last accepted version"
        );
    }
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
fn xds_sotw_control_plane_restart_keeps_serving_and_resubscribes() {
    control_plane_restart(false);
}

#[test]
fn xds_delta_control_plane_restart_keeps_serving_and_resubscribes() {
    control_plane_restart(true);
}

fn control_plane_restart(delta: bool) {
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let mut cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        resources("1", port, &a, &b, route_to("r", "a")),
    );
    let cp_addr = cp.addr;
    let gw = gateway(cp_addr, delta);
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
    assert_eq!(first.version, "1");
    wait_served_by(&gw, port, "B");
    cp2.wait_request("ACK of version 2", |r| r.is_ack(LDS, "2"));
}

pub fn http_get_json(url: &str) -> serde_json::Value {
    let (ok, out, err) = curl(&["-s", url]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}
