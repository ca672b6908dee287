//! HttpConnectionManager `http_filters` → Sluice filter chain entries.
//!
//! Three kinds of filter are understood: `envoy.filters.http.wasm` (a proxy-wasm plugin, mapped
//! onto a `plugins:` entry plus a `plugin:` chain entry), Sluice's native filters addressed by a
//! `TypedStruct` whose type URL is `type.googleapis.com/sluice.filters.<name>` (the `value` is the
//! filter's config as in CONFIG.md), and the terminal router. Either of the first two may come
//! inline (`typed_config`) or through ECDS (`config_discovery`, a `TypedExtensionConfig` sent on
//! the ADS stream). Plugin code is resolved later, asynchronously ([`super::code`]): here it is
//! only described.
#![allow(deprecated)]

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier as AsyncSpecifier;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm;
use envoy_types::pb::envoy::extensions::wasm::v3::{FailurePolicy as PbFailurePolicy, VmConfig};
use envoy_types::pb::google::protobuf::{value::Kind, Any, BytesValue, StringValue, Struct, Value};
use prost::Name as _;

use super::mapping::{decode_any, err, reject_rest, MapError, ROUTER_FILTER};
use crate::config::model::{FailurePolicy, FilterRef, PluginConfig};

/// Type URL of an ECDS resource.
pub const EXTENSION_CONFIG_TYPE: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const TYPED_STRUCT_XDS: &str = "type.googleapis.com/xds.type.v3.TypedStruct";
const TYPED_STRUCT_UDPA: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
/// Type URLs of Sluice's native filters start with this; the filter name follows.
pub const NATIVE_PREFIX: &str = "type.googleapis.com/sluice.filters.";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
/// Sluice runs every module on wasmtime; these runtime names are all taken to mean "a wasm VM".
const RUNTIMES: &[&str] = &[
    "",
    "envoy.wasm.runtime.v8",
    "envoy.wasm.runtime.wasmtime",
    "envoy.wasm.runtime.wamr",
    "envoy.wasm.runtime.wavm",
];

/// `xds.type.v3.TypedStruct` / `udpa.type.v1.TypedStruct` (same wire shape), which envoy-types
/// does not generate.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Struct>,
}

/// Where a plugin's code comes from; turned into a local file before the config is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// `local.filename`: a file on the gateway's host.
    File(String),
    /// `local.inline_bytes` / `inline_string`: the module itself.
    Inline(Vec<u8>),
    /// `remote`: fetched over HTTP(S), checked against `sha256`, cached by digest.
    Remote {
        url: String,
        sha256: String,
        timeout: Duration,
    },
}

/// A wasm plugin described by xDS: the `plugins:` entry without its code, and where the code is.
#[derive(Clone, Debug)]
pub struct MappedPlugin {
    /// Its `wasm`/`url` are empty until the code is resolved.
    pub plugin: PluginConfig,
    pub code: Code,
}

/// One resolved chain entry.
#[derive(Clone, Debug)]
pub enum MappedFilter {
    Native(FilterRef),
    Wasm(Box<MappedPlugin>),
}

/// One entry of an HttpConnectionManager's filters, before ECDS is consulted.
#[derive(Clone, Debug)]
pub enum FilterSpec {
    Ready(MappedFilter),
    /// Configured by the `TypedExtensionConfig` named `name`; `default` serves until it arrives.
    Discovered {
        name: String,
        default: Option<MappedFilter>,
        type_urls: Vec<String>,
    },
}

impl MappedFilter {
    /// The chain entry referring to this filter.
    pub fn chain_entry(&self) -> FilterRef {
        match self {
            MappedFilter::Native(f) => f.clone(),
            MappedFilter::Wasm(p) => FilterRef {
                name: None,
                plugin: Some(p.plugin.name.clone()),
                config: None,
            },
        }
    }
}

/// The plugin name a filter's wasm code gets under `plugins:`: ECDS resources are shared by every
/// listener naming them, inline filters belong to one listener.
pub fn ecds_plugin_name(resource: &str) -> String {
    format!("ecds/{resource}")
}

