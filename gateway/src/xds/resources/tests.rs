use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{Header, PolicySpecifier};
use envoy_types::pb::envoy::config::route::v3::route_action::{ClusterSpecifier, HashPolicy};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteMatch, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::util::pack_any;

use super::*;

fn addr(port: u32) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn ring_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        lb_policy: LbPolicy::RingHash as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(9000)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn listener(cluster: &str, hash_headers: &[&str]) -> Listener {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            hash_policy: hash_headers
                .iter()
                .map(|h| HashPolicy {
                    policy_specifier: Some(PolicySpecifier::Header(Header {
                        header_name: h.to_string(),
                        regex_rewrite: None,
                    })),
                    terminal: false,
                })
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inline".into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![route],
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    Listener {
        name: "l".into(),
        address: Some(addr(8080)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn held(l: Option<Listener>) -> Resources {
    let mut r = Resources::default();
    r.clusters.insert("h".into(), ring_cluster("h"));
    if let Some(l) = l {
        r.listeners.insert(l.name.clone(), l);
    }
    r
}

#[test]
fn ring_hash_cluster_takes_its_key_from_the_route_hash_policy() {
    let built = held(Some(listener("h", &["X-User"])))
        .build(&|_| false)
        .expect("builds");
    let c = &built.overlay.clusters[0];
    assert_eq!(c.load_balancing, LoadBalancing::RingHash);
    assert_eq!(
        c.hash_key.as_ref().map(|k| k.header.as_str()),
        Some("x-user")
    );
    assert_eq!(built.overlay.listeners.len(), 1);
}

#[test]
fn ring_hash_cluster_without_a_hash_policy_waits_or_is_rejected() {
    // No route uses it yet (CDS before LDS): it waits rather than failing the CDS update.
    let built = held(None).build(&|_| false).expect("builds");
    assert!(built.overlay.clusters.is_empty());
    assert!(built.overlay.status["waiting"][0]
        .as_str()
        .is_some_and(|w| w.contains("RING_HASH")));
    // A route to it without a header hash policy cannot pick a ring position.
    let e = held(Some(listener("h", &[])))
        .build(&|_| false)
        .expect_err("no hash policy");
    assert!(e.message.contains("hash_policy"), "{e}");
    let e = held(Some(listener("h", &["a", "b"])))
        .build(&|_| false)
        .expect_err("two policies");
    assert!(e.message.contains("one hash_policy"), "{e}");
}

fn ecds_listener(default: Option<Any>) -> Listener {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, ExtensionConfigSource,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_filter, HttpFilter,
    };
    let mut l = listener("h", &["x-user"]);
    let Some(filter::ConfigType::TypedConfig(any)) =
        l.filter_chains[0].filters[0].config_type.clone()
    else {
        panic!("typed config")
    };
    let mut hcm: HttpConnectionManager = mapping::decode_any(&any, "t").expect("hcm");
    hcm.http_filters = vec![HttpFilter {
        name: "ext".into(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
                default_config: default,
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    l.filter_chains[0].filters[0].config_type =
        Some(filter::ConfigType::TypedConfig(pack_any(hcm)));
    l
}

fn native(name: &str) -> Any {
    use prost::Message as _;
    #[derive(Clone, PartialEq, prost::Message)]
    struct TypedStruct {
        #[prost(string, tag = "1")]
        type_url: String,
    }
    Any {
        type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
        value: TypedStruct {
            type_url: format!("type.googleapis.com/sluice.filters.{name}"),
        }
        .encode_to_vec(),
    }
}

#[test]
fn a_listener_warms_until_its_extension_config_arrives_unless_it_has_a_default() {
    let warming = held(Some(ecds_listener(None)))
        .build(&|_| false)
        .expect("builds");
    assert!(warming.overlay.listeners.is_empty());
    assert_eq!(warming.ecds.iter().collect::<Vec<_>>(), ["ext"]);
    assert!(warming.overlay.status["waiting"]
        .as_array()
        .is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|s| s.contains("ECDS ext")))));

    let with_default = held(Some(ecds_listener(Some(native("request-id")))))
        .build(&|_| false)
        .expect("builds");
    assert_eq!(
        with_default.overlay.listeners[0].filters[0].name.as_deref(),
        Some("request-id")
    );

    let mut arrived = held(Some(ecds_listener(Some(native("request-id")))));
    arrived.extensions.insert(
        "ext".into(),
        TypedExtensionConfig {
            name: "ext".into(),
            typed_config: Some(native("cors")),
        },
    );
    let built = arrived.build(&|_| false).expect("builds");
    assert_eq!(
        built.overlay.listeners[0].filters[0].name.as_deref(),
        Some("cors")
    );
}

#[test]
fn delta_upserts_and_removes_one_resource_at_a_time_with_its_version() {
    let mut r = Resources::default();
    r.upsert(
        CLUSTER_TYPE,
        "sys-1",
        &[
            ("v1".into(), pack_any(ring_cluster("a"))),
            ("v7".into(), pack_any(ring_cluster("b"))),
        ],
    )
    .expect("upsert");
    assert_eq!(r.names(CLUSTER_TYPE), ["a", "b"]);
    assert_eq!(r.resource_versions[CLUSTER_TYPE]["b"], "v7");
    r.upsert(
        CLUSTER_TYPE,
        "sys-2",
        &[("v2".into(), pack_any(ring_cluster("a")))],
    )
    .expect("upsert");
    assert_eq!(
        r.names(CLUSTER_TYPE),
        ["a", "b"],
        "an upsert keeps the others"
    );
    assert_eq!(r.resource_versions[CLUSTER_TYPE]["a"], "v2");
    assert_eq!(r.version(CLUSTER_TYPE), "sys-2");
    r.remove(CLUSTER_TYPE, &["b".to_string()]);
    assert_eq!(r.names(CLUSTER_TYPE), ["a"]);
    assert!(!r.resource_versions[CLUSTER_TYPE].contains_key("b"));
    // A resource of another type in the response is refused whole.
    let e = r
        .upsert(
            CLUSTER_TYPE,
            "sys-3",
            &[("v3".into(), pack_any(listener("a", &[])))],
        )
        .expect_err("wrong type");
    assert!(e.message.contains("expected"), "{e}");
}
