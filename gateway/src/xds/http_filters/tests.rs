use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, AsyncDataSource, ConfigSource, DataSource, ExtensionConfigSource,
    HttpUri, RemoteDataSource,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig as PbPluginConfig;
use envoy_types::util::pack_any;
use prost::Message as _;

use super::*;

fn wasm_any(code: AsyncSpecifier, configuration: Option<Any>, policy: PbFailurePolicy) -> Any {
    pack_any(Wasm {
        config: Some(PbPluginConfig {
            name: "p".into(),
            root_id: "root".into(),
            configuration,
            failure_policy: policy as i32,
            vm: Some(Vm::VmConfig(VmConfig {
                vm_id: "vm".into(),
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

fn remote(url: &str) -> AsyncSpecifier {
    AsyncSpecifier::Remote(RemoteDataSource {
        http_uri: Some(HttpUri {
            uri: url.into(),
            timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 3,
                nanos: 0,
            }),
            http_upstream_type: None,
        }),
        sha256: "ab".repeat(32),
        retry_policy: None,
    })
}

fn filter(name: &str, any: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.into(),
        ..Default::default()
    }
}

fn typed_struct(type_url: &str, json: serde_json::Value) -> Any {
    let value = match crate::xds::client::json_to_value(&json).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    Any {
        type_url: TYPED_STRUCT_XDS.into(),
        value: TypedStruct {
            type_url: type_url.into(),
            value,
        }
        .encode_to_vec(),
    }
}

#[test]
fn wasm_filter_maps_onto_a_plugin_with_remote_code_and_struct_config() {
    let config = pack_any(
        match crate::xds::client::json_to_value(
            &serde_json::json!({"header": "x-hello", "value": "world", "n": 3}),
        )
        .kind
        {
            Some(Kind::StructValue(s)) => s,
            _ => Struct::default(),
        },
    );
    let filters = vec![
        filter(
            "wasm",
            wasm_any(
                remote("http://127.0.0.1:1/p.wasm"),
                Some(config),
                PbFailurePolicy::FailOpen,
            ),
        ),
        router(),
    ];
    let out = http_filters(&filters, "l", "Listener \"l\"").expect("maps");
    let [FilterSpec::Ready(MappedFilter::Wasm(p))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(p.plugin.name, "xds/l/wasm");
    assert_eq!(p.plugin.root_id, "root");
    assert_eq!(p.plugin.failure_policy, FailurePolicy::FailOpen);
    assert_eq!(
        p.plugin.config,
        Some(serde_json::json!({"header": "x-hello", "value": "world", "n": 3}))
    );
    assert_eq!(
        p.code,
        Code::Remote {
            url: "http://127.0.0.1:1/p.wasm".into(),
            sha256: "ab".repeat(32),
            timeout: Duration::from_secs(3)
        }
    );
}

#[test]
fn string_configuration_and_inline_code() {
    let cfg = pack_any(StringValue {
        value: "plain text".into(),
    });
    let code = AsyncSpecifier::Local(DataSource {
        specifier: Some(Specifier::InlineBytes(b"\0asm".to_vec())),
        watched_directory: None,
    });
    let out = http_filters(
        &[filter(
            "w",
            wasm_any(code, Some(cfg), PbFailurePolicy::Unspecified),
        )],
        "l",
        "L",
    )
    .expect("maps");
    let [FilterSpec::Ready(MappedFilter::Wasm(p))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(p.plugin.config, Some(serde_json::json!("plain text")));
    assert_eq!(p.plugin.failure_policy, FailurePolicy::FailClosed);
    assert_eq!(p.code, Code::Inline(b"\0asm".to_vec()));
}

#[test]
fn unsupported_plugin_fields_and_filter_types_are_rejected_by_name() {
    let mut any = wasm_any(
        remote("http://x/p.wasm"),
        None,
        PbFailurePolicy::Unspecified,
    );
    let mut w: Wasm = decode_any(&any, "t").expect("decode");
    if let Some(c) = w.config.as_mut() {
        c.reload_config = Some(Default::default());
    }
    any = pack_any(w);
    let e = http_filters(&[filter("w", any)], "l", "L").expect_err("reload_config");
    assert!(e.message.contains("reload_config"), "{e}");
    let e = http_filters(
        &[filter(
            "lua",
            Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua".into(),
                value: Vec::new(),
            },
        )],
        "l",
        "L",
    )
    .expect_err("lua");
    assert!(e.message.contains("lua.v3.Lua"), "{e}");
    let e = http_filters(
        &[
            router(),
            filter(
                "w",
                typed_struct(
                    "type.googleapis.com/sluice.filters.headers",
                    serde_json::json!({}),
                ),
            ),
        ],
        "l",
        "L",
    )
    .expect_err("router first");
    assert!(e.message.contains("last"), "{e}");
}

#[test]
fn native_filters_come_from_a_typed_struct() {
    let any = typed_struct(
        "type.googleapis.com/sluice.filters.local-rate-limit",
        serde_json::json!({"requests_per_second": 100, "burst": 200}),
    );
    let out = http_filters(&[filter("rl", any), router()], "l", "L").expect("maps");
    let [FilterSpec::Ready(MappedFilter::Native(f))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(f.name.as_deref(), Some("local-rate-limit"));
    assert_eq!(
        f.config,
        Some(serde_json::json!({"requests_per_second": 100, "burst": 200}))
    );
    let e = http_filters(
        &[filter(
            "x",
            typed_struct("type.googleapis.com/other.Thing", serde_json::json!({})),
        )],
        "l",
        "L",
    )
    .expect_err("not sluice");
    assert!(e.message.contains("other.Thing"), "{e}");
}

#[test]
fn config_discovery_needs_ads_and_keeps_the_default() {
    let discovery = |source: Option<ConfigSource>| HttpFilter {
        name: "ext".into(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: source,
                default_config: Some(typed_struct(
                    "type.googleapis.com/sluice.filters.request-id",
                    serde_json::json!({}),
                )),
                apply_default_config_without_warming: false,
                type_urls: vec![Wasm::type_url()],
            },
        )),
        ..Default::default()
    };
    let ads = ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    };
    let out = http_filters(&[discovery(Some(ads))], "l", "L").expect("maps");
    let [FilterSpec::Discovered {
        name,
        default: Some(MappedFilter::Native(d)),
        type_urls,
    }] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(name, "ext");
    assert_eq!(d.name.as_deref(), Some("request-id"));
    assert_eq!(type_urls, &vec![Wasm::type_url()]);
    let e = http_filters(&[discovery(None)], "l", "L").expect_err("no ads");
    assert!(e.message.contains("ads"), "{e}");
    // An ECDS resource of a type the filter does not list is refused.
    let tec = TypedExtensionConfig {
        name: "ext".into(),
        typed_config: Some(typed_struct(
            "type.googleapis.com/sluice.filters.headers",
            serde_json::json!({}),
        )),
    };
    assert!(!type_allowed(&tec, &[Wasm::type_url()]));
    assert!(type_allowed(
        &tec,
        &["type.googleapis.com/sluice.filters.headers".to_string()]
    ));
    let MappedFilter::Native(f) = extension_config(&tec).expect("maps") else {
        panic!("native")
    };
    assert_eq!(f.name.as_deref(), Some("headers"));
}
