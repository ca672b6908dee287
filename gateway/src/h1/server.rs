//! A downstream HTTP/1.1 connection: read a request head, hand the request to the request path,
//! write its response, and go on while the connection may be kept alive.
//!
//! The connection is one task. Its request path runs inline in that task (no future is boxed or
//! moved per request), the request body reads the shared socket as it is polled, and the
//! response head and the first body frame leave in one vectored write.
//!
//! Behaviour (RFC 9112):
//! - Heads: leading empty lines are skipped; a head larger than `max_head` gets 431, one that does
//!   not parse (method, target, version, fields) 400, a version other than 1.0/1.1 505; then the
//!   connection closes. `Transfer-Encoding` whose last coding is not chunked, or together with
//!   `Content-Length`, and conflicting `Content-Length` values get 400 (request smuggling).
//! - Timeouts: the first request must arrive within `header_read_timeout` of the accept; between
//!   keep-alive requests a connection may sit `idle_timeout`; once the first byte of a head has
//!   arrived, the whole head must within `header_read_timeout` (else 408, then close).
//! - Keep-alive: HTTP/1.1 unless either side says `Connection: close`; HTTP/1.0 only with
//!   `Connection: keep-alive`. A request whose body was not read to the end closes the
//!   connection after its response (unless what is left is already buffered).
//! - `Expect: 100-continue`: `100 Continue` is sent when the request path first reads the body.
//! - Responses: `Content-Length` when known (from the header or the body's exact size), else
//!   chunked for HTTP/1.1 (trailers only to a client that sent `TE: trailers`), else delimited by
//!   closing the connection; no body for HEAD, 1xx, 204 and 304; a `Date` when there is none.
//! - Upgrades: after a 101 answer the connection (and bytes read past the head) goes to the
//!   request's [`OnUpgrade`] and this loop ends.
//! - Draining: once the listener drains (`DrainWatch`), the next response says `Connection: close`; an idle
//!   connection closes after `drain_grace` (a request already on its way still gets its answer).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::chunked;
use super::date::write_date;
use super::head::{self, MAX_FIELDS};
use super::io::{poll_read_buf, WriteQueue};
use super::raw_fields::RawFields;
use super::server_body::{Reading, ServerBody, Shared};
use crate::body::ProxyBody;
use crate::lazy_timer::LazyTimer;
use crate::listener::drain::DrainWatch;

/// A downstream connection: plain TCP or TLS.
pub type ServerIo = crate::listener::tls::ConnIo;

/// Resolves to the connection once a 101 answer to the request went out.
pub type OnUpgrade = oneshot::Receiver<Upgraded>;

/// A connection handed over after a 101 answer.
pub struct Upgraded {
    pub io: ServerIo,
    /// Bytes the client sent after the request head (already read from the socket).
    pub read: Bytes,
}

/// Limits of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The largest request head accepted (431 beyond).
    pub max_head: usize,
    /// How long an idle connection stays open once draining starts.
    pub drain_grace: Duration,
}

/// Header fields parsed without a heap allocation; a head with more is parsed again with room
/// for [`MAX_FIELDS`].
const SMALL_FIELDS: usize = 32;
/// Room left in a request's header map for what the request path adds (x-request-id,
/// X-Forwarded-For, X-Forwarded-Proto, a trace context, filters' headers).
const PROXY_FIELDS: usize = 8;
/// The longest request target accepted (as hyper: longer gets 414).
const MAX_URI: usize = 65534;
/// After a response that closes the connection with request bytes still unread, how long and
/// how much is read and discarded before closing, so that the client gets the response rather
/// than a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What a request head told about the exchange.
#[derive(Debug, Clone, Copy)]
struct Flags {
    method_head: bool,
    http10: bool,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    te_trailers: bool,
}

/// The result of waiting for a request head.
// Returned once per request and matched at once: boxing the head would cost an allocation per
// request for no gain.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(http::request::Parts, Reading, Flags),
    /// Answer with this status, then close.
    Reject(StatusCode),
    /// The head did not complete in time: 408 if part of it arrived, then close.
    TimedOut {
        partial: bool,
    },
    /// The client closed, or draining ended an idle connection.
    Close,
}

