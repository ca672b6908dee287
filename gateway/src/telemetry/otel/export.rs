//! The span exporter: a thread of its own that batches finished spans and sends them as OTLP
//! (gRPC or HTTP/protobuf).
//!
//! The request path encodes a finished span into a buffer of its worker thread (no lock, no
//! atomic operation, nothing kept of the record); every [`LOCAL_BATCH`] spans, or [`LOCAL_DELAY`] after the first span of a
//! partial batch (a task on the worker, [`flush_loop`]), the buffer is handed to the exporter
//! with one `try_send` into a bounded channel. A slow or unreachable collector fills the
//! channel, and batches that do not fit are dropped and their spans counted.
//!
//! The exporter is not woken per span: waking a thread costs a system call and, on a busy core,
//! two context switches, which measured at more than the rest of tracing together. It wakes
//! when a batch is full (see [`batch_spans`]) or after [`BATCH_DELAY`], whichever is first, and
//! drains the channel without blocking.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::Notify;

use super::encode::{BatchEncoder, EncodedSpans, SpanEncoder};
use super::record::SpanRecord;

/// Spans waiting for export at most (in batches of up to [`LOCAL_BATCH`]); past this, new
/// batches are dropped.
pub const QUEUE_CAPACITY: usize = 8192;
/// Spans a worker buffers before handing them over in one channel operation. Sixteen of these
/// buffers (hyper writes at most 16 at once) are one `writev` of about 300 KiB; with 32 spans
/// per buffer, there were twice as many `writev` calls.
pub const LOCAL_BATCH: usize = 64;
/// A partial worker buffer is handed over this long after its first span at the latest.
pub const LOCAL_DELAY: Duration = Duration::from_millis(100);
/// Spans per export request at most. An export costs the exporter thread about 90 µs whatever
/// its size (two wake-ups and context switches, the collector's wake-up, the HTTP exchange)
/// besides about 0.25 µs per span: with 2048 spans instead of the OpenTelemetry SDKs' 512, its
/// CPU per span halved, and the p99 latency of requests on the same core did not move (the
/// spans are already encoded; sending them is a few `writev` calls of up to 16 buffers each).
pub const MAX_BATCH: usize = 2048;
/// Spans per export request at least, however large they are.
pub const MIN_BATCH: usize = 64;
/// Spans in the first export request, before the size of a span is known: the SDKs' batch,
/// which stays under the 4 MiB gRPC limit for spans of up to 8 KiB.
pub const FIRST_BATCH: usize = 512;
/// The encoded size an export request stays under when spans are large (long URLs and user
/// agents): a batch is sized from the last batch's bytes per span, so that a request stays far
/// under the 4 MiB message limit collectors apply to gRPC by default.
pub const TARGET_BATCH_BYTES: usize = 1 << 20;
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
    /// Spans in a full batch now (see [`batch_spans`]): the exporter is woken when this many
    /// are queued.
    batch: AtomicUsize,
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
    tx: SyncSender<EncodedSpans>,
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
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY / LOCAL_BATCH);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            batch: AtomicUsize::new(FIRST_BATCH),
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

    /// Encode a finished span into this thread's buffer; never waits. A full export queue
    /// drops the buffer's spans when they are handed over (counted).
    pub fn send(&self, span: &SpanRecord) {
        let wake = LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if !l
                .to
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(&h.shared, &self.shared))
            {
                // First span since the last hand-over, or a span of a new tracer (reload).
                l.hand_over();
                l.to = Some(Handoff {
                    tx: self.tx.clone(),
                    shared: self.shared.clone(),
                    stats: self.stats.clone(),
                });
            }
            let first = l.spans.count == 0;
            let Local { spans, encoder, .. } = &mut *l;
            encoder.push(span, &mut spans.bytes);
            spans.count += 1;
            if spans.count >= LOCAL_BATCH {
                l.hand_over();
            }
            // The flush task waits for the first span of a batch.
            first.then(|| l.waker.take()).flatten()
        });
        if let Some(w) = wake {
            w.wake();
        }
    }
}

/// Where a worker's buffered spans go.
struct Handoff {
    tx: SyncSender<EncodedSpans>,
    shared: Arc<Shared>,
    stats: Arc<ExportStats>,
}

