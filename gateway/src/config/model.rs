//! The file model: exactly the schema of CONFIG.md, parsed with serde and `deny_unknown_fields`.
//!
//! Nothing here is validated beyond its shape; `validate` turns a [`FileConfig`] into the checked
//! [`crate::config::Config`]. Every default is a named constant with its unit.

use serde::{Deserialize, Serialize};

use super::units::{Dur, Size};

pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
pub const DEFAULT_HEADER_READ_TIMEOUT: Dur = Dur::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Dur = Dur::from_secs(60);
pub const DEFAULT_MAX_REQUEST_HEADERS_SIZE: Size = Size::kib(64);
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: Size = Size::mib(10);
pub const DEFAULT_ROUTE_TIMEOUT: Dur = Dur::from_secs(15);
pub const DEFAULT_CONNECT_TIMEOUT: Dur = Dur::from_secs(1);
pub const DEFAULT_POOL_MAX_IDLE: u32 = 64;
pub const DEFAULT_POOL_IDLE_TIMEOUT: Dur = Dur::from_secs(60);
pub const DEFAULT_DNS_REFRESH: Dur = Dur::from_secs(30);
pub const DEFAULT_DRAIN_TIMEOUT: Dur = Dur::from_secs(30);
pub const DEFAULT_HC_INTERVAL: Dur = Dur::from_secs(2);
pub const DEFAULT_HC_TIMEOUT: Dur = Dur::from_secs(1);
pub const DEFAULT_HC_UNHEALTHY: u32 = 3;
pub const DEFAULT_HC_HEALTHY: u32 = 2;
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_RETRY_MIN_PER_SECOND: u32 = 10;
pub const DEFAULT_PLUGIN_MEMORY: Size = Size::mib(64);
pub const DEFAULT_PLUGIN_CALLBACK_TIMEOUT: Dur = Dur::from_millis(100);
pub const DEFAULT_BAN_TTL: Dur = Dur::from_secs(600);

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub admin: AdminConfig,
    /// Worker threads, each with its own SO_REUSEPORT listener. Default: number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting. Default 30s.
    #[serde(default)]
    pub drain_timeout: Option<Dur>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub xdp: Option<XdpConfig>,
    #[serde(default)]
    pub xds: Option<XdsConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Diagnostics meant for operators (off by default).
    #[serde(default)]
    pub debug: Option<DebugConfig>,
}

/// `debug:` — operator aids, off by default.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    /// Response header naming the config version that served each request
    /// (e.g. `x-sluice-config-version`). Off when absent.
    #[serde(default)]
    pub config_version_header: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_address")]
    pub address: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    DEFAULT_ADMIN_ADDRESS.to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: String,
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    #[serde(default)]
    pub limits: ListenerLimits,
    #[serde(default)]
    pub filters: Vec<FilterRef>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Http1, Protocol::Http2]
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    pub certificates: Vec<CertificateConfig>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub min_version: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
    /// A DER OCSP response for this certificate, stapled to handshakes of clients that ask
    /// for one (`status_request`). Refreshed by whatever fetches it (e.g. a cron job running
    /// `openssl ocsp`); Sluice re-reads it when it changes, like the certificate.
    #[serde(default)]
    pub ocsp: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    #[serde(default = "d_max_conn")]
    pub max_connections: u32,
    #[serde(default = "d_hrt")]
    pub header_read_timeout: Dur,
    #[serde(default = "d_idle")]
    pub idle_timeout: Dur,
    #[serde(default = "d_mrhs")]
    pub max_request_headers_size: Size,
    #[serde(default = "d_mrbs")]
    pub max_request_body_size: Size,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_request_headers_size: DEFAULT_MAX_REQUEST_HEADERS_SIZE,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
        }
    }
}

fn d_max_conn() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn d_hrt() -> Dur {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn d_idle() -> Dur {
    DEFAULT_IDLE_TIMEOUT
}
fn d_mrhs() -> Size {
    DEFAULT_MAX_REQUEST_HEADERS_SIZE
}
fn d_mrbs() -> Size {
    DEFAULT_MAX_REQUEST_BODY_SIZE
}

/// One entry of a filter chain: a native filter (`name:`) or a wasm plugin (`plugin:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRef {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub plugin: Option<String>,
    /// Filter config (native: a mapping), or a per-use plugin config overriding the plugin's.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matcher: RouteMatchConfig,
    #[serde(default)]
    pub filters: Vec<FilterRef>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    #[serde(default)]
    pub direct_response: Option<DirectResponseConfig>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub retries: Option<RetryConfig>,
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatchConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub https_redirect: bool,
    /// 301, 302, 303, 307 or 308. Default 301.
    #[serde(default)]
    pub status: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderValueConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueConfig {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    #[serde(rename = "5xx")]
    FiveXx,
    GatewayError,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Retries allowed as a percentage of active requests to the cluster (Envoy's retry budget).
    #[serde(default)]
    pub budget_percent: Option<u32>,
    /// Retries always allowed per second regardless of the budget.
    #[serde(default)]
    pub min_retries_per_second: Option<u32>,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset]
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default)]
    pub hash_key: Option<HashKeyConfig>,
    #[serde(default = "default_cluster_protocol")]
    pub protocol: Protocol,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// How often DNS names among `endpoints` are re-resolved. Default 30s.
    #[serde(default)]
    pub dns_refresh: Option<Dur>,
}