/// Serve HTTP/1.1 on `io` (`initial`: bytes already read from it) until the connection ends.
/// `handle` is the request path: it gets each request (and, for an upgrade request, where the
/// connection goes after a 101) and returns the response. `written` gets each response head
/// back once it is encoded, before the body is read (the request path's log phase may want it).
pub async fn serve<S, F, W>(
    io: ServerIo,
    initial: BytesMut,
    settings: Settings,
    mut drain: DrainWatch,
    mut handle: S,
    mut written: W,
) where
    S: FnMut(Request<ServerBody>, Option<OnUpgrade>) -> F,
    F: Future<Output = Response<ProxyBody>>,
    W: FnMut(http::response::Parts),
{
    let shared = Rc::new(RefCell::new(Shared::new(io, initial)));
    // Kept across the connection's responses: a response head is written into `heads` and
    // split off, and the space comes back once it was sent (no allocation per response).
    let mut heads = BytesMut::new();
    let mut queue = WriteQueue::default();
    let mut timer = LazyTimer::new(Instant::now() + settings.header_read_timeout);
    let mut first = true;
    loop {
        let next = next_request(&shared, &mut timer, &settings, first, &mut drain).await;
        first = false;
        let (parts, reading, flags) = match next {
            Next::Request(parts, reading, flags) => (parts, reading, flags),
            Next::Reject(status) => return reject(&shared, status).await,
            Next::TimedOut { partial: true } => {
                return reject(&shared, StatusCode::REQUEST_TIMEOUT).await
            }
            Next::TimedOut { partial: false } | Next::Close => return close(&shared, false).await,
        };
        let body = {
            let mut s = shared.borrow_mut();
            s.request += 1;
            let has_body = !matches!(reading, Reading::Done);
            s.continue_left = if has_body && flags.expect_continue && s.rbuf.is_empty() {
                CONTINUE_LEN
            } else {
                0
            };
            s.reading = reading;
            if has_body {
                ServerBody::new(shared.clone(), s.request)
            } else {
                ServerBody::empty()
            }
        };
        let (upgrade_tx, upgrade_rx) = if flags.upgrade {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let resp = handle(Request::from_parts(parts, body), upgrade_rx).await;
        let draining = drain.is_draining();
        let upgrading = resp.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade_tx.is_some();
        let out = Outbox {
            heads: &mut heads,
            queue: &mut queue,
        };
        let keep = match write_response(
            &shared,
            out,
            resp,
            flags,
            draining,
            upgrading,
            &mut written,
        )
        .await
        {
            Ok(keep) => keep,
            Err(e) => {
                tracing::debug!(error = %e, "writing the response failed");
                return;
            }
        };
        if upgrading {
            let mut s = shared.borrow_mut();
            let read = s.rbuf.split().freeze();
            if let (Some(io), Some(tx)) = (s.io.take(), upgrade_tx) {
                let _ = tx.send(Upgraded { io, read });
            }
            return;
        }
        let complete = {
            let mut s = shared.borrow_mut();
            s.continue_left = 0;
            s.drain_buffered()
        };
        if !keep || !complete {
            return close(&shared, !complete).await;
        }
    }
}

/// Length of the `100 Continue` interim response (see `server_body`).
const CONTINUE_LEN: usize = b"HTTP/1.1 100 Continue\r\n\r\n".len();

/// Wait for the next request head and parse it.
async fn next_request(
    shared: &Rc<RefCell<Shared>>,
    timer: &mut LazyTimer,
    settings: &Settings,
    first: bool,
    drain: &mut DrainWatch,
) -> Next {
    // A pipelined request may already be here: no timer, no wait.
    if let Some(next) = parse_buffered(shared, settings) {
        return next;
    }
    // The previous request's finish time when it just ended (one clock reading for both).
    let now = if first {
        Instant::now()
    } else {
        crate::request_clock::take_finished()
    };
    let mut head_started = !shared.borrow().rbuf.is_empty();
    let wait = if first || head_started {
        settings.header_read_timeout
    } else {
        settings.idle_timeout
    };
    timer.set(now + wait);
    let mut draining = drain.is_draining();
    if draining {
        timer.set(now + settings.drain_grace.min(wait));
    }
    poll_fn(|cx| loop {
        let read = {
            let mut guard = shared.borrow_mut();
            let s = &mut *guard;
            match s.io.as_mut() {
                Some(io) => poll_read_buf(io, cx, &mut s.rbuf),
                None => return Poll::Ready(Next::Close),
            }
        };
        match read {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Next::Close),
            Poll::Ready(Ok(_)) => {
                if let Some(next) = parse_buffered(shared, settings) {
                    return Poll::Ready(next);
                }
                if !head_started && !shared.borrow().rbuf.is_empty() {
                    head_started = true;
                    timer.set(Instant::now() + settings.header_read_timeout);
                }
                continue;
            }
            Poll::Pending => {}
        }
        if timer.poll_expired(cx).is_ready() {
            return Poll::Ready(if draining && !head_started {
                Next::Close
            } else {
                Next::TimedOut {
                    partial: head_started,
                }
            });
        }
        if !draining {
            // The flag only ever turns on.
            if drain.poll_draining(cx).is_ready() {
                draining = true;
                if !head_started {
                    let grace = Instant::now() + settings.drain_grace;
                    if grace < timer.deadline() {
                        timer.set(grace);
                    }
                }
                continue;
            }
        }
        return Poll::Pending;
    })
    .await
}

