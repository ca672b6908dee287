#![allow(deprecated)]

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
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
