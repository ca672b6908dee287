//! Active HTTP health checks: `GET path` to every endpoint every `interval`, each bounded by
//! `timeout`. A 2xx answer is a success; anything else (other status, refused, timeout, garbage)
//! is a failure. An endpoint turns unhealthy after `unhealthy_threshold` consecutive failures and
//! healthy again after `healthy_threshold` consecutive successes.
//!
//! Endpoints start healthy (also ones DNS adds later), so traffic flows from the first request;
//! a dead endpoint is taken out after `unhealthy_threshold` rounds. Each check uses a fresh
//! HTTP/1.1 connection (`Connection: close`): checks are rare, and a pooled connection could hide
//! a listener that no longer accepts.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::model::HealthCheckConfig;

use super::cluster::Cluster;
use super::endpoint::Endpoint;
use super::tls::UpstreamTls;

/// Check every endpoint of the cluster now and then every interval, until the cluster drops.
pub(crate) async fn check_loop(
    cluster: Weak<Cluster>,
    mut stop: watch::Receiver<()>,
    hc: HealthCheckConfig,
) {
    let uri: Uri = match hc.path.parse() {
        Ok(uri) => uri,
        Err(e) => {
            // `Cluster::build` validated the path, so this is only a safety net.
            tracing::error!(path = %hc.path, error = %e, "invalid health check path; health checks disabled");
            return;
        }
    };
    loop {
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        let set = strong.endpoint_set();
        let name = strong.name.clone();
        let services = strong.services.clone();
        let tls = strong.tls.clone();
        drop(strong);

        let checks = set
            .all
            .iter()
            .map(|ep| check_one(ep, &uri, hc.timeout.get(), tls.as_deref()));
        let results = futures_util::future::join_all(checks).await;
        let mut changed = false;
        for (ep, result) in set.all.iter().zip(results) {
            if let Err(e) = &result {
                tracing::debug!(cluster = %name, endpoint = %ep.label, error = %e, "health check failed");
            }
            let flipped =
                ep.record_check(result.is_ok(), hc.healthy_threshold, hc.unhealthy_threshold);
            match (flipped, &result) {
                (Some(true), _) => {
                    tracing::info!(cluster = %name, endpoint = %ep.label, "endpoint is healthy again");
                }
                (Some(false), Err(e)) => {
                    tracing::warn!(cluster = %name, endpoint = %ep.label, error = %e,
                        failures = hc.unhealthy_threshold, "endpoint is unhealthy; no longer picked");
                }
                _ => {}
            }
            changed |= flipped.is_some();
            services
                .metrics
                .endpoint_health(&name, &ep.label, ep.is_healthy());
        }
        if changed {
            if let Some(strong) = cluster.upgrade() {
                strong.refresh_health();
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(hc.interval.get()) => {}
        }
    }
}

/// One check: Ok for a 2xx answer within `timeout`, else why not.
async fn check_one(
    ep: &Endpoint,
    uri: &Uri,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, exchange(ep, uri, tls)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn exchange(ep: &Endpoint, uri: &Uri, tls: Option<&UpstreamTls>) -> Result<(), String> {
    let stream = TcpStream::connect(ep.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Best effort: a check is one small request, latency does not depend on it.
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        Some(tls) => tls
            .connect(stream, &ep.authority)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?,
        None => crate::listener::tls::MaybeTls::Plain(stream),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = Request::get(uri.clone())
        .header(header::HOST, &*ep.authority)
        .header(header::USER_AGENT, "sluice-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    // Drive the connection here instead of spawning it: it ends with this check. With
    // `Connection: close` it may finish in the same poll that delivers the response, so a
    // finished connection still yields the response it delivered.
    let send = sender.send_request(req);
    tokio::pin!(conn, send);
    let resp = tokio::select! {
        biased;
        resp = &mut send => resp,
        end = &mut conn => match end {
            Ok(()) => send.await,
            Err(e) => return Err(e.to_string()),
        },
    }
    .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status().as_u16()))
    }
}
