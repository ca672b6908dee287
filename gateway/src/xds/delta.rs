//! The Delta ADS stream (`xds.delta: true`): `DeltaAggregatedResources`.
//!
//! Only the protocol differs from state of the world ([`super::client`]): resources come one by
//! one with their own versions and are removed by name, subscriptions change by
//! `resource_names_subscribe` / `resource_names_unsubscribe`, and a reconnect says what is held in
//! `initial_resource_versions` so the server sends only what changed. Each response is applied
//! through the same mapping, code resolution and reload as SotW (`client::apply`) and
//! ACKed or NACKed by its nonce, with `error_detail` on a NACK.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::mpsc;

use super::client::{apply, connect, node, SessionError, INVALID_ARGUMENT};
use super::resources::{
    Resources, CLUSTER_TYPE, ENDPOINT_TYPE, EXTENSION_TYPE, LISTENER_TYPE, ROUTE_TYPE,
};
use crate::config::model::XdsConfig;
use crate::reload::Reloader;

/// The wildcard subscription name (every resource of the type).
const WILDCARD: &str = "*";

struct Out {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
}

impl Out {
    async fn send(&mut self, mut req: DeltaDiscoveryRequest) -> Result<(), SessionError> {
        // The node goes on the first request of a stream only.
        req.node = self.node.take();
        self.tx.send(req).await.map_err(|_| SessionError::Closed)
    }
}

/// One Delta ADS session, until the stream ends or fails.
///
/// # Errors
/// Why the session ended.
pub async fn session(
    cfg: &XdsConfig,
    reloader: &Arc<Reloader>,
    held: &mut Resources,
    progressed: &mut bool,
) -> Result<(), SessionError> {
    let channel = connect(cfg).await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let mut out = Out {
        tx,
        node: Some(node(cfg)),
    };
    let mut subs: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    subs.insert(CLUSTER_TYPE, [WILDCARD.to_string()].into());
    subs.insert(LISTENER_TYPE, [WILDCARD.to_string()].into());
    if let Ok(b) = held.build(&|_| true) {
        subs.insert(ENDPOINT_TYPE, b.eds);
        subs.insert(ROUTE_TYPE, b.rds);
        subs.insert(EXTENSION_TYPE, b.ecds);
    }
    for (t, names) in &subs {
        if names.is_empty() {
            continue;
        }
        out.send(DeltaDiscoveryRequest {
            type_url: (*t).to_string(),
            resource_names_subscribe: names.iter().cloned().collect(),
            initial_resource_versions: held
                .resource_versions
                .get(*t)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await?;
    }
    let mut inbound = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(server = %cfg.server, node = %cfg.node.id, "xDS delta stream open");
    while let Some(resp) = inbound.message().await? {
        *progressed = true;
        handle(resp, reloader, held, &mut subs, &mut out).await?;
    }
    Ok(())
}

async fn handle(
    resp: DeltaDiscoveryResponse,
    reloader: &Arc<Reloader>,
    held: &mut Resources,
    subs: &mut BTreeMap<&'static str, BTreeSet<String>>,
    out: &mut Out,
) -> Result<(), SessionError> {
    let type_url = resp.type_url.clone();
    let mut candidate = held.clone();
    let items: Vec<(String, envoy_types::pb::google::protobuf::Any)> = resp
        .resources
        .iter()
        .filter_map(|r| r.resource.clone().map(|a| (r.version.clone(), a)))
        .collect();
    let applied = match candidate.upsert(&type_url, &resp.system_version_info, &items) {
        Err(e) => Err(e.to_string()),
        Ok(()) => {
            candidate.remove(&type_url, &resp.removed_resources);
            apply(&candidate, reloader).await
        }
    };
    let ack = |error_detail: Option<Status>| DeltaDiscoveryRequest {
        type_url: type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail,
        ..Default::default()
    };
    match applied {
        Ok(built) => {
            *held = candidate;
            tracing::info!(type_url = %type_url, version = %resp.system_version_info, resources = resp.resources.len(), removed = resp.removed_resources.len(), "xDS delta update applied");
            out.send(ack(None)).await?;
            for (t, wanted) in [
                (ROUTE_TYPE, built.rds),
                (ENDPOINT_TYPE, built.eds),
                (EXTENSION_TYPE, built.ecds),
            ] {
                let had = subs.get(t).cloned().unwrap_or_default();
                if had == wanted {
                    continue;
                }
                out.send(DeltaDiscoveryRequest {
                    type_url: t.to_string(),
                    resource_names_subscribe: wanted.difference(&had).cloned().collect(),
                    resource_names_unsubscribe: had.difference(&wanted).cloned().collect(),
                    ..Default::default()
                })
                .await?;
                subs.insert(t, wanted);
            }
        }
        Err(reason) => {
            tracing::warn!(type_url = %type_url, version = %resp.system_version_info, error = %reason, "xDS delta update rejected (NACK); the previous config keeps serving");
            out.send(ack(Some(Status {
                code: INVALID_ARGUMENT,
                message: reason,
                details: Vec::new(),
            })))
            .await?;
        }
    }
    Ok(())
}