fn inline_plugin_name(listener: &str, filter: &str) -> String {
    format!("xds/{listener}/{filter}")
}

/// Map an HttpConnectionManager's `http_filters`: every filter but the last (the router).
///
/// # Errors
/// A filter that is not the router, a wasm filter or a Sluice native filter; the router not last.
pub fn http_filters(
    filters: &[HttpFilter],
    listener: &str,
    what: &str,
) -> Result<Vec<FilterSpec>, MapError> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let last = i + 1 == filters.len();
        let is_router = f.name == ROUTER_FILTER
            || matches!(&f.config_type, Some(ConfigType::TypedConfig(a)) if a.type_url == ROUTER_TYPE);
        if is_router {
            if !last {
                return Err(err(
                    what,
                    format!("{ROUTER_FILTER} must be the last http_filter"),
                ));
            }
            continue;
        }
        let fwhat = format!("{what} http_filter \"{}\"", f.name);
        if f.is_optional || f.disabled {
            return Err(err(
                &fwhat,
                "is_optional and disabled are not supported by Sluice",
            ));
        }
        let plugin_name = inline_plugin_name(listener, &f.name);
        match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => {
                out.push(FilterSpec::Ready(typed_filter(any, &plugin_name, &fwhat)?))
            }
            Some(ConfigType::ConfigDiscovery(d)) => {
                let ads = matches!(
                    d.config_source
                        .as_ref()
                        .and_then(|c| c.config_source_specifier.as_ref()),
                    Some(ConfigSourceSpecifier::Ads(_))
                );
                if !ads {
                    return Err(err(
                        &fwhat,
                        "config_discovery needs config_source `ads` (Sluice has one ADS stream)",
                    ));
                }
                let default = match &d.default_config {
                    Some(any) => Some(typed_filter(any, &plugin_name, &fwhat)?),
                    None => None,
                };
                out.push(FilterSpec::Discovered {
                    name: f.name.clone(),
                    default,
                    type_urls: d.type_urls.clone(),
                });
            }
            None => return Err(err(&fwhat, "needs a typed_config or config_discovery")),
        }
    }
    Ok(out)
}

/// Map an ECDS resource. Its plugin, if wasm, is named [`ecds_plugin_name`].
///
/// # Errors
/// As an inline filter's typed_config; also a type not listed in the filter's `type_urls`.
pub fn extension_config(tec: &TypedExtensionConfig) -> Result<MappedFilter, MapError> {
    let what = format!("TypedExtensionConfig \"{}\"", tec.name);
    let Some(any) = &tec.typed_config else {
        return Err(err(&what, "needs a typed_config"));
    };
    typed_filter(any, &ecds_plugin_name(&tec.name), &what)
}

/// Whether an ECDS resource's type is one the filter allows (`type_urls` empty: any).
pub fn type_allowed(tec: &TypedExtensionConfig, type_urls: &[String]) -> bool {
    let Some(any) = &tec.typed_config else {
        return false;
    };
    let t = match TypedStruct::from_any(any) {
        Some(ts) => ts.type_url,
        None => any.type_url.clone(),
    };
    type_urls.is_empty() || type_urls.iter().any(|u| *u == t || *u == any.type_url)
}

impl TypedStruct {
    fn from_any(any: &Any) -> Option<TypedStruct> {
        use prost::Message as _;
        (any.type_url == TYPED_STRUCT_XDS || any.type_url == TYPED_STRUCT_UDPA)
            .then(|| TypedStruct::decode(any.value.as_slice()).ok())
            .flatten()
    }
}

