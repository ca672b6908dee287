//! The span exporter: a thread of its own that batches finished spans and sends them as OTLP
//! (gRPC or HTTP/protobuf). The request path only `try_send`s into a bounded channel: a slow or
//! unreachable collector fills the channel, and what does not fit is dropped and counted.
//!
//! The exporter is not woken per span: waking a thread costs a system call and, on a busy core,
//! two context switches, which measured at more than the rest of tracing together. It wakes
//! when a batch is full ([`MAX_BATCH`] spans queued) or after [`BATCH_DELAY`], whichever is first,
//! and drains the channel without blocking.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::Notify;

use super::encode::BatchEncoder;
use super::record::SpanRecord;

/// Spans waiting for export at most; past this, new spans are dropped.
pub const QUEUE_CAPACITY: usize = 8192;
/// Spans per export request at most.
pub const MAX_BATCH: usize = 512;
/// A partial batch waits at most this long.
pub const BATCH_DELAY: Duration = Duration::from_millis(500);
/// One export (connect included) gives up after this long; its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`), usually port 4317.
    Grpc,
    /// OTLP/HTTP with a protobuf body (`POST /v1/traces`), usually port 4318.
    HttpProtobuf,
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("otlp_endpoint `{0}` is not an http:// URL (https is not supported yet)")]
    Endpoint(String),
    #[error("telemetry.tracing.protocol `{0}` is not `grpc` or `http/protobuf`")]
    Protocol(String),
    #[error(transparent)]
    Propagation(#[from] super::propagation::UnknownFormat),
    #[error("cannot start the span exporter thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Counters shared with /metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans accepted by the collector.
    pub exported: AtomicU64,
    /// Spans lost: queue full, or the export failed.
    pub dropped: AtomicU64,
}

/// What the request path and the exporter thread share.
struct Shared {
    /// Spans sent and not yet taken by the exporter (approximately: it only decides wake-ups).
    queued: AtomicUsize,
    /// Wakes the exporter early: a batch is full, or the last sender is gone.
    wake: Notify,
}

/// Wakes the exporter when the last [`Exporter`] clone drops, so that it flushes and stops.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// The sending side, held by the tracer. Dropping the last one stops the exporter thread after
/// it flushed what it had.
#[derive(Clone)]
pub struct Exporter {
    // Declared before `_closer`: the channel is closed when the closer wakes the exporter.
    tx: SyncSender<SpanRecord>,
    shared: Arc<Shared>,
    stats: Arc<ExportStats>,
    _closer: Arc<Closer>,
}

impl Exporter {
    /// Start an exporter thread for `endpoint` (e.g. `http://127.0.0.1:4317`).
    ///
    /// # Errors
    /// The endpoint is not an http URL, or the thread cannot start.
    pub fn start(
        endpoint: &str,
        protocol: Protocol,
        service_name: &str,
        stats: Arc<ExportStats>,
    ) -> Result<Self, ExportError> {
        let uri = check_endpoint(endpoint)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            wake: Notify::new(),
        });
        let resource = resource(service_name);
        let st = stats.clone();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("sluice-otlp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the span exporter runtime");
                        return;
                    }
                };
                rt.block_on(run(uri, protocol, resource, rx, sh, st));
            })?;
        Ok(Exporter {
            tx,
            _closer: Arc::new(Closer(shared.clone())),
            shared,
            stats,
        })
    }

    /// Queue a finished span; never waits. A full queue drops it (counted).
    pub fn send(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Only the span that completes a batch wakes the exporter.
        if self.shared.queued.fetch_add(1, Ordering::Relaxed) + 1 == MAX_BATCH {
            self.shared.wake.notify_one();
        }
    }
}

/// The endpoint as a URI, if it is a plain http URL with a host.
///
/// # Errors
/// Anything else.
pub fn check_endpoint(endpoint: &str) -> Result<http::Uri, ExportError> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| ExportError::Endpoint(endpoint.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ExportError::Endpoint(endpoint.to_string()));
    }
    Ok(uri)
}

/// `grpc` (the default) or `http/protobuf`.
///
/// # Errors
/// Any other name.
pub fn parse_protocol(p: Option<&str>) -> Result<Protocol, ExportError> {
    match p {
        None | Some("grpc") => Ok(Protocol::Grpc),
        Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some(other) => Err(ExportError::Protocol(other.to_string())),
    }
}

/// A gRPC channel that connects on first use (and reconnects after failures).
pub fn lazy_channel(uri: &http::Uri) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from(uri.clone())
        .connect_timeout(EXPORT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT)
        .connect_lazy()
}

/// The OTLP resource naming this gateway.
pub fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service_name.to_string())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn run(
    uri: http::Uri,
    protocol: Protocol,
    resource: Resource,
    rx: Receiver<SpanRecord>,
    shared: Arc<Shared>,
    stats: Arc<ExportStats>,
) {
    let mut sender = Sender::new(uri, protocol);
    let mut encoder = BatchEncoder::new(&resource);
    loop {
        // Woken early by a full batch or the last sender leaving; else every BATCH_DELAY.
        let _ = tokio::time::timeout(BATCH_DELAY, shared.wake.notified()).await;
        loop {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut closed = false;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            let full = batch.len() == MAX_BATCH;
            if !batch.is_empty() {
                export(&mut sender, &mut encoder, batch, &stats).await;
            }
            if closed {
                return;
            }
            if !full {
                break;
            }
        }
    }
}