/// Parse a complete head from the read buffer, if there is one (or report it too large).
fn parse_buffered(shared: &Rc<RefCell<Shared>>, settings: &Settings) -> Option<Next> {
    let mut s = shared.borrow_mut();
    skip_empty_lines(&mut s.rbuf);
    if s.rbuf.is_empty() {
        return None;
    }
    let Some(len) = head::head_len(&s.rbuf) else {
        return (s.rbuf.len() > settings.max_head)
            .then_some(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    };
    if len > settings.max_head {
        return Some(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
    let head = s.rbuf.split_to(len).freeze();
    Some(match parse_request(&head) {
        Ok((parts, reading, flags)) => Next::Request(parts, reading, flags),
        Err(status) => Next::Reject(status),
    })
}

/// RFC 9112 §2.2: a server should ignore empty lines before a request line.
fn skip_empty_lines(buf: &mut BytesMut) {
    let n = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

/// Parse a complete request head (its values share `head`).
fn parse_request(head: &Bytes) -> Result<(http::request::Parts, Reading, Flags), StatusCode> {
    let mut fields = [httparse::EMPTY_HEADER; SMALL_FIELDS];
    let mut many;
    let mut req = httparse::Request::new(&mut fields);
    let parsed = match req.parse(head) {
        Err(httparse::Error::TooManyHeaders) => {
            many = vec![httparse::EMPTY_HEADER; MAX_FIELDS];
            req = httparse::Request::new(&mut many);
            req.parse(head)
        }
        other => other,
    };
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(httparse::Error::Version) => return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
        _ => return Err(StatusCode::BAD_REQUEST),
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let path = req.path.unwrap_or("");
    if path.len() > MAX_URI {
        return Err(StatusCode::URI_TOO_LONG);
    }
    let uri = if path.is_empty() {
        return Err(StatusCode::BAD_REQUEST);
    } else {
        Uri::from_maybe_shared(head.slice_ref(path.as_bytes()))
            .map_err(|_| StatusCode::BAD_REQUEST)?
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED),
    };
    let (headers, scan) = head::fields_to_map(head, req.headers, PROXY_FIELDS, false)
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let reading = request_framing(&scan)?;
    let http10 = version == Version::HTTP_10;
    let flags = Flags {
        method_head: method == Method::HEAD,
        http10,
        keep_alive: if http10 { scan.keep_alive } else { !scan.close },
        expect_continue: !http10 && scan.expect_continue,
        upgrade: scan.upgrade && scan.upgrade_token,
        te_trailers: scan.te_trailers,
    };
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    Ok((r.into_parts().0, reading, flags))
}

/// RFC 9112 §6.1–6.3 for requests: chunked when `Transfer-Encoding` ends with chunked (any other
/// transfer coding, or `Content-Length` alongside, is refused), else `Content-Length`, else no
/// body.
fn request_framing(scan: &head::Scan) -> Result<Reading, StatusCode> {
    if scan.transfer_encoding {
        if !scan.chunked || scan.content_length.is_some() || scan.bad_length {
            return Err(StatusCode::BAD_REQUEST);
        }
        return Ok(Reading::Chunked(chunked::Decoder::new()));
    }
    if scan.bad_length {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(match scan.content_length {
        Some(0) | None => Reading::Done,
        Some(n) => Reading::Length(n),
    })
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body is sent (HEAD, 1xx, 204, 304, 101).
    None,
    /// `Content-Length`.
    Length(u64),
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 client, length unknown).
    Close,
}

/// Write `resp`; `Ok(keep)` says whether the connection may serve another request.
/// A connection's buffers for writing responses.
struct Outbox<'a> {
    heads: &'a mut BytesMut,
    queue: &'a mut WriteQueue,
}

async fn write_response(
    shared: &Rc<RefCell<Shared>>,
    out_bufs: Outbox<'_>,
    resp: Response<ProxyBody>,
    flags: Flags,
    draining: bool,
    upgrading: bool,
    written: &mut impl FnMut(http::response::Parts),
) -> io::Result<bool> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let no_body = upgrading
        || flags.method_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // Fields passed through as the upstream sent them (see `raw_fields`), or the map's.
    let raw = parts.extensions.get::<RawFields>();
    let declared = match raw {
        Some(r) => r.content_length,
        None => head::content_length(&parts.headers).ok().flatten(),
    };
    let out = if no_body {
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        Out::Length(n)
    } else if !flags.http10 {
        Out::Chunked
    } else {
        Out::Close
    };
    let keep = flags.keep_alive && !draining && out != Out::Close && !upgrading;
    let heads = out_bufs.heads;
    heads.reserve(256 + parts.headers.len() * 32);
    encode_head(&parts, raw, out, declared.is_some(), keep, flags, heads);
    // Handed back before the body can end (or be dropped unread), which finishes the exchange.
    written(parts);
    let mut w = ResponseWriter {
        queue: std::mem::take(out_bufs.queue),
        body: if out == Out::None { None } else { Some(body) },
        out,
        left: match out {
            Out::Length(n) => n,
            _ => 0,
        },
        trailers: flags.te_trailers,
        first_polled: false,
        complete: out == Out::None,
    };
    w.queue.push(heads.split().freeze());
    if out == Out::Length(0) {
        w.complete = true;
        w.body = None;
    }
    poll_fn(|cx| w.poll(shared, cx)).await?;
    // Written out whole: the (empty) queue keeps its buffer for the next response.
    *out_bufs.queue = std::mem::take(&mut w.queue);
    Ok(keep && w.complete)
}

/// The status line, the fields (without framing fields, which are ours), framing, `Date`,
/// `Connection`, and the empty line.
fn encode_head(
    parts: &http::response::Parts,
    raw: Option<&RawFields>,
    out: Out,
    declared_length: bool,
    keep: bool,
    flags: Flags,
    buf: &mut BytesMut,
) {
    let status = parts.status;
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.extend_from_slice(b" ");
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
    // 1xx and 204 carry no framing fields at all (RFC 9110 §8.6); HEAD and 304 keep the
    // length they were given, which describes the representation.
    let strip_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut has_date = false;
    if let Some(raw) = raw {
        // Framing and hop-by-hop lines are already out (and 1xx and 204 never come this way).
        for piece in raw.pieces() {
            buf.extend_from_slice(piece);
        }
        // Then the lines filters added (before the map's entries, which came after them).
        let added = raw.added();
        if !added.is_empty() {
            buf.extend_from_slice(added);
        }
        has_date = raw.has_date;
    }
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING
            || *name == header::CONNECTION
            || (strip_length && *name == header::CONTENT_LENGTH)
        {
            // A 101's `Connection: upgrade` is the handshake itself.
            if !(status == StatusCode::SWITCHING_PROTOCOLS && *name == header::CONNECTION) {
                continue;
            }
        }
        has_date |= *name == header::DATE;
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match out {
        Out::Length(n) if !declared_length => {
            buf.extend_from_slice(b"content-length: ");
            head::write_u64(n, buf);
            buf.extend_from_slice(b"\r\n");
        }
        Out::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !has_date {
        write_date(buf);
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if !keep {
            buf.extend_from_slice(b"connection: close\r\n");
        } else if flags.http10 {
            buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    buf.extend_from_slice(b"\r\n");
}

/// Streams a response body after its head.
struct ResponseWriter {
    queue: WriteQueue,
    body: Option<ProxyBody>,
    out: Out,
    /// Bytes of a `Length` body still owed.
    left: u64,
    /// Whether the client accepts trailers (chunked only).
    trailers: bool,
    first_polled: bool,
    /// The body went out whole, as framed.
    complete: bool,
}

impl ResponseWriter {
    /// The socket is borrowed only around each write: the response body may be anything,
    /// including something that reads the request body from the same connection.
    fn poll(&mut self, shared: &RefCell<Shared>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let with_io = |f: &mut dyn FnMut(&mut ServerIo) -> Poll<io::Result<()>>| {
            let mut s = shared.borrow_mut();
            match s.io.as_mut() {
                Some(io) => f(io),
                None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            }
        };
        loop {
            // Take the next frame once before the head goes out (a small body joins the head's
            // write), then whenever everything before it is written.
            if self.body.is_some() && (self.queue.is_empty() || !self.first_polled) {
                self.first_polled = true;
                let polled = match self.body.as_mut() {
                    Some(b) => b.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                };
                match polled {
                    Poll::Pending if self.queue.is_empty() => {
                        // Waiting on the upstream: what was written must reach the client.
                        return match with_io(&mut |io| Pin::new(io).poll_flush(cx)) {
                            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                            _ => Poll::Pending,
                        };
                    }
                    Poll::Pending => {}
                    Poll::Ready(frame) => {
                        if let Err(e) = self.take(frame) {
                            // Cut: the client sees a short body and a closed connection.
                            self.body = None;
                            self.complete = false;
                            tracing::debug!(error = %e, "response body failed; closing the connection");
                            if self.queue.is_empty() {
                                return Poll::Ready(Ok(()));
                            }
                        }
                        continue;
                    }
                }
            }
            if !self.queue.is_empty() {
                let queue = &mut self.queue;
                match with_io(&mut |io| queue.poll_write(io, cx)) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.body.is_none() {
                return with_io(&mut |io| Pin::new(io).poll_flush(cx));
            }
        }
    }

    fn take(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, crate::body::BoxError>>,
    ) -> Result<(), crate::body::BoxError> {
        let frame = match frame {
            None => return self.end(None),
            Some(f) => f?,
        };
        let frame = match frame.into_data() {
            Ok(data) => return self.data(data),
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(t) => self.end(Some(t)),
            Err(_) => Ok(()),
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), crate::body::BoxError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.out {
            Out::Length(_) => {
                let n = data.len() as u64;
                if n > self.left {
                    return Err("response body longer than its content-length".into());
                }
                self.left -= n;
                self.queue.push(data);
                if self.left == 0 {
                    // Everything framed is queued: no need to poll the body for its end.
                    self.body = None;
                    self.complete = true;
                }
            }
            Out::Chunked => {
                let mut line = Vec::with_capacity(18);
                chunked::size_line(data.len(), &mut line);
                self.queue.push(Bytes::from(line));
                self.queue.push(data);
                self.queue.push(Bytes::from_static(b"\r\n"));
            }
            Out::Close => self.queue.push(data),
            Out::None => {}
        }
        Ok(())
    }

    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), crate::body::BoxError> {
        self.body = None;
        match self.out {
            Out::Length(_) if self.left > 0 => {
                Err("response body shorter than its content-length".into())
            }
            Out::Chunked => {
                let mut end = Vec::with_capacity(5);
                let trailers = trailers.filter(|t| self.trailers && !t.is_empty());
                chunked::last_chunk(trailers.as_ref(), &mut end);
                self.queue.push(Bytes::from(end));
                self.complete = true;
                Ok(())
            }
            _ => {
                self.complete = true;
                Ok(())
            }
        }
    }
}

/// Answer `status` with an empty body and close.
async fn reject(shared: &Rc<RefCell<Shared>>, status: StatusCode) {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n");
    write_date(&mut buf);
    buf.extend_from_slice(b"\r\n");
    let io = shared.borrow_mut().io.take();
    if let Some(mut io) = io {
        let _ = io.write_all(&buf).await;
        finish_close(io, true).await;
    }
}

/// Close the connection: flush, send FIN (TLS: close_notify first); with `linger`, read and
/// discard what the client still sends for a moment, so that a reset does not destroy the
/// response it has not read yet.
async fn close(shared: &Rc<RefCell<Shared>>, linger: bool) {
    let io = shared.borrow_mut().io.take();
    if let Some(io) = io {
        finish_close(io, linger).await;
    }
}

async fn finish_close(mut io: ServerIo, linger: bool) {
    let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
    if !linger {
        return;
    }
    let mut sink = BytesMut::with_capacity(8192);
    let deadline = Instant::now() + LINGER_TIME;
    let mut read = 0;
    while read < LINGER_BYTES {
        sink.clear();
        let r = tokio::time::timeout_at(
            deadline,
            poll_fn(|cx| poll_read_any(&mut io, cx, &mut sink)),
        )
        .await;
        match r {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => return,
        }
    }
}

fn poll_read_any<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    poll_read_buf(io, cx, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &'static [u8]) -> Result<(http::request::Parts, Reading, Flags), StatusCode> {
        parse_request(&Bytes::from_static(raw))
    }

    #[test]
    fn request_heads() {
        let (p, r, f) = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.uri.path(), "/a");
        assert_eq!(p.headers["host"], "x");
        assert!(matches!(r, Reading::Done));
        assert!(f.keep_alive && !f.http10 && !f.upgrade);
        let (_, r, _) = parse(b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n").unwrap();
        assert!(matches!(r, Reading::Length(5)));
        let (_, r, _) = parse(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert!(matches!(r, Reading::Chunked(_)));
        let (_, _, f) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(f.http10 && !f.keep_alive);
        let (_, _, f) = parse(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").unwrap();
        assert!(f.keep_alive);
        let (_, _, f) = parse(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
        assert!(!f.keep_alive);
        let (_, _, f) =
            parse(b"GET / HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n").unwrap();
        assert!(f.upgrade);
        let (_, _, f) =
            parse(b"PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n").unwrap();
        assert!(f.expect_continue);
        let (p, _, _) = parse(b"GET http://h.example/x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(p.uri.host(), Some("h.example"));
    }

    #[test]
    fn smuggling_and_garbage_are_refused() {
        let bad = |raw: &'static [u8]| parse(raw).map(|_| ()).unwrap_err();
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(bad(b"G\x01T / HTTP/1.1\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            bad(b"GET / HTTP/2.0\r\n\r\n"),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
    }

    fn head_of(
        status: u16,
        headers: &[(&'static str, &'static str)],
        out: Out,
        keep: bool,
    ) -> String {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut()
                .append(*k, http::HeaderValue::from_static(v));
        }
        let parts = r.into_parts().0;
        let declared = parts.headers.contains_key(header::CONTENT_LENGTH);
        let flags = Flags {
            method_head: false,
            http10: false,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
            te_trailers: false,
        };
        let mut buf = BytesMut::new();
        encode_head(&parts, None, out, declared, keep, flags, &mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn response_heads() {
        let h = head_of(200, &[("date", "x"), ("x-a", "1")], Out::Length(5), true);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        let h = head_of(200, &[("date", "x")], Out::Chunked, false);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let h = head_of(
            204,
            &[("date", "x"), ("content-length", "0")],
            Out::None,
            true,
        );
        assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
        let h = head_of(200, &[], Out::Length(0), true);
        assert!(h.contains("\r\ndate: "), "{h}");
    }
}