/// One thread's spans not yet handed to the exporter.
#[derive(Default)]
struct Local {
    to: Option<Handoff>,
    spans: EncodedSpans,
    /// Encodes this thread's spans (and keeps their constant attributes, encoded).
    encoder: SpanEncoder,
    /// The [`flush_loop`] of this thread, waiting for a first span.
    waker: Option<Waker>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

impl Local {
    /// Hand the buffered spans to their exporter (one channel operation).
    fn hand_over(&mut self) {
        if self.spans.count == 0 {
            return;
        }
        let Some(h) = &self.to else {
            return;
        };
        // The next buffer starts with room for a full batch of spans of this batch's size
        // (plus an eighth), so that it is not reallocated (copied) as it fills.
        let per_span = self.spans.bytes.len() / self.spans.count;
        let room = (per_span * LOCAL_BATCH).saturating_add(per_span * LOCAL_BATCH / 8);
        let next = EncodedSpans {
            bytes: Vec::with_capacity(room),
            count: 0,
        };
        let spans = std::mem::replace(&mut self.spans, next);
        let n = spans.count;
        if h.tx.try_send(spans).is_err() {
            h.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        // Only the batch that completes an export batch wakes the exporter.
        let before = h.shared.queued.fetch_add(n, Ordering::Relaxed);
        let batch = h.shared.batch.load(Ordering::Relaxed);
        if before < batch && before + n >= batch {
            h.shared.wake.notify_one();
        }
    }
}

/// Hand this thread's buffered spans to the exporter now, and let go of it (an exporter whose
/// tracer was replaced stops once no thread holds it).
pub fn flush_local() {
    // Taken out first: dropping the sender outside the borrow.
    let to = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.hand_over();
        l.to.take()
    });
    drop(to);
}