async fn export(
    sender: &mut Sender,
    encoder: &mut BatchEncoder,
    batch: Vec<SpanRecord>,
    stats: &ExportStats,
) {
    let n = batch.len() as u64;
    let body = encoder.encode(&batch);
    // The records (and the route, cluster and request text they share) are freed here.
    drop(batch);
    match tokio::time::timeout(EXPORT_TIMEOUT, sender.export(body)).await {
        Ok(Ok(())) => {
            stats.exported.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(error = %e, spans = n, "span export failed");
        }
        Err(_) => {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(spans = n, "span export timed out");
        }
    }
}

/// One export transport.
enum Sender {
    Grpc(
        Option<tonic::client::Grpc<tonic::transport::Channel>>,
        http::Uri,
    ),
    Http(HttpPoster),
}

impl Sender {
    fn new(uri: http::Uri, protocol: Protocol) -> Self {
        match protocol {
            Protocol::Grpc => Sender::Grpc(None, uri),
            Protocol::HttpProtobuf => Sender::Http(HttpPoster::new(uri)),
        }
    }

    /// Send an encoded `ExportTraceServiceRequest`.
    async fn export(&mut self, body: Vec<u8>) -> Result<(), String> {
        match self {
            Sender::Grpc(client, uri) => {
                let c = client.get_or_insert_with(|| tonic::client::Grpc::new(lazy_channel(uri)));
                c.ready().await.map_err(|e| e.to_string())?;
                let path = http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                );
                c.unary(tonic::Request::new(body), path, RawCodec)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.to_string())
            }
            Sender::Http(poster) => poster.post("/v1/traces", body).await,
        }
    }
}

/// A tonic codec whose requests are already-encoded protobuf bytes; the response
/// (`ExportTraceServiceResponse`) is decoded with prost.
struct RawCodec;

struct RawEncoder;

struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

type HttpConn = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// POSTs OTLP/HTTP protobuf bodies to one collector over a connection kept open between
/// exports (at 100 % sampling a busy gateway exports many times a second: a connect, and its
/// TIME_WAIT, per export showed up on the proxy's core). A connection the collector closed is
/// replaced before the next export.
pub struct HttpPoster {
    base: http::Uri,
    conn: Option<HttpConn>,
}

impl HttpPoster {
    /// A poster for the collector at `base` (connects on first use).
    pub fn new(base: http::Uri) -> Self {
        HttpPoster { base, conn: None }
    }

    /// POST `body` to `path` under the endpoint's own path.
    ///
    /// # Errors
    /// The connection or the request failed, or the collector answered other than 2xx; the
    /// connection is dropped after a transport error.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<(), String> {
        let authority = self.base.authority().ok_or("endpoint has no host")?.clone();
        let kept = match self.conn.take() {
            Some(mut c) if !c.is_closed() => c.ready().await.is_ok().then_some(c),
            _ => None,
        };
        let mut conn = match kept {
            Some(c) => c,
            None => connect(&authority).await?,
        };
        let prefix = self.base.path().trim_end_matches('/');
        let req = http::Request::post(format!("{prefix}{path}"))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // The body must be read to the end before the connection can carry the next request.
        let drained = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .is_ok();
        if drained {
            self.conn = Some(conn);
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {status}"))
        }
    }
}

async fn connect(authority: &http::uri::Authority) -> Result<HttpConn, String> {
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// POST an OTLP/HTTP protobuf body to `path` on the collector at `base` over a connection of
/// its own (for rare exports, such as metrics pushes).
///
/// # Errors
/// As [`HttpPoster::post`].
pub async fn post_protobuf(base: &http::Uri, path: &str, body: Vec<u8>) -> Result<(), String> {
    HttpPoster::new(base.clone()).post(path, body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A collector stand-in on loopback that answers 200 to every POST and counts connections.
    async fn collector() -> (http::Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let conns = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let (c, p) = (conns.clone(), posts.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let p = p.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let p = p.clone();
                    async move {
                        let ok = req.uri().path() == "/otlp/v1/traces";
                        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                        p.fetch_add(1, Ordering::SeqCst);
                        let status = if ok { 200 } else { 404 };
                        http::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"")))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
            }
        });
        let uri = format!("http://{addr}/otlp").parse().expect("uri");
        (uri, conns, posts)
    }

    #[tokio::test]
    async fn exports_share_one_connection() {
        let (uri, conns, posts) = collector().await;
        let mut poster = HttpPoster::new(uri);
        for _ in 0..3 {
            poster
                .post("/v1/traces", vec![1, 2, 3])
                .await
                .expect("export accepted");
        }
        assert_eq!(posts.load(Ordering::SeqCst), 3);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // An error status keeps the connection usable too.
        assert!(poster.post("/other", vec![]).await.is_err());
        poster.post("/v1/traces", vec![]).await.expect("accepted");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }
}
