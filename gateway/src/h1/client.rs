//! One HTTP/1.1 exchange on an upstream connection, run by the request's own task.
//!
//! hyper's client runs each connection as a task of its own and hands requests, responses and
//! body chunks to it over channels: three wake-ups and as many queue operations per request on a
//! worker that does nothing else. Here the request path writes the head itself, reads and
//! parses the response head itself, and the response body reads straight from the socket as
//! the downstream side polls it; when the body ends, the connection goes back to the worker's
//! pool. The connection is owned by exactly one exchange at a time, so no state is shared.
//!
//! Framing follows RFC 9112 §6: request bodies go with the `Content-Length` they carry, else
//! the body's exact size, else chunked; responses are read by `Transfer-Encoding: chunked`, else
//! `Content-Length`, else until the upstream closes. A connection is reused only after a
//! complete, keep-alive response to a completely sent request.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::AsyncWriteExt;

use super::chunked;
use super::client_body::{ClientBody, Framing};
use super::head::{self, MAX_FIELDS};
use super::io::{poll_read_buf, WriteQueue};
use super::raw_fields::RawFields;
use crate::body::{BoxError, ProxyBody};
use crate::upstream::added::AddedFields;
use crate::upstream::pool::Recycle;
use crate::upstream::tls::UpstreamIo;
use crate::upstream::RequestFieldsFn;

/// The largest response head accepted, bytes (status line and fields).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 16;

/// An upstream HTTP/1.1 connection between exchanges: the socket and bytes read past the end of
/// the previous response (none for a well-behaved upstream).
pub struct Conn {
    pub(crate) io: UpstreamIo,
    pub(crate) buf: BytesMut,
    /// Where request heads are encoded; kept across exchanges (no allocation per request).
    head: Vec<u8>,
}

/// Why an exchange failed.
pub enum SendError {
    /// The request never reached the upstream (the connection was found closed before any byte
    /// was written): it comes back for a resend.
    Unsent(Box<Request<ProxyBody>>, io::Error),
    /// The request was written but the connection closed or reset before any response byte:
    /// the keep-alive race. The request comes back when its body was empty (nothing consumed).
    Stale(Option<Box<Request<ProxyBody>>>, io::Error),
    /// The connection failed mid-exchange.
    Io(io::Error),
    /// The request body failed (the client went away, or a size limit or a filter stopped it).
    Body(BoxError),
    /// The response is not valid HTTP/1.1.
    BadResponse(&'static str),
}

impl std::fmt::Debug for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unsent(_, e) => {
                write!(f, "connection closed before the request was sent: {e}")
            }
            SendError::Stale(_, e) => write!(f, "connection closed before any response byte: {e}"),
            SendError::Io(e) => write!(f, "connection error: {e}"),
            SendError::Body(e) => write!(f, "request body error: {e}"),
            SendError::BadResponse(why) => write!(f, "invalid response: {why}"),
        }
    }
}

