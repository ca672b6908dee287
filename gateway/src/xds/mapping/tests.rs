#![allow(deprecated)]

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::SocketAddress;
use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::route::v3::{QueryParameterMatcher, RouteMatch, VirtualHost};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::*;

fn prefix_route(prefix: &str, cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

#[test]
fn virtual_hosts_flatten_in_envoy_domain_precedence() {
    let rc = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("any", &["*"], vec![prefix_route("/", "fallback")]),
            vhost("wild", &["*.example.com"], vec![prefix_route("/", "wild")]),
            vhost(
                "api",
                &["api.example.com"],
                vec![prefix_route("/v1", "api")],
            ),
        ],
        ..Default::default()
    };
    let routes = route_configuration(&rc).expect("maps");
    let got: Vec<(Option<&str>, Option<&str>)> = routes
        .iter()
        .map(|r| (r.matcher.host.as_deref(), r.cluster.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("api.example.com"), Some("api")),
            (Some("*.example.com"), Some("wild")),
            (None, Some("fallback")),
        ]
    );
}

#[test]
fn an_unsupported_field_is_named_in_the_error() {
    let mut r = prefix_route("/", "a");
    if let Some(m) = r.r#match.as_mut() {
        m.query_parameters = vec![QueryParameterMatcher {
            name: "q".into(),
            ..Default::default()
        }];
    }
    let rc = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost("v", &["*"], vec![r])],
        ..Default::default()
    };
    let e = route_configuration(&rc).expect_err("must be rejected");
    assert!(e.to_string().contains("RouteMatch.query_parameters"), "{e}");
}

#[test]
fn set_fields_lists_field_numbers_of_every_wire_type() {
    let c = Cluster {
        name: "x".into(), // 1, length-delimited
        lb_policy: 3,     // 6, varint
        per_connection_buffer_limit_bytes: Some(UInt32Value { value: 5 }), // 5, message
        ..Default::default()
    };
    assert_eq!(set_fields(&c.encode_to_vec()), vec![1, 5, 6]);
}

#[test]
fn eds_cluster_waits_for_its_assignment_and_maps_lb_and_http2() {
    let c = Cluster {
        name: "svc".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        lb_policy: LbPolicy::LeastRequest as i32,
        http2_protocol_options: Some(Default::default()),
        ..Default::default()
    };
    let m = cluster(&c).expect("maps");
    assert_eq!(m.eds.as_deref(), Some("svc"));
    assert_eq!(m.cluster.load_balancing, LoadBalancing::LeastRequest);
    assert_eq!(m.cluster.protocol, Protocol::Http2);
    let mut bad = c.clone();
    bad.lb_policy = LbPolicy::Maglev as i32;
    assert!(cluster(&bad).is_err());
}

fn weighted_assignment(endpoints: &[(u16, Option<u32>, HealthStatus)]) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|&(port, weight, health)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(port.into())),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: health as i32,
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: "svc".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn endpoint_weights_map_onto_the_file_model() {
    use HealthStatus::{Healthy, Unhealthy, Unknown};
    let got = |eps: &[(u16, Option<u32>, HealthStatus)]| -> Vec<(String, u32)> {
        cluster_load_assignment(&weighted_assignment(eps), "EDS")
            .expect("maps")
            .into_iter()
            .map(|e| (e.address, e.weight))
            .collect()
    };
    // Different weights are kept (divided by their common divisor); unhealthy ones are left out.
    assert_eq!(
        got(&[
            (1, Some(30), Healthy),
            (2, Some(10), Unknown),
            (3, Some(50), Unhealthy)
        ]),
        [("10.0.0.1:1".to_string(), 3), ("10.0.0.1:2".to_string(), 1)]
    );
    // Equal weights, set or not, are the default weight.
    assert_eq!(
        got(&[(1, Some(7), Healthy), (2, Some(7), Healthy)]),
        [("10.0.0.1:1".to_string(), 1), ("10.0.0.1:2".to_string(), 1)]
    );
    assert_eq!(got(&[(1, None, Healthy)]), [("10.0.0.1:1".to_string(), 1)]);
    // Ratios beyond the file model's range are scaled into it.
    assert_eq!(
        got(&[
            (1, Some(1000), Healthy),
            (2, Some(1), Healthy),
            (3, Some(500), Healthy)
        ]),
        [
            ("10.0.0.1:1".to_string(), MAX_ENDPOINT_WEIGHT),
            ("10.0.0.1:2".to_string(), 1),
            ("10.0.0.1:3".to_string(), 64)
        ]
    );
    let zero = cluster_load_assignment(&weighted_assignment(&[(1, Some(0), Healthy)]), "EDS");
    assert!(zero.is_err_and(|e| e.to_string().contains("at least 1")));
}