/// A filter's `typed_config`: a Wasm filter or a native filter in a TypedStruct.
fn typed_filter(any: &Any, plugin_name: &str, what: &str) -> Result<MappedFilter, MapError> {
    if any.type_url == Wasm::type_url() {
        let w: Wasm = decode_any(any, what)?;
        let Some(pc) = &w.config else {
            return Err(err(what, "Wasm filter needs a config (PluginConfig)"));
        };
        return Ok(MappedFilter::Wasm(Box::new(plugin(pc, plugin_name, what)?)));
    }
    if any.type_url == TYPED_STRUCT_XDS || any.type_url == TYPED_STRUCT_UDPA {
        let ts =
            TypedStruct::from_any(any).ok_or_else(|| err(what, "TypedStruct does not decode"))?;
        let Some(name) = ts.type_url.strip_prefix(NATIVE_PREFIX) else {
            return Err(err(
                what,
                format!(
                    "TypedStruct type_url `{}` is not a Sluice filter ({NATIVE_PREFIX}<name>)",
                    ts.type_url
                ),
            ));
        };
        let config = ts
            .value
            .as_ref()
            .filter(|s| !s.fields.is_empty())
            .map(struct_to_json);
        return Ok(MappedFilter::Native(FilterRef {
            name: Some(name.to_string()),
            plugin: None,
            config,
        }));
    }
    Err(err(
        what,
        format!(
            "filter type `{}` is not supported (envoy.extensions.filters.http.wasm.v3.Wasm, or a TypedStruct of {NATIVE_PREFIX}<name>; see docs/xds.md)",
            any.type_url
        ),
    ))
}

/// `PluginConfig` fields, for rejection messages.
const PLUGIN_CONFIG: &[(u32, &str)] = &[
    (1, "name"),
    (2, "root_id"),
    (3, "vm_config"),
    (4, "configuration"),
    (5, "fail_open"),
    (6, "capability_restriction_config"),
    (7, "failure_policy"),
    (8, "reload_config"),
    (9, "allow_on_headers_stop_iteration"),
];
/// `VmConfig` fields.
const VM_CONFIG: &[(u32, &str)] = &[
    (1, "vm_id"),
    (2, "runtime"),
    (3, "code"),
    (4, "configuration"),
    (5, "allow_precompiled"),
    (6, "nack_on_code_cache_miss"),
    (7, "environment_variables"),
];

fn plugin(
    pc: &envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig,
    plugin_name: &str,
    what: &str,
) -> Result<MappedPlugin, MapError> {
    let mut rest = pc.clone();
    rest.name.clear();
    rest.root_id.clear();
    rest.vm = None;
    rest.configuration = None;
    rest.fail_open = false;
    rest.failure_policy = 0;
    reject_rest(&rest, PLUGIN_CONFIG, what, "PluginConfig")?;
    let failure_policy = match PbFailurePolicy::try_from(pc.failure_policy) {
        _ if pc.fail_open => FailurePolicy::FailOpen,
        Ok(PbFailurePolicy::Unspecified | PbFailurePolicy::FailClosed) => FailurePolicy::FailClosed,
        Ok(PbFailurePolicy::FailOpen) => FailurePolicy::FailOpen,
        Ok(PbFailurePolicy::FailReload) => FailurePolicy::FailReload,
        Err(_) => return Err(err(what, "unknown failure_policy")),
    };
    let Some(Vm::VmConfig(vm)) = &pc.vm else {
        return Err(err(what, "PluginConfig needs a vm_config"));
    };
    let (code, vm_config, allowed_env) = vm_config(vm, what)?;
    Ok(MappedPlugin {
        plugin: PluginConfig {
            name: plugin_name.to_string(),
            wasm: None,
            url: None,
            sha256: None,
            root_id: pc.root_id.clone(),
            vm_config,
            config: configuration(pc.configuration.as_ref(), what)?,
            failure_policy,
            limits: Default::default(),
            allowed_env,
        },
        code,
    })
}

type VmParts = (Code, Option<serde_json::Value>, Vec<String>);