impl Conn {
    pub fn new(io: UpstreamIo) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
        }
    }

    /// Whether a pooled connection still looks usable: no byte and no end of stream arrived
    /// since its last response. Costs a system call only when the reactor saw the socket
    /// become readable meanwhile.
    pub fn is_idle_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if let crate::listener::tls::MaybeTls::Plain(s) = &self.io {
            // Without readiness, nothing (no byte, no FIN) arrived since the last read: usable,
            // known without a system call and without registering a waker (a poll would take
            // the socket's waiter lock). With readiness, one non-blocking read tells.
            let mut probe = [0u8; 1];
            return matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            poll_read_buf(&mut self.io, &mut cx, &mut self.buf),
            Poll::Pending
        )
    }

    /// Send `req` and read the response head. `reused`: the connection served an exchange
    /// before (a failure before any response byte is then the keep-alive race, not an error of
    /// the upstream). `recycle` takes the connection back once the response body has ended,
    /// if it can be reused.
    ///
    /// # Errors
    /// A [`SendError`]; `Unsent` and `Stale` hand the request back when it can be resent.
    ///
    /// The response comes boxed, its body made by `wrap`: the caller's futures then move one
    /// pointer instead of the response head (about 250 bytes) at each level.
    ///
    /// `raw`: nothing reads the response's fields but the HTTP/1.1 server writing them to the
    /// client, so a final response may carry them as [`RawFields`] (in its extensions, with an
    /// empty map) instead of a `HeaderMap`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send<B>(
        mut self,
        mut req: Box<Request<ProxyBody>>,
        reused: bool,
        recycle: Recycle,
        wrap: fn(ClientBody) -> B,
        raw: bool,
        added: Option<&AddedFields>,
        fields: Option<&RequestFieldsFn<'_>>,
    ) -> Result<Box<Response<B>>, SendError> {
        // The request stays in its box (one pointer to move through the exchange's states,
        // and the box itself goes back when it can be resent).
        let head_request = req.method() == Method::HEAD;
        let mut out = std::mem::take(&mut self.head);
        out.clear();
        out.reserve(512);
        // The fields are the request's own, or, its map left empty, where the caller keeps
        // them (see `SendOptions::fields`): encoded from there, by reference.
        let mut framed = None;
        if let Some(with) = fields.filter(|_| req.headers().is_empty()) {
            with(&mut |headers| framed = Some(frame_and_encode(&req, headers, added, &mut out)));
        }
        let framing = match framed
            .unwrap_or_else(|| frame_and_encode(&req, req.headers(), added, &mut out))
        {
            Ok(f) => f,
            Err(e) => return Err(SendError::Body(e.into())),
        };
        if framing == RequestFraming::Empty {
            // Nothing of the request is consumed until a response arrives: on the keep-alive
            // race it goes back whole, and the caller may resend it.
            let written = write_all_tracked(&mut self.io, &out).await;
            self.head = out;
            if let Err((written, e)) = written {
                return Err(if written == 0 && reused {
                    SendError::Unsent(req, e)
                } else {
                    SendError::Io(e)
                });
            }
            return match self.read_head(head_request, reused, raw).await {
                Ok(h) => {
                    head::recycle(std::mem::take(req.headers_mut()));
                    Ok(self.response(h, true, recycle, wrap))
                }
                Err(SendError::Stale(_, e)) => Err(SendError::Stale(Some(req), e)),
                Err(e) => Err(e),
            };
        }
        let body = std::mem::replace(req.body_mut(), crate::body::empty());
        let mut writer = BodyWriter::new(body, framing, Bytes::from(out));
        let whole = match poll_fn(|cx| self.poll_send_body(cx, &mut writer)).await {
            Ok(whole) => whole,
            Err(SendError::Io(e)) if reused && writer.untouched() => {
                *req.body_mut() = writer.into_body();
                return Err(SendError::Unsent(req, e));
            }
            Err(e) => return Err(e),
        };
        // The body was consumed: a stale connection cannot resend it (Stale carries nothing).
        let h = self.read_head(head_request, reused && whole, raw).await?;
        let sent = writer.finished();
        Ok(self.response(h, sent, recycle, wrap))
    }

    fn response<B>(
        self,
        h: Parsed,
        sent: bool,
        recycle: Recycle,
        wrap: fn(ClientBody) -> B,
    ) -> Box<Response<B>> {
        let (parts, framing, keep_alive) = h;
        let body = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            ClientBody::upgrade(self)
        } else {
            ClientBody::new(self, framing, (keep_alive && sent).then_some(recycle))
        };
        Box::new(Response::from_parts(parts, wrap(body)))
    }

    /// Write the head and body, and watch for an early response meanwhile. `Ok(true)`: the
    /// request went out whole; `Ok(false)`: response bytes arrived first (the upstream answered
    /// without waiting for the rest of the body, e.g. a 413), so the response is read now and
    /// the rest of the body is not sent.
    fn poll_send_body(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut BodyWriter,
    ) -> Poll<Result<bool, SendError>> {
        loop {
            match w.poll_step(&mut self.io, cx) {
                Poll::Ready(Ok(true)) => return Poll::Ready(Ok(true)),
                Poll::Ready(Ok(false)) => continue,
                Poll::Ready(Err(WriteFailure::Body(e))) => {
                    return Poll::Ready(Err(SendError::Body(e)))
                }
                Poll::Ready(Err(WriteFailure::Io(e))) => {
                    // The upstream may have answered and closed: a response in flight wins.
                    return Poll::Ready(if self.buf.is_empty() {
                        Err(SendError::Io(e))
                    } else {
                        Ok(false)
                    });
                }
                Poll::Pending => break,
            }
        }
        // While the body waits (socket full, or the client is slow to send), an answer may come.
        match poll_read_buf(&mut self.io, cx, &mut self.buf) {
            Poll::Ready(Ok(0)) => {
                Poll::Ready(Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(false)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Read until a final response head is complete; skip interim (1xx) responses but 101.
    async fn read_head(
        &mut self,
        head_request: bool,
        stale_possible: bool,
        raw: bool,
    ) -> Result<(http::response::Parts, Framing, bool), SendError> {
        let mut interim = 0;
        let mut received_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match parse_response(&mut self.buf, head_request, raw)? {
                    Some(parsed)
                        if parsed.0.status.is_informational()
                            && parsed.0.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(SendError::BadResponse("too many interim responses"));
                        }
                        continue;
                    }
                    Some(parsed) => return Ok(parsed),
                    None if self.buf.len() >= MAX_RESPONSE_HEAD => {
                        return Err(SendError::BadResponse("response head too large"))
                    }
                    None => {}
                }
            }
            let read = poll_fn(|cx| poll_read_buf(&mut self.io, cx, &mut self.buf)).await;
            match read {
                Ok(0) if !received_any && stale_possible => {
                    return Err(SendError::Stale(None, io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) if received_any => {
                    return Err(SendError::BadResponse(
                        "connection closed inside the response head",
                    ))
                }
                Ok(0) => {
                    return Err(SendError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before any response",
                    )))
                }
                Ok(_) => received_any = true,
                Err(e) if !received_any && stale_possible && is_reset(&e) => {
                    return Err(SendError::Stale(None, e))
                }
                Err(e) => return Err(SendError::Io(e)),
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// `write_all`, reporting how many bytes went out before an error.
async fn write_all_tracked(io: &mut UpstreamIo, mut data: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while !data.is_empty() {
        match io.write(data).await {
            Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                data = &data[n..];
            }
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request's framing: its `Content-Length` if it has one (the client's, or a filter's),
/// else the body's exact size, else chunked. A body that is already complete has none.
fn request_framing(headers: &HeaderMap, body: &ProxyBody) -> Result<RequestFraming, &'static str> {
    if body.is_end_stream() {
        return Ok(RequestFraming::Empty);
    }
    match head::content_length(headers) {
        Ok(Some(n)) => return Ok(RequestFraming::Length(n)),
        Ok(None) => {}
        Err(_) => return Err("invalid content-length in the upstream request"),
    }
    Ok(match body.size_hint().exact() {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    })
}

/// Methods whose requests carry content by definition: an empty one says so with
/// `Content-Length: 0` (RFC 9110 §8.6; some servers answer 411 otherwise).
fn expects_content(m: &Method) -> bool {
    *m == Method::POST || *m == Method::PUT || *m == Method::PATCH
}

/// The request's framing from `headers` (its fields) and its body, and its head encoded into
/// `out` with that framing. Inlined at both of its call sites: the usual one (the request's own
/// fields) keeps the encoding in the send path, as when it had one caller.
#[inline(always)]
fn frame_and_encode(
    req: &Request<ProxyBody>,
    headers: &HeaderMap,
    added: Option<&AddedFields>,
    out: &mut Vec<u8>,
) -> Result<RequestFraming, &'static str> {
    let framing = request_framing(headers, req.body())?;
    encode_head(req, headers, framing, added, out);
    Ok(framing)
}

/// `METHOD target HTTP/1.1`, the fields (`headers`), the framing field, the empty line.
#[inline(always)]
fn encode_head<B>(
    req: &Request<B>,
    headers: &HeaderMap,
    framing: RequestFraming,
    added: Option<&AddedFields>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        out.extend_from_slice(uri.authority().map_or("", |a| a.as_str()).as_bytes());
    } else {
        out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // One pass of name comparisons instead of two hashed lookups (a head has few fields).
    let (mut has_host, mut has_length) = (false, false);
    for name in headers.keys() {
        has_host |= *name == header::HOST;
        has_length |= *name == header::CONTENT_LENGTH;
    }
    if !has_host {
        if let Some(a) = uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in headers {
        // Framing is ours to write: the client's `Transfer-Encoding` was hop-by-hop, and a
        // `Content-Length` is rewritten below when the body it described is gone.
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && framing == RequestFraming::Empty)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(added) = added {
        added.write(out);
    }
    match framing {
        RequestFraming::Empty => {
            if has_length || expects_content(req.method()) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        RequestFraming::Length(n) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            head::write_u64(n, out);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Length(_) => {}
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head: parts, how its body is framed, whether the connection may be kept.
type Parsed = (http::response::Parts, Framing, bool);

/// Parse a response head from the front of `buf` (consumed when complete); `None` if more is
/// needed.
fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    raw: bool,
) -> Result<Option<Parsed>, SendError> {
    let Some(len) = head::head_len(buf) else {
        return Ok(None);
    };
    // The head is split off first, so that header values can be slices of it (no copy).
    let head = buf.split_to(len).freeze();
    let mut fields = [httparse::EMPTY_HEADER; SMALL_FIELDS];
    let mut many;
    let mut resp = httparse::Response::new(&mut fields);
    let parsed = match resp.parse(&head) {
        Err(httparse::Error::TooManyHeaders) => {
            many = vec![httparse::EMPTY_HEADER; MAX_FIELDS];
            resp = httparse::Response::new(&mut many);
            resp.parse(&head)
        }
        other => other,
    };
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::BadResponse("too many header fields"))
        }
        _ => return Err(SendError::BadResponse("unparsable response head")),
    }
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| SendError::BadResponse("invalid status code"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut r = Response::new(());
    // A final response whose fields only the client will read: passed through as received
    // (1xx, 101 and 204 have fields of their own to drop or keep, and take the map path).
    let passed = (raw
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::SWITCHING_PROTOCOLS)
        .then(|| RawFields::of(&head, resp.headers))
        .flatten();
    let scan = match passed {
        Some((fields, scan)) => {
            super::raw_fields::attach(r.extensions_mut(), fields);
            scan
        }
        None => {
            // Hop-by-hop fields are dropped here: the proxy would remove them anyway, and
            // callouts never see them (as with Envoy's codec).
            let (mut headers, scan) = head::fields_to_map(&head, resp.headers, 2, true)
                .map_err(|_| SendError::BadResponse("invalid header field"))?;
            if scan.transfer_encoding && (scan.content_length.is_some() || scan.bad_length) {
                // The chunked framing wins; a length forwarded with it would lie (RFC 9112 §6.3).
                headers.remove(header::CONTENT_LENGTH);
            }
            *r.headers_mut() = headers;
            scan
        }
    };
    let (framing, mut keep_alive) = response_framing(status, head_request, &scan)?;
    keep_alive &= match version {
        Version::HTTP_10 => scan.keep_alive,
        _ => !scan.close,
    };
    *r.status_mut() = status;
    *r.version_mut() = version;
    Ok(Some((r.into_parts().0, framing, keep_alive)))
}

/// Header fields parsed without a heap allocation; a head with more is parsed again with room
/// for [`MAX_FIELDS`].
const SMALL_FIELDS: usize = 32;

/// RFC 9112 §6.3, in order: no body for HEAD, 1xx, 204 and 304; chunked when the last transfer
/// coding is chunked (another coding: until close); else `Content-Length`; else until close.
/// The boolean: whether the framing lets the connection be reused.
fn response_framing(
    status: StatusCode,
    head_request: bool,
    scan: &head::Scan,
) -> Result<(Framing, bool), SendError> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), true));
    }
    if scan.transfer_encoding {
        // Both framings present is how request smuggling starts: use chunked, never reuse.
        let reuse = scan.content_length.is_none() && !scan.bad_length;
        return Ok(if scan.chunked {
            (Framing::Chunked(chunked::Decoder::new()), reuse)
        } else {
            (Framing::Close, false)
        });
    }
    if scan.bad_length {
        return Err(SendError::BadResponse("invalid content-length"));
    }
    Ok(match scan.content_length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// Why writing a request stopped.
enum WriteFailure {
    Io(io::Error),
    Body(BoxError),
}

/// Streams a request body to the connection with its framing, after the head.
struct BodyWriter {
    body: ProxyBody,
    framing: RequestFraming,
    queue: WriteQueue,
    /// Bytes of a `Length` body still to send.
    remaining: u64,
    body_done: bool,
    /// A byte was written or a frame taken.
    touched: bool,
    /// The body was polled once (before the head was written).
    first_polled: bool,
}

impl BodyWriter {
    fn new(body: ProxyBody, framing: RequestFraming, head: Bytes) -> Self {
        let mut queue = WriteQueue::default();
        queue.push(head);
        let remaining = match framing {
            RequestFraming::Length(n) => n,
            _ => 0,
        };
        BodyWriter {
            body,
            framing,
            queue,
            remaining,
            body_done: false,
            touched: false,
            first_polled: false,
        }
    }

    fn finished(&self) -> bool {
        self.body_done && self.queue.is_empty()
    }

    /// Whether nothing was written and no frame taken: the request can still go elsewhere.
    fn untouched(&self) -> bool {
        !self.touched
    }

    fn into_body(self) -> ProxyBody {
        self.body
    }

    /// One step: take the next body frame when everything before it is written (and once
    /// before the head goes out, so that a small body leaves in the head's write), else write
    /// what is queued. `Ready(Ok(true))` when the whole request is written.
    fn poll_step(
        &mut self,
        io: &mut UpstreamIo,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, WriteFailure>> {
        if !self.body_done && (self.queue.is_empty() || !self.first_polled) {
            self.first_polled = true;
            // Frames are taken only when the socket took everything before them: back-pressure
            // reaches the client, and at most one frame waits here.
            match self.body.as_mut().poll_frame(cx) {
                Poll::Pending if self.queue.is_empty() => return Poll::Pending,
                Poll::Pending => {}
                Poll::Ready(frame) => {
                    self.touched = true;
                    self.take(frame).map_err(WriteFailure::Body)?;
                    return Poll::Ready(Ok(false));
                }
            }
        }
        if !self.queue.is_empty() {
            let r = self.queue.poll_write(io, cx);
            if self.queue.written() > 0 {
                self.touched = true;
            }
            return match r {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(self.body_done)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(WriteFailure::Io(e))),
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Ready(Ok(self.body_done))
    }

    fn take(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, BoxError>>,
    ) -> Result<(), BoxError> {
        match frame {
            None => self.finish(None),
            Some(Err(e)) => Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.data(data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => self.finish(Some(&trailers)),
                    Err(_) => Ok(()),
                },
            },
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), BoxError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            RequestFraming::Length(_) => {
                let n = data.len() as u64;
                if n > self.remaining {
                    return Err("request body longer than its content-length".into());
                }
                self.remaining -= n;
                self.queue.push(data);
            }
            RequestFraming::Chunked => {
                let mut line = Vec::with_capacity(18);
                chunked::size_line(data.len(), &mut line);
                self.queue.push(Bytes::from(line));
                self.queue.push(data);
                self.queue.push(Bytes::from_static(b"\r\n"));
            }
            RequestFraming::Empty => return Err("request body where none was framed".into()),
        }
        Ok(())
    }

    /// The body ended (with trailers, which only chunked framing can carry; otherwise they are
    /// dropped, as hyper does).
    fn finish(&mut self, trailers: Option<&HeaderMap>) -> Result<(), BoxError> {
        self.body_done = true;
        match self.framing {
            RequestFraming::Length(_) if self.remaining > 0 => {
                Err("request body shorter than its content-length".into())
            }
            RequestFraming::Chunked => {
                let mut end = Vec::with_capacity(5);
                chunked::last_chunk(trailers, &mut end);
                self.queue.push(Bytes::from(end));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(
        method: Method,
        body: ProxyBody,
        headers: &[(&'static str, &'static str)],
    ) -> Request<ProxyBody> {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = "/a?b=1".parse().unwrap();
        for (k, v) in headers {
            r.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        r
    }

    fn encoded(r: Request<ProxyBody>) -> String {
        let mut out = Vec::new();
        frame_and_encode(&r, r.headers(), None, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn heads_and_framing() {
        let r = req(Method::GET, crate::body::empty(), &[("host", "h")]);
        assert_eq!(encoded(r), "GET /a?b=1 HTTP/1.1\r\nhost: h\r\n\r\n");
        let r = req(Method::POST, crate::body::empty(), &[("host", "h")]);
        assert_eq!(
            encoded(r),
            "POST /a?b=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
        let r = req(Method::POST, crate::body::full("abc"), &[("host", "h")]);
        assert_eq!(
            encoded(r),
            "POST /a?b=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
        );
        let r = req(
            Method::PUT,
            crate::body::full("abc"),
            &[("host", "h"), ("content-length", "3")],
        );
        assert_eq!(
            encoded(r),
            "PUT /a?b=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
        );
        // A filter emptied the body: the stale length is replaced.
        let r = req(
            Method::PUT,
            crate::body::empty(),
            &[("host", "h"), ("content-length", "3")],
        );
        assert_eq!(
            encoded(r),
            "PUT /a?b=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
    }

    fn parse(raw: &'static [u8], head: bool) -> Result<Option<Parsed>, SendError> {
        let mut buf = BytesMut::from(raw);
        parse_response(&mut buf, head, false)
    }

    #[test]
    fn response_heads() {
        let (p, f, keep) = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-a"], "b");
        assert!(matches!(f, Framing::Length(5)));
        assert!(keep);
        let (_, f, keep) = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(f, Framing::Chunked(_)));
        assert!(keep);
        let (_, f, keep) = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(f, Framing::Chunked(_)));
        assert!(!keep, "both framings: never reused");
        let (_, f, keep) = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert!(matches!(f, Framing::Close));
        assert!(!keep);
        let (_, f, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert!(matches!(f, Framing::Length(0)), "HEAD has no body");
        let (_, f, keep) = parse(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(matches!(f, Framing::Length(0)));
        assert!(keep);
        let (_, _, keep) = parse(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!keep);
        let (p, _, keep) = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(p.version, Version::HTTP_10);
        assert!(!keep);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-", false)
            .unwrap()
            .is_none());
        assert!(matches!(
            parse(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            ),
            Err(SendError::BadResponse(_))
        ));
        assert!(matches!(
            parse(b"HTTX/1.1 200\r\n\r\n", false),
            Err(SendError::BadResponse(_))
        ));
    }
}