/// One entry of a cluster's `endpoints:` list: `"host:port"`, or
/// `{ address: "host:port", weight: 3 }` when the endpoint takes a larger share of the traffic.
///
/// A DNS name's addresses each get the entry's weight (as Envoy's STRICT_DNS does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port`, a DNS name or an address literal.
    pub address: String,
    /// Relative share of the traffic, [`MIN_ENDPOINT_WEIGHT`]..=[`MAX_ENDPOINT_WEIGHT`];
    /// [`DEFAULT_ENDPOINT_WEIGHT`] when the entry is a plain string.
    pub weight: u32,
}

/// The weight of an endpoint written as a plain string.
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;
/// The smallest endpoint weight (0 would mean "no traffic": remove the endpoint instead).
pub const MIN_ENDPOINT_WEIGHT: u32 = 1;
/// The largest endpoint weight: enough for any ratio a user means, and it bounds the balancer's
/// tables (round-robin rounds, hash-ring points).
pub const MAX_ENDPOINT_WEIGHT: u32 = 128;

impl EndpointConfig {
    /// An endpoint of the default weight.
    pub fn new(address: impl Into<String>) -> EndpointConfig {
        EndpointConfig {
            address: address.into(),
            weight: DEFAULT_ENDPOINT_WEIGHT,
        }
    }
}

impl From<&str> for EndpointConfig {
    fn from(address: &str) -> Self {
        EndpointConfig::new(address)
    }
}

impl From<String> for EndpointConfig {
    fn from(address: String) -> Self {
        EndpointConfig::new(address)
    }
}

/// The mapping form of an endpoint; its own struct so that serde's messages for unknown or
/// missing keys (`adress`, no `address`) name the valid keys like everywhere else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedEndpoint {
    address: String,
    #[serde(default = "d_endpoint_weight")]
    weight: u32,
}

fn d_endpoint_weight() -> u32 {
    DEFAULT_ENDPOINT_WEIGHT
}