/// Run on each worker (inside its `LocalSet`): hands a partial buffer over [`LOCAL_DELAY`]
/// after its first span, so that spans of a quiet worker are not held back.
pub async fn flush_loop() {
    loop {
        std::future::poll_fn(|cx| {
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                if l.spans.count == 0 {
                    l.waker = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
        })
        .await;
        tokio::time::sleep(LOCAL_DELAY).await;
        flush_local();
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
    rx: Receiver<EncodedSpans>,
    shared: Arc<Shared>,
    stats: Arc<ExportStats>,
) {
    let mut sender = Sender::new(uri, protocol);
    let mut encoder = BatchEncoder::new(&resource);
    loop {
        // Woken early by a full batch or the last sender leaving; else every BATCH_DELAY.
        let _ = tokio::time::timeout(BATCH_DELAY, shared.wake.notified()).await;
        loop {
            let limit = shared.batch.load(Ordering::Relaxed);
            let mut batch = Vec::new();
            let mut n = 0;
            let mut closed = false;
            while n < limit {
                match rx.try_recv() {
                    Ok(spans) => {
                        n += spans.count;
                        batch.push(spans);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            shared.queued.fetch_sub(n, Ordering::Relaxed);
            let full = n >= limit;
            if n > 0 {
                export(&mut sender, &mut encoder, batch, n, &stats).await;
                shared
                    .batch
                    .store(batch_spans(encoder.span_len()), Ordering::Relaxed);
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

/// Spans in a full batch when spans encode to `span_len` bytes each: as many as make
/// [`TARGET_BATCH_BYTES`], within [`MIN_BATCH`] and [`MAX_BATCH`]. Typical spans (about 300
/// bytes) fill the largest batch; large ones make smaller batches, so that an export request
/// stays short to send, and far under the 4 MiB message limit collectors apply to gRPC by
/// default.
pub fn batch_spans(span_len: usize) -> usize {
    (TARGET_BATCH_BYTES / span_len.max(1)).clamp(MIN_BATCH, MAX_BATCH)
}

async fn export(
    sender: &mut Sender,
    encoder: &mut BatchEncoder,
    batch: Vec<EncodedSpans>,
    n: usize,
    stats: &ExportStats,
) {
    let n = n as u64;
    let body = encoder.encode(batch);
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

    /// Send an encoded `ExportTraceServiceRequest`, in pieces.
    async fn export(&mut self, body: Vec<Bytes>) -> Result<(), String> {
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
    type Encode = Vec<Bytes>;
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
    type Item = Vec<Bytes>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<Bytes>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        for part in &item {
            bytes::BufMut::put_slice(dst, part);
        }
        Ok(())
    }
}

/// A request body sent as the pieces it was made in, with its length known up front (a
/// `Content-Length`, not chunked).
pub struct Pieces {
    parts: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Pieces {
    pub fn new(parts: Vec<Bytes>) -> Self {
        let left = parts.iter().map(|p| p.len() as u64).sum();
        Pieces {
            parts: parts.into(),
            left,
        }
    }
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let part = self.parts.pop_front();
        if let Some(p) = &part {
            self.left -= p.len() as u64;
        }
        Poll::Ready(part.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
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

type HttpConn = hyper::client::conn::http1::SendRequest<Pieces>;

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

    /// POST `body` (its pieces one after the other) to `path` under the endpoint's own path.
    ///
    /// # Errors
    /// The connection or the request failed, or the collector answered other than 2xx; the
    /// connection is dropped after a transport error.
    pub async fn post(&mut self, path: &str, body: Vec<Bytes>) -> Result<(), String> {
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
            .body(Pieces::new(body))
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
    HttpPoster::new(base.clone())
        .post(path, vec![Bytes::from(body)])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    type Counts = Arc<std::sync::Mutex<Vec<usize>>>;

    /// A collector stand-in on loopback that answers 200 to every POST and counts connections.
    async fn collector() -> (http::Uri, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (uri, conns, posts, _) = counting_collector().await;
        (uri, conns, posts)
    }

    /// [`collector`], also noting how many spans each export request carried.
    async fn counting_collector() -> (http::Uri, Arc<AtomicUsize>, Arc<AtomicUsize>, Counts) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let conns = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let counts = Counts::default();
        let (c, p, n) = (conns.clone(), posts.clone(), counts.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (p, n) = (p.clone(), n.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let (p, n) = (p.clone(), n.clone());
                    async move {
                        // Export bodies have a length up front: never chunked.
                        let ok = req.uri().path() == "/otlp/v1/traces"
                            && !req.headers().contains_key(http::header::TRANSFER_ENCODING);
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                        if let Ok(r) = ExportTraceServiceRequest::decode(body) {
                            let spans = r.resource_spans.iter().flat_map(|r| &r.scope_spans);
                            let count = spans.map(|s| s.spans.len()).sum();
                            n.lock().expect("counts").push(count);
                        }
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
        (uri, conns, posts, counts)
    }

    /// A span of about 4 KiB with a 4 KiB `name` (a long filter name stands for long URLs and
    /// user agents).
    fn large_span(name: &str) -> SpanRecord<'_> {
        use super::super::record::{Detail, FilterSpan};
        SpanRecord::for_test(Detail::Filter(FilterSpan {
            filter: name,
            phase: "log",
            outcome: "ok",
        }))
    }

    #[tokio::test]
    async fn large_spans_go_out_in_smaller_batches() {
        let (uri, _, _, counts) = counting_collector().await;
        let stats = Arc::new(ExportStats::default());
        let exporter = Exporter::start(
            &uri.to_string(),
            Protocol::HttpProtobuf,
            "svc",
            stats.clone(),
        )
        .expect("exporter");
        let exported = |n: u64| {
            let stats = stats.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while stats.exported.load(Ordering::SeqCst) < n {
                    assert!(std::time::Instant::now() < deadline, "{stats:?}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let name = "f".repeat(4096);
        // Before any span is known: one batch of FIRST_BATCH.
        for _ in 0..FIRST_BATCH {
            exporter.send(&large_span(&name));
        }
        flush_local();
        exported(FIRST_BATCH as u64).await;
        // One post, unless the 500 ms timer fired halfway (a very busy machine).
        let first = counts.lock().expect("counts").len();
        // Now sized from ~4 KiB per span: batches of about TARGET_BATCH_BYTES each.
        let sized = batch_spans(4096);
        assert!(sized < FIRST_BATCH);
        for _ in 0..4 * sized {
            exporter.send(&large_span(&name));
        }
        flush_local();
        exported((FIRST_BATCH + 4 * sized) as u64).await;
        let counts = counts.lock().expect("counts").clone();
        let (before, after) = counts.split_at(first);
        assert_eq!(before.iter().sum::<usize>(), FIRST_BATCH, "{counts:?}");
        assert!(before.iter().all(|&n| n <= FIRST_BATCH), "{counts:?}");
        assert!(after.iter().all(|&n| n <= sized), "{counts:?}");
        assert_eq!(after.iter().sum::<usize>(), 4 * sized, "{counts:?}");
        assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn batches_stay_under_their_byte_target_within_bounds() {
        // Typical spans (about 300 bytes): the largest batch, about 600 KiB.
        assert_eq!(batch_spans(300), MAX_BATCH);
        // 4 KiB spans (long URLs and user agents): 256 of them, 1 MiB.
        assert_eq!(batch_spans(4096), 256);
        assert_eq!(batch_spans(1024), 1024);
        assert_eq!(batch_spans(16 << 10), MIN_BATCH);
        // Huge spans: never fewer than MIN_BATCH; nothing divides by zero.
        assert_eq!(batch_spans(1 << 20), MIN_BATCH);
        assert_eq!(batch_spans(0), MAX_BATCH);
        // Every batch the sizing allows stays under the 4 MiB gRPC default for spans up to
        // 64 KiB each.
        for len in [100, 1000, 5000, 16 << 10, 64 << 10] {
            assert!(batch_spans(len) * len <= 4 << 20, "{len}");
        }
    }

    /// An OTLP/gRPC collector: tonic's `TraceService` server with its default limits (a 4 MiB
    /// message at most), noting how many spans each export request carried.
    async fn grpc_collector() -> (http::Uri, Counts) {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

        #[derive(Clone)]
        struct Counting(Counts);

        #[tonic::async_trait]
        impl TraceService for Counting {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                let req = request.into_inner();
                let spans = req.resource_spans.iter().flat_map(|r| &r.scope_spans);
                let n = spans.map(|s| s.spans.len()).sum();
                self.0.lock().expect("counts").push(n);
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let counts = Counts::default();
        let svc = TraceServiceServer::new(Counting(counts.clone()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        (format!("http://{addr}").parse().expect("uri"), counts)
    }

    #[tokio::test]
    async fn the_largest_batches_are_accepted_over_grpc() {
        let (uri, counts) = grpc_collector().await;
        let stats = ExportStats::default();
        let mut sender = Sender::new(uri, Protocol::Grpc);
        let mut batches = BatchEncoder::new(&resource("svc"));
        let mut spans = SpanEncoder::default();
        // Spans of a proxied request's size (a full MAX_BATCH), then 4 KiB ones (as many as
        // make TARGET_BATCH_BYTES): the largest export requests the sizing makes.
        let (mut sent, mut bytes) = (Vec::new(), Vec::new());
        for name_len in [64, 4096] {
            let name = "f".repeat(name_len);
            let mut one = Vec::new();
            spans.push(&large_span(&name), &mut one);
            let n = batch_spans(one.len());
            let mut encoded = EncodedSpans::default();
            for _ in 0..n {
                spans.push(&large_span(&name), &mut encoded.bytes);
                encoded.count += 1;
            }
            let before = stats.exported.load(Ordering::SeqCst);
            export(&mut sender, &mut batches, vec![encoded], n, &stats).await;
            assert_eq!(stats.exported.load(Ordering::SeqCst), before + n as u64);
            sent.push(n);
            bytes.push(n * one.len());
        }
        assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
        // A full batch of small spans, then about 1 MiB of large ones.
        assert_eq!(sent[0], MAX_BATCH);
        assert!(sent[1] < MAX_BATCH, "{sent:?}");
        assert!(bytes[1] > TARGET_BATCH_BYTES * 9 / 10, "{bytes:?}");
        assert_eq!(*counts.lock().expect("counts"), sent);
    }

    #[tokio::test]
    async fn exports_share_one_connection() {
        let (uri, conns, posts) = collector().await;
        let mut poster = HttpPoster::new(uri);
        for _ in 0..3 {
            poster
                .post(
                    "/v1/traces",
                    vec![Bytes::from_static(&[1, 2]), Bytes::from_static(&[3])],
                )
                .await
                .expect("export accepted");
        }
        assert_eq!(posts.load(Ordering::SeqCst), 3);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // An error status keeps the connection usable too.
        assert!(poster.post("/other", Vec::new()).await.is_err());
        poster
            .post("/v1/traces", Vec::new())
            .await
            .expect("accepted");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }
}
