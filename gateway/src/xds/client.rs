//! The ADS client loop (reconnect with backoff) and the state-of-the-world stream: subscribe, apply, ACK/NACK, resubscribe, reconnect.
//!
//! One bidirectional `StreamAggregatedResources` call carries every type. CDS and LDS are
//! wildcard subscriptions; RDS and EDS subscribe to the names the accepted listeners and clusters
//! refer to. Each response is applied whole (all of its type replaced) through the reloader: on
//! success it is ACKed with its version, otherwise NACKed with the previous version and the reason
//! in `error_detail`, and the previous config keeps serving. When the stream ends the client
//! reconnects with jittered exponential backoff and resubscribes with the versions it holds, so a
//! control plane restart drops no traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use envoy_types::pb::google::rpc::Status;
use rand::Rng as _;
use tokio::sync::mpsc;

use super::resources::{
    Resources, CLUSTER_TYPE, ENDPOINT_TYPE, EXTENSION_TYPE, LISTENER_TYPE, ROUTE_TYPE,
};
use crate::config::model::XdsConfig;
use crate::reload::Reloader;

/// First wait before reconnecting; doubled per failed attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long to wait for the TCP/HTTP2 connection to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC INVALID_ARGUMENT: what a NACK's error_detail carries.
pub(super) const INVALID_ARGUMENT: i32 = 3;

/// Why one ADS session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("bad xds.server `{0}`: {1}")]
    BadServer(String, String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the request queue closed")]
    Closed,
}