fn vm_config(vm: &VmConfig, what: &str) -> Result<VmParts, MapError> {
    let mut rest = vm.clone();
    // Each Sluice plugin has its own VM per worker; a shared vm_id changes nothing observable
    // through the proxy-wasm ABI that Sluice implements (no shared root contexts across plugins).
    rest.vm_id.clear();
    rest.runtime.clear();
    rest.code = None;
    rest.configuration = None;
    // Sluice compiles bytecode itself; allowing precompiled code changes nothing for bytecode.
    rest.allow_precompiled = false;
    let mut allowed_env = Vec::new();
    if let Some(env) = &vm.environment_variables {
        if !env.key_values.is_empty() {
            return Err(err(
                what,
                "vm_config.environment_variables.key_values is not supported (host_env_keys is)",
            ));
        }
        allowed_env = env.host_env_keys.clone();
        rest.environment_variables = None;
    }
    reject_rest(&rest, VM_CONFIG, what, "VmConfig")?;
    if !RUNTIMES.contains(&vm.runtime.as_str()) {
        return Err(err(
            what,
            format!("vm_config.runtime `{}` is not a wasm runtime", vm.runtime),
        ));
    }
    let code = match vm.code.as_ref().and_then(|c| c.specifier.as_ref()) {
        Some(AsyncSpecifier::Local(ds)) => {
            if ds.watched_directory.is_some() {
                return Err(err(what, "code.local.watched_directory is not supported"));
            }
            match &ds.specifier {
                Some(Specifier::Filename(f)) => Code::File(f.clone()),
                Some(Specifier::InlineBytes(b)) => Code::Inline(b.clone()),
                Some(Specifier::InlineString(s)) => Code::Inline(s.clone().into_bytes()),
                _ => {
                    return Err(err(
                        what,
                        "code.local needs filename, inline_bytes or inline_string",
                    ))
                }
            }
        }
        Some(AsyncSpecifier::Remote(r)) => {
            if r.retry_policy.is_some() {
                return Err(err(what, "code.remote.retry_policy is not supported"));
            }
            let Some(uri) = &r.http_uri else {
                return Err(err(what, "code.remote needs an http_uri"));
            };
            if r.sha256.is_empty() {
                return Err(err(what, "code.remote needs a sha256"));
            }
            let timeout = uri
                .timeout
                .as_ref()
                .map(|d| {
                    Duration::new(
                        u64::try_from(d.seconds).unwrap_or(0),
                        u32::try_from(d.nanos).unwrap_or(0),
                    )
                })
                .filter(|d| !d.is_zero())
                .unwrap_or(crate::plugin_fetch::DEFAULT_FETCH_TIMEOUT);
            Code::Remote {
                url: uri.uri.clone(),
                sha256: r.sha256.clone(),
                timeout,
            }
        }
        None => return Err(err(what, "vm_config needs code (local or remote)")),
    };
    Ok((
        code,
        configuration(vm.configuration.as_ref(), what)?,
        allowed_env,
    ))
}

/// A plugin or VM `configuration`: StringValue and BytesValue (UTF-8) are passed as they are, a
/// Struct as JSON.
fn configuration(any: Option<&Any>, what: &str) -> Result<Option<serde_json::Value>, MapError> {
    let Some(any) = any else { return Ok(None) };
    if any.type_url == StringValue::type_url() {
        let s: StringValue = decode_any(any, what)?;
        return Ok(Some(serde_json::Value::String(s.value)));
    }
    if any.type_url == BytesValue::type_url() {
        let b: BytesValue = decode_any(any, what)?;
        let s = String::from_utf8(b.value)
            .map_err(|_| err(what, "a BytesValue configuration must be UTF-8"))?;
        return Ok(Some(serde_json::Value::String(s)));
    }
    if any.type_url == Struct::type_url() {
        let s: Struct = decode_any(any, what)?;
        return Ok(Some(struct_to_json(&s)));
    }
    Err(err(
        what,
        format!(
            "configuration of type `{}` is not supported (StringValue, BytesValue or Struct)",
            any.type_url
        ),
    ))
}

fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Struct numbers are doubles; whole ones read as integers so `burst: 200` stays 200.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests;
