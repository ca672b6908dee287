//! xDS HTTP filters: a wasm plugin delivered by ECDS (remote code fetched over HTTP and checked
//! by sha256) swapped under load, bad code NACKed while the old plugin serves, and a Sluice native
//! filter addressed by a TypedStruct. SotW and Delta.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier as AsyncSpecifier;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, AsyncDataSource, ConfigSource, ExtensionConfigSource, HttpUri,
    RemoteDataSource, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use envoy_types::util::pack_any;
use prost::{Message as _, Name as _};

use crate::load::Load;
use crate::support::*;
use crate::xds::*;
use crate::xds_cp::*;

fn plugin_bytes(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins.sh)", p.display()))
}

/// `module` with a custom section holding a random tag: the same code with a digest of its own,
/// so this run's fetches are real even though the code cache outlives test runs.
fn tagged(mut module: Vec<u8>) -> Vec<u8> {
    let tag = format!("{:016x}", rand::random::<u64>());
    let name = b"sluice-test";
    let size = 1 + name.len() + tag.len();
    module.push(0);
    module.push(u8::try_from(size).expect("a one-byte LEB128 size"));
    module.push(u8::try_from(name.len()).expect("name length"));
    module.extend_from_slice(name);
    module.extend_from_slice(tag.as_bytes());
    module
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

fn structure(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

/// A Wasm filter config whose code is `url` with digest `sha`, configured with `config`.
fn wasm(url: &str, sha: &str, config: Struct) -> Any {
    pack_any(Wasm {
        config: Some(PluginConfig {
            name: "swap".into(),
            configuration: Some(pack_any(config)),
            vm: Some(Vm::VmConfig(VmConfig {
                runtime: "envoy.wasm.runtime.v8".into(),
                code: Some(AsyncDataSource {
                    specifier: Some(AsyncSpecifier::Remote(RemoteDataSource {
                        http_uri: Some(HttpUri {
                            uri: url.into(),
                            timeout: Some(envoy_types::pb::google::protobuf::Duration {
                                seconds: 5,
                                nanos: 0,
                            }),
                            http_upstream_type: None,
                        }),
                        sha256: sha.into(),
                        retry_policy: None,
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
    })
}

/// `sluice.filters.headers` adding a response header, as an `xds.type.v3.TypedStruct`.
fn native_headers() -> Any {
    #[derive(Clone, PartialEq, prost::Message)]
    struct TypedStruct {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Struct>,
    }
    let header = Value {
        kind: Some(Kind::StructValue(structure(&[
            ("name", "x-native"),
            ("value", "yes"),
        ]))),
    };
    let list = Value {
        kind: Some(Kind::ListValue(
            envoy_types::pb::google::protobuf::ListValue {
                values: vec![header],
            },
        )),
    };
    let add = Struct {
        fields: [("add".to_string(), list)].into(),
    };
    let value = Struct {
        fields: [(
            "response".to_string(),
            Value {
                kind: Some(Kind::StructValue(add)),
            },
        )]
        .into(),
    };
    Any {
        type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
        value: TypedStruct {
            type_url: "type.googleapis.com/sluice.filters.headers".into(),
            value: Some(value),
        }
        .encode_to_vec(),
    }
}

/// Listener `xds` with a native headers filter and the ECDS filter `plugin`; `ext` its config.
fn with_ecds(version: &str, port: u16, a: &Upstream, b: &Upstream, ext: Any) -> Resources {
    let mut res = resources(version, port, a, b, route_to("r", "a"));
    let filters = vec![
        HttpFilter {
            name: "native".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(native_headers())),
            ..Default::default()
        },
        HttpFilter {
            name: "plugin".into(),
            config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                ExtensionConfigSource {
                    config_source: Some(ConfigSource {
                        config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                            AggregatedConfigSource {},
                        )),
                        ..Default::default()
                    }),
                    type_urls: vec![Wasm::type_url()],
                    ..Default::default()
                },
            )),
            ..Default::default()
        },
    ];
    res.by_type.insert(
        LDS,
        vec![(
            "xds".to_string(),
            listener_with("xds", port, "main", filters),
        )],
    );
    res.by_type.insert(
        ECDS,
        vec![(
            "plugin".to_string(),
            pack_any(TypedExtensionConfig {
                name: "plugin".into(),
                typed_config: Some(ext),
            }),
        )],
    );
    res
}

/// Wait until a response from the xDS listener satisfies `f`.
fn wait_for(gw: &Gateway, port: u16, what: &str, f: impl Fn(&Resp) -> bool) -> Resp {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match get_at(port) {
            Ok(r) if f(&r) => return r,
            Ok(r) => last = format!("{} {:?}", r.status, r.headers),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never saw {what}; last: {last}\nlog:\n{}", gw.log());
}

fn wait_header(gw: &Gateway, port: u16, name: &str, value: &str) -> Resp {
    wait_for(gw, port, &format!("{name}: {value}"), |r| {
        r.header(name) == Some(value)
    })
}

#[test]
fn xds_sotw_ecds_swaps_a_wasm_plugin_under_load_and_nacks_bad_code() {
    ecds_swap(false);
}

#[test]
fn xds_delta_ecds_swaps_a_wasm_plugin_under_load_and_nacks_bad_code() {
    ecds_swap(true);
}

fn ecds_swap(delta: bool) {
    let add_header = tagged(plugin_bytes("add_header.wasm"));
    let rs_config = tagged(plugin_bytes("rs_config.wasm"));
    let (sha_a, sha_b) = (sha256_hex(&add_header), sha256_hex(&rs_config));
    let code = CodeServer::start(vec![
        ("add_header.wasm".into(), add_header),
        ("rs_config.wasm".into(), rs_config),
        (
            "not_wasm.wasm".into(),
            b"this is not a wasm module".to_vec(),
        ),
    ]);
    let (a, b) = (Upstream::start("A"), Upstream::start("B"));
    let port = free_port();
    let hello = |v: &str| structure(&[("header", "x-hello"), ("value", v)]);
    let v1 = wasm(&code.url("add_header.wasm"), &sha_a, hello("one"));
    let cp = ControlPlane::start(
        "127.0.0.1:0".parse().unwrap(),
        with_ecds("1", port, &a, &b, v1),
    );
    let gw = gateway(cp.addr, delta);
    let r = wait_header(&gw, port, "x-hello", "one");
    assert_eq!(
        r.header("x-native"),
        Some("yes"),
        "the native filter runs too"
    );
    assert_eq!(r.header("x-upstream"), Some("A"));
    cp.wait_request("ECDS subscription by name", |r| {
        r.type_url == ECDS && r.subscribe == ["plugin"]
    });
    cp.wait_request("ECDS ACK of version 1", |r| r.is_ack(ECDS, "1"));
    let fetches = code.hits.load(Ordering::SeqCst);
    assert_eq!(fetches, 1, "the code was fetched once");
    let cfg = http_get_json(&gw.admin_url("/config"));
    assert_eq!(cfg["xds"]["extension_configs"][0], "plugin", "{cfg}");

    // Swap the plugin's code (add_header → rs_config) under load: no request fails, and the
    // behaviour switches (rs_config does not set x-hello; it echoes its configuration).
    let load = Load::start_watching(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "/",
        4,
        200,
        Some("x-hello"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let v2 = wasm(&code.url("rs_config.wasm"), &sha_b, hello("two"));
    cp.push(with_ecds("2", port, &a, &b, v2));
    wait_for(&gw, port, "rs_config answering", |r| {
        r.header("x-hello").is_none() && r.header("x-config-plugin").is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert!(report.ok > 0);
    assert_eq!(
        report.failed, 0,
        "failed during the swap: {:?}",
        report.errors
    );
    assert!(
        report.header_values.contains(&"one".to_string()),
        "{:?}",
        report.header_values
    );
    assert!(
        report.header_values.contains(&"<none>".to_string()),
        "{:?}",
        report.header_values
    );
    cp.wait_request("ECDS ACK of version 2", |r| r.is_ack(ECDS, "2"));

    // Bad digest: NACK naming it; rs_config keeps serving.
    let bad = wasm(
        &code.url("add_header.wasm"),
        &"0".repeat(64),
        hello("three"),
    );
    let mark = cp.mark();
    cp.push(with_ecds("3", port, &a, &b, bad));
    let nack = cp.wait_request_since(mark, "NACK of the bad digest", |r| {
        r.type_url == ECDS && r.error.is_some()
    });
    let detail = nack.error.unwrap_or_default();
    assert!(detail.contains("sha256"), "{detail}");
    for _ in 0..10 {
        let r = get_at(port).expect("request");
        assert!(r.header("x-config-plugin").is_some());
        assert_eq!(r.header("x-hello"), None);
    }
    // Not a wasm module (its digest right): NACK from the compile; rs_config keeps serving.
    let junk = b"this is not a wasm module";
    let not_wasm = wasm(&code.url("not_wasm.wasm"), &sha256_hex(junk), hello("four"));
    let mark = cp.mark();
    cp.push(with_ecds("4", port, &a, &b, not_wasm));
    let nack = cp.wait_request_since(mark, "NACK of the module that is not wasm", |r| {
        r.type_url == ECDS && r.error.is_some()
    });
    let detail = nack.error.unwrap_or_default();
    assert!(
        detail.contains("ecds/plugin"),
        "the NACK names the plugin: {detail}"
    );
    let r = get_at(port).expect("request");
    assert!(r.header("x-config-plugin").is_some());
    // Back to add_header: served from the disk cache, no new fetch.
    let before = code.hits.load(Ordering::SeqCst);
    let v5 = wasm(&code.url("add_header.wasm"), &sha_a, hello("five"));
    cp.push(with_ecds("5", port, &a, &b, v5));
    wait_header(&gw, port, "x-hello", "five");
    assert_eq!(
        code.hits.load(Ordering::SeqCst),
        before,
        "cached code is not fetched again"
    );
}

/// The config file's `url:` + `sha256:` plugins go through the same fetch, check and cache.
#[test]
fn plugin_url_in_the_config_file_is_fetched_and_checked_by_sha256() {
    let module = tagged(plugin_bytes("add_header.wasm"));
    let sha = sha256_hex(&module);
    let code = CodeServer::start(vec![("add_header.wasm".into(), module)]);
    let gw = Gateway::start(&format!(
        r#"
plugins:
  - name: remote
    url: "{}"
    sha256: "{sha}"
    config: {{ header: x-hello, value: remote }}
listeners:
  - name: main
    address: "127.0.0.1:{{PORT}}"
    filters: [{{ plugin: remote }}]
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "ok" }}
"#,
        code.url("add_header.wasm")
    ));
    let r = get(&gw, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hello"), Some("remote"), "{}", gw.log());
    assert_eq!(code.hits.load(Ordering::SeqCst), 1);
}