/// Run the client forever: one session after another, with backoff between them.
pub async fn run(cfg: XdsConfig, reloader: Arc<Reloader>) {
    let mut held = Resources::default();
    let mut failures: u32 = 0;
    loop {
        let mut progressed = false;
        let ended = if cfg.delta {
            super::delta::session(&cfg, &reloader, &mut held, &mut progressed).await
        } else {
            session(&cfg, &reloader, &mut held, &mut progressed).await
        };
        match ended {
            Ok(()) => {
                tracing::warn!(server = %cfg.server, "xDS stream closed by the server; reconnecting")
            }
            Err(e) => {
                tracing::warn!(server = %cfg.server, error = %e, "xDS stream failed; the current config keeps serving")
            }
        }
        if progressed {
            failures = 0;
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

/// Full jitter: uniformly random in [0, min(MAX, MIN * 2^n)], so many gateways restarted
/// together do not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let cap = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
}

pub(crate) fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

pub(super) fn node(cfg: &XdsConfig) -> Node {
    let metadata = match cfg.node.metadata.as_ref().map(json_to_value) {
        Some(Value {
            kind: Some(Kind::StructValue(s)),
        }) => Some(s),
        _ => None,
    };
    Node {
        id: cfg.node.id.clone(),
        cluster: cfg.node.cluster.clone().unwrap_or_default(),
        metadata,
        user_agent_name: "sluice".into(),
        ..Default::default()
    }
}

/// What the session has asked for and been sent, per type.
#[derive(Default)]
struct Subscriptions {
    names: BTreeMap<&'static str, BTreeSet<String>>,
    nonces: BTreeMap<String, String>,
}

struct Sender {
    tx: mpsc::Sender<DiscoveryRequest>,
    node: Node,
    first: bool,
}

impl Sender {
    async fn send(&mut self, mut req: DiscoveryRequest) -> Result<(), SessionError> {
        // The node goes on the first request of a stream only, as Envoy does.
        if self.first {
            req.node = Some(self.node.clone());
            self.first = false;
        }
        self.tx.send(req).await.map_err(|_| SessionError::Closed)
    }
}

/// Open the gRPC channel to the control plane.
pub(super) async fn connect(cfg: &XdsConfig) -> Result<tonic::transport::Channel, SessionError> {
    let endpoint = tonic::transport::Endpoint::from_shared(cfg.server.clone())
        .map_err(|e| SessionError::BadServer(cfg.server.clone(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(endpoint.connect().await?)
}

async fn session(
    cfg: &XdsConfig,
    reloader: &Arc<Reloader>,
    held: &mut Resources,
    progressed: &mut bool,
) -> Result<(), SessionError> {
    let channel = connect(cfg).await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let mut out = Sender {
        tx,
        node: node(cfg),
        first: true,
    };
    let mut subs = Subscriptions::default();
    // What we hold decides what we ask for again after a reconnect; the versions let the server
    // skip resending what has not changed.
    let current = held.build(&|_| true).ok();
    subs.names.insert(CLUSTER_TYPE, BTreeSet::new());
    subs.names.insert(LISTENER_TYPE, BTreeSet::new());
    if let Some(b) = &current {
        subs.names.insert(ENDPOINT_TYPE, b.eds.clone());
        subs.names.insert(ROUTE_TYPE, b.rds.clone());
        subs.names.insert(EXTENSION_TYPE, b.ecds.clone());
    }
    for t in [
        CLUSTER_TYPE,
        LISTENER_TYPE,
        ENDPOINT_TYPE,
        ROUTE_TYPE,
        EXTENSION_TYPE,
    ] {
        if let Some(names) = subs.names.get(t) {
            if names.is_empty() && t != CLUSTER_TYPE && t != LISTENER_TYPE {
                continue;
            }
            out.send(request(t, held.version(t), names, "", None))
                .await?;
        }
    }
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(server = %cfg.server, node = %cfg.node.id, "xDS stream open");
    while let Some(resp) = inbound.message().await? {
        *progressed = true;
        handle(resp, reloader, held, &mut subs, &mut out).await?;
    }
    Ok(())
}

fn request(
    type_url: &str,
    version: String,
    names: &BTreeSet<String>,
    nonce: &str,
    error: Option<String>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version,
        resource_names: names.iter().cloned().collect(),
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: error.map(|message| Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

async fn handle(
    resp: DiscoveryResponse,
    reloader: &Arc<Reloader>,
    held: &mut Resources,
    subs: &mut Subscriptions,
    out: &mut Sender,
) -> Result<(), SessionError> {
    let type_url = resp.type_url.clone();
    subs.nonces.insert(type_url.clone(), resp.nonce.clone());
    let names = subs
        .names
        .iter()
        .find(|(t, _)| **t == type_url)
        .map(|(_, n)| n.clone())
        .unwrap_or_default();
    let mut candidate = held.clone();
    let applied = match candidate.replace(&type_url, &resp.version_info, &resp.resources) {
        Err(e) => Err(e.to_string()),
        Ok(()) => apply(&candidate, reloader).await,
    };
    match applied {
        Ok(built) => {
            *held = candidate;
            tracing::info!(type_url = %type_url, version = %resp.version_info, resources = resp.resources.len(), "xDS update applied");
            out.send(request(
                &type_url,
                resp.version_info.clone(),
                &names,
                &resp.nonce,
                None,
            ))
            .await?;
            for (t, wanted) in [
                (ROUTE_TYPE, built.rds),
                (ENDPOINT_TYPE, built.eds),
                (EXTENSION_TYPE, built.ecds),
            ] {
                if subs.names.get(t) != Some(&wanted) {
                    let nonce = subs.nonces.get(t).cloned().unwrap_or_default();
                    out.send(request(t, held.version(t), &wanted, &nonce, None))
                        .await?;
                    subs.names.insert(t, wanted);
                }
            }
        }
        Err(reason) => {
            tracing::warn!(type_url = %type_url, version = %resp.version_info, error = %reason, "xDS update rejected (NACK); the previous config keeps serving");
            out.send(request(
                &type_url,
                held.version(&type_url),
                &names,
                &resp.nonce,
                Some(reason),
            ))
            .await?;
        }
    }
    Ok(())
}

/// Map the candidate resources, get their plugins' code and put them in force. Building a
/// snapshot compiles plugins and binds sockets: it runs on a blocking thread.
///
/// # Errors
/// Why the update is rejected: the text of the NACK.
pub(super) async fn apply(
    candidate: &Resources,
    reloader: &Arc<Reloader>,
) -> Result<super::resources::Built, String> {
    let current = reloader.current();
    let overlay_clusters: BTreeSet<String> = candidate.clusters.keys().cloned().collect();
    let file_clusters: BTreeSet<String> = current
        .config
        .file
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| !overlay_clusters.contains(n))
        .collect();
    let mut built = candidate
        .build(&|c| file_clusters.contains(c))
        .map_err(|e| e.to_string())?;
    super::code::resolve(&mut built).await?;
    let overlay = Arc::new(built.overlay.clone());
    let r = reloader.clone();
    match tokio::task::spawn_blocking(move || r.apply_overlay(overlay)).await {
        Ok(Ok(_version)) => Ok(built),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("applying the update failed: {e}")),
    }
}