impl<'de> Deserialize<'de> for EndpointConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EndpointConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`host:port` or a mapping like `{ address: \"host:port\", weight: 3 }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointConfig, E> {
                Ok(EndpointConfig::new(v))
            }
            // Other shapes get a message with a fix (after `; `, see serde_errors.rs).
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EndpointConfig, E> {
                Err(not_an_endpoint(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EndpointConfig, E> {
                Err(not_an_endpoint(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<EndpointConfig, E> {
                Err(not_an_endpoint(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<EndpointConfig, E> {
                Err(not_an_endpoint(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<EndpointConfig, E> {
                Err(not_an_endpoint("null"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<EndpointConfig, A::Error> {
                Err(not_an_endpoint("a list"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EndpointConfig, A::Error> {
                let w = WeightedEndpoint::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(EndpointConfig {
                    address: w.address,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn not_an_endpoint<E: serde::de::Error>(found: impl std::fmt::Display) -> E {
    E::custom(format!(
        "endpoint `{found}` is neither `host:port` nor a mapping; write e.g. \"10.0.0.1:8080\" or {{ address: \"10.0.0.1:8080\", weight: 2 }}"
    ))
}

impl Serialize for EndpointConfig {
    /// The form the user would write: a plain string unless the weight is not the default.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.weight == DEFAULT_ENDPOINT_WEIGHT {
            return s.serialize_str(&self.address);
        }
        let mut m = s.serialize_struct("EndpointConfig", 2)?;
        m.serialize_field("address", &self.address)?;
        m.serialize_field("weight", &self.weight)?;
        m.end()
    }
}

fn default_cluster_protocol() -> Protocol {
    Protocol::Http1
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashKeyConfig {
    pub header: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default = "d_pool_idle")]
    pub max_idle_per_endpoint: u32,
    #[serde(default = "d_pool_idle_timeout")]
    pub idle_timeout: Dur,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_idle_per_endpoint: DEFAULT_POOL_MAX_IDLE,
            idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
        }
    }
}

fn d_pool_idle() -> u32 {
    DEFAULT_POOL_MAX_IDLE
}
fn d_pool_idle_timeout() -> Dur {
    DEFAULT_POOL_IDLE_TIMEOUT
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: String,
    #[serde(default = "d_hc_interval")]
    pub interval: Dur,
    #[serde(default = "d_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "d_hc_unhealthy")]
    pub unhealthy_threshold: u32,
    #[serde(default = "d_hc_healthy")]
    pub healthy_threshold: u32,
}

fn d_hc_interval() -> Dur {
    DEFAULT_HC_INTERVAL
}
fn d_hc_timeout() -> Dur {
    DEFAULT_HC_TIMEOUT
}
fn d_hc_unhealthy() -> u32 {
    DEFAULT_HC_UNHEALTHY
}
fn d_hc_healthy() -> u32 {
    DEFAULT_HC_HEALTHY
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    #[default]
    FailClosed,
    FailOpen,
    FailReload,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub wasm: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub root_id: String,
    #[serde(default)]
    pub vm_config: Option<serde_json::Value>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub limits: PluginLimits,
    #[serde(default)]
    pub allowed_env: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default = "d_plugin_mem")]
    pub memory: Size,
    #[serde(default = "d_plugin_cb")]
    pub callback_timeout: Dur,
    /// Optional instruction budget per callback (wasmtime fuel).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Largest body a plugin may buffer when it pauses on body.
    #[serde(default)]
    pub max_buffered_body: Option<Size>,
    /// Longest a plugin may hold a stream paused before its failure policy applies.
    #[serde(default)]
    pub pause_timeout: Option<Dur>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory: DEFAULT_PLUGIN_MEMORY,
            callback_timeout: DEFAULT_PLUGIN_CALLBACK_TIMEOUT,
            fuel: None,
            max_buffered_body: None,
            pause_timeout: None,
        }
    }
}

fn d_plugin_mem() -> Size {
    DEFAULT_PLUGIN_MEMORY
}
fn d_plugin_cb() -> Dur {
    DEFAULT_PLUGIN_CALLBACK_TIMEOUT
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Auto,
    Driver,
    Skb,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdpConfig {
    pub interface: String,
    #[serde(default)]
    pub mode: XdpMode,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub deny_files: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<XdpRateLimit>,
    #[serde(default)]
    pub syn_rate_limit: Option<XdpSynRateLimit>,
    #[serde(default)]
    pub redirect: Vec<XdpRedirect>,
    #[serde(default)]
    pub ban_default_ttl: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdpRateLimit {
    pub packets_per_second: u64,
    #[serde(default)]
    pub burst: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSynRateLimit {
    pub per_second: u64,
    #[serde(default)]
    pub burst: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdpRedirect {
    #[serde(rename = "match")]
    pub matcher: XdpRedirectMatch,
    #[serde(default)]
    pub to_interface: Option<String>,
    /// Send the packet back out of the interface it came in on (XDP_TX).
    #[serde(default)]
    pub tx: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdpRedirectMatch {
    pub protocol: String,
    #[serde(default)]
    pub dst_port: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsConfig {
    pub server: String,
    pub node: XdsNode,
    #[serde(default)]
    pub delta: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsNode {
    pub id: String,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `stdout`, `stderr` or a file path.
    #[serde(default = "default_access_log_path")]
    pub path: String,
    /// Only `json` for now.
    #[serde(default = "default_access_log_format")]
    pub format: String,
}

fn default_access_log_path() -> String {
    "stdout".to_string()
}
fn default_access_log_format() -> String {
    "json".to_string()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Where spans go (`http://host:4317` for gRPC, `http://host:4318` for HTTP); none: off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of requests without a sampled parent that are traced (0..=1, default 0.01).
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// One child span per filter and plugin phase that runs (default false).
    #[serde(default)]
    pub filter_spans: bool,
    /// `service.name` of the exported resource (default `sluice`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Trace-context formats read and written: `w3c` (default), `b3`, `b3multi`.
    #[serde(default)]
    pub propagation: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_true")]
    pub prometheus: bool,
    /// Where to push every /metrics series over OTLP; none: no push.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub otlp_protocol: Option<String>,
    /// Time between pushes (default 10s).
    #[serde(default)]
    pub otlp_interval: Option<Dur>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prometheus: true,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_interval: None,
        }
    }
}

fn default_true() -> bool {
    true
}
