//! Pushes everything /metrics shows to an OTLP collector at a fixed interval, from a thread of
//! its own. Stops when the handle is dropped (a reload that changes or removes the setting).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use prost::Message;

use super::export::{self, ExportError, Protocol, EXPORT_TIMEOUT};
use crate::telemetry::metrics::Metrics;

/// How often metrics are pushed unless configured.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// A running metrics pusher; dropping it stops the thread at its next tick.
pub struct MetricsPusher {
    stop: Arc<AtomicBool>,
    /// The settings it runs with (reload compares them).
    pub config: crate::config::model::MetricsConfig,
}

impl Drop for MetricsPusher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl MetricsPusher {
    /// Start pushing `metrics` per `cfg`; None when `cfg` has no `otlp_endpoint`.
    ///
    /// # Errors
    /// A bad endpoint or protocol, or the thread cannot start.
    pub fn start(
        cfg: &crate::config::model::MetricsConfig,
        metrics: Arc<Metrics>,
        service_name: &str,
    ) -> Result<Option<Self>, ExportError> {
        let Some(endpoint) = cfg.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let uri = export::check_endpoint(endpoint)?;
        let protocol = export::parse_protocol(cfg.otlp_protocol.as_deref())?;
        let interval = cfg.otlp_interval.map_or(DEFAULT_PUSH_INTERVAL, |d| d.get());
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let resource = export::resource(service_name);
        std::thread::Builder::new()
            .name("sluice-otlp-metrics".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the metrics pusher runtime");
                        return;
                    }
                };
                let start = now_nanos();
                rt.block_on(async move {
                    let mut client = None;
                    while !st.load(Ordering::Relaxed) {
                        tokio::time::sleep(interval).await;
                        if st.load(Ordering::Relaxed) {
                            break;
                        }
                        let metrics =
                            super::prom_to_otlp::convert(&metrics.render(), start, now_nanos());
                        let req = ExportMetricsServiceRequest {
                            resource_metrics: vec![ResourceMetrics {
                                resource: Some(resource.clone()),
                                scope_metrics: vec![ScopeMetrics {
                                    scope: Some(InstrumentationScope {
                                        name: "sluice".into(),
                                        version: env!("CARGO_PKG_VERSION").into(),
                                        ..Default::default()
                                    }),
                                    metrics,
                                    schema_url: String::new(),
                                }],
                                schema_url: String::new(),
                            }],
                        };
                        let sent = tokio::time::timeout(EXPORT_TIMEOUT, async {
                            match protocol {
                                Protocol::Grpc => {
                                    let c = client.get_or_insert_with(|| {
                                        MetricsServiceClient::new(export::lazy_channel(&uri))
                                    });
                                    c.export(req).await.map(|_| ()).map_err(|s| s.to_string())
                                }
                                Protocol::HttpProtobuf => {
                                    export::post_protobuf(&uri, "/v1/metrics", req.encode_to_vec())
                                        .await
                                }
                            }
                        })
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(error = %e, "metrics push failed"),
                            Err(_) => tracing::debug!("metrics push timed out"),
                        }
                    }
                });
            })?;
        Ok(Some(MetricsPusher {
            stop,
            config: cfg.clone(),
        }))
    }
}
