//! Stream control (continue, close, local response, route cache) and outgoing calls
//! (`proxy_http_call`, `proxy_grpc_call`). Calls are recorded in the VM; the embedder sends them
//! after the callback returns and delivers the answers in later callbacks.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use wasmtime::{Caller, Linker};

use crate::abi::{Status, StreamType};
use crate::memory::{read, read_string, write_u32, HostResult};
use crate::pairs;
use crate::state::{Callout, CalloutKind, GrpcSend, HostState, LocalReply};

type C<'a> = Caller<'a, HostState>;

/// Timeout used when a plugin passes 0.
const DEFAULT_CALLOUT_TIMEOUT: Duration = Duration::from_secs(5);

fn status(s: Status) -> HostResult {
    Ok(s.code())
}

pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, t: i32| -> HostResult { continue_stream(&mut c, StreamType::from_i32(t)) },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: C<'_>, t: i32| -> HostResult {
            if StreamType::from_i32(t).is_none() {
                return status(Status::BadArgument);
            }
            super::signal(&mut c).close = true;
            status(Status::Ok)
        },
    )?;
    // ABI 0.1.0 names.
    l.func_wrap(
        "env",
        "proxy_continue_request",
        |mut c: C<'_>| -> HostResult { continue_stream(&mut c, Some(StreamType::Request)) },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_response",
        |mut c: C<'_>| -> HostResult { continue_stream(&mut c, Some(StreamType::Response)) },
    )?;
    l.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |mut c: C<'_>| -> HostResult {
            if let Some(s) = c.data_mut().stream() {
                s.clear_route_cache();
            }
            status(Status::Ok)
        },
    )?;
    l.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    l.func_wrap("env", "proxy_http_call", http_call)?;
    l.func_wrap("env", "proxy_grpc_call", grpc_call)?;
    l.func_wrap("env", "proxy_grpc_stream", grpc_stream)?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, mp: i32, ml: i32, end: i32| -> HostResult {
            let message = match read(&c, mp, ml) {
                Ok(m) => m,
                Err(s) => return status(s),
            };
            let st = c.data_mut();
            if !st.grpc_streams.contains(&(token as u32)) {
                return status(Status::NotFound);
            }
            st.grpc_outbox.push(GrpcSend {
                token: token as u32,
                message: Some(Bytes::from(message)),
                end_stream: end != 0,
                cancel: false,
            });
            status(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: C<'_>, token: i32| -> HostResult { end_grpc(c.data_mut(), token as u32, true) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: C<'_>, token: i32| -> HostResult { end_grpc(c.data_mut(), token as u32, false) },
    )?;
    Ok(())
}

fn continue_stream(c: &mut C<'_>, t: Option<StreamType>) -> HostResult {
    match t {
        Some(StreamType::Request) => super::signal(c).continue_request = true,
        Some(StreamType::Response) => super::signal(c).continue_response = true,
        Some(_) => return status(Status::Unimplemented),
        None => return status(Status::BadArgument),
    }
    status(Status::Ok)
}

/// Close (half-close) or cancel a gRPC stream; for a unary call both cancel it.
fn end_grpc(st: &mut HostState, token: u32, cancel_stream: bool) -> HostResult {
    if st.grpc_streams.contains(&token) {
        if cancel_stream {
            st.grpc_streams.remove(&token);
            st.cancelled.insert(token);
        }
        st.grpc_outbox.push(GrpcSend {
            token,
            message: None,
            end_stream: true,
            cancel: cancel_stream,
        });
        return status(Status::Ok);
    }
    cancel(st, token)
}

/// A call not yet sent is dropped; one in flight is answered by nobody (its answer is ignored).
fn cancel(st: &mut HostState, token: u32) -> HostResult {
    let before = st.callouts.len();
    st.callouts.retain(|c| c.token != token);
    if st.callouts.len() == before {
        st.cancelled.insert(token);
    }
    status(Status::Ok)
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: C<'_>,
    code: i32,
    dp: i32,
    dl: i32,
    bp: i32,
    bl: i32,
    hp: i32,
    hl: i32,
    grpc: i32,
) -> HostResult {
    let details = read_string(&c, dp, dl);
    let body = read(&c, bp, bl);
    let headers = read(&c, hp, hl);
    let (details, body, headers) = match (details, body, headers) {
        (Ok(d), Ok(b), Ok(h)) => (d, b, h),
        (Err(s), _, _) | (_, Err(s), _) | (_, _, Err(s)) => return status(s),
    };
    let Ok(headers) = pairs::decode(&headers) else {
        return status(Status::ParseFailure);
    };
    let Ok(code) = u16::try_from(code) else {
        return status(Status::BadArgument);
    };
    if !(200..=599).contains(&code) {
        return status(Status::BadArgument);
    }
    super::signal(&mut c).local_reply = Some(Box::new(LocalReply {
        status: code,
        details,
        body: Bytes::from(body),
        headers,
        grpc_status: u32::try_from(grpc).ok(),
    }));
    status(Status::Ok)
}

fn next_token(st: &mut HostState) -> u32 {
    let t = st.next_token;
    st.next_token = st.next_token.wrapping_add(1).max(1);
    t
}

fn timeout(ms: i32) -> Duration {
    match ms as u32 {
        0 => DEFAULT_CALLOUT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    }
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: C<'_>,
    up: i32,
    ul: i32,
    hp: i32,
    hl: i32,
    bp: i32,
    bl: i32,
    tp: i32,
    tl: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> HostResult {
    let parts = (
        read_string(&c, up, ul),
        read(&c, hp, hl),
        read(&c, bp, bl),
        read(&c, tp, tl),
    );
    let (cluster, headers, body, trailers) = match parts {
        (Ok(u), Ok(h), Ok(b), Ok(t)) => (u, h, b, t),
        (Err(s), ..) | (_, Err(s), ..) | (_, _, Err(s), _) | (.., Err(s)) => return status(s),
    };
    if c.data()
        .known_cluster
        .as_ref()
        .is_some_and(|known| !known(&cluster))
    {
        return status(Status::BadArgument);
    }
    let (Ok(headers), Ok(trailers)) = (pairs::decode(&headers), pairs::decode(&trailers)) else {
        return status(Status::ParseFailure);
    };
    let pseudo = |name: &[u8]| {
        headers
            .iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let (Some(method), Some(path)) = (pseudo(b":method"), pseudo(b":path")) else {
        return status(Status::BadArgument);
    };
    let authority = pseudo(b":authority").unwrap_or_else(|| cluster.clone());
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return status(Status::BadArgument);
    };
    let mut req = http::Request::new(Bytes::from(body));
    *req.method_mut() = method;
    match path.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return status(Status::BadArgument),
    }
    *req.headers_mut() = pairs::to_header_map(&headers);
    if let Ok(host) = http::HeaderValue::from_str(&authority) {
        req.headers_mut().insert(http::header::HOST, host);
    }
    if let Err(s) = crate::memory::check(&c, ret_token, 4) {
        return status(s);
    }
    let st = c.data_mut();
    let token = next_token(st);
    let context_id = st.effective_ctx;
    st.callouts.push(Callout {
        token,
        context_id,
        cluster,
        kind: CalloutKind::Http {
            request: req,
            trailers: pairs::to_header_map(&trailers),
        },
        timeout: timeout(timeout_ms),
    });
    match write_u32(&mut c, ret_token, token) {
        Ok(()) => status(Status::Ok),
        Err(s) => status(s),
    }
}

#[allow(clippy::too_many_arguments)]
fn grpc_call(
    mut c: C<'_>,
    up: i32,
    ul: i32,
    sp: i32,
    sl: i32,
    mp: i32,
    ml: i32,
    hp: i32,
    hl: i32,
    msgp: i32,
    msgl: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> HostResult {
    let parts = (
        read_string(&c, up, ul),
        read_string(&c, sp, sl),
        read_string(&c, mp, ml),
        read(&c, hp, hl),
        read(&c, msgp, msgl),
    );
    let (cluster, service, method, metadata, message) = match parts {
        (Ok(a), Ok(b), Ok(m), Ok(h), Ok(g)) => (a, b, m, h, g),
        (Err(s), ..) | (_, Err(s), ..) | (_, _, Err(s), ..) | (.., Err(s), _) | (.., Err(s)) => {
            return status(s)
        }
    };
    let Ok(metadata) = pairs::decode(&metadata) else {
        return status(Status::ParseFailure);
    };
    if let Err(s) = crate::memory::check(&c, ret_token, 4) {
        return status(s);
    }
    let metadata: HeaderMap = pairs::to_header_map(&metadata);
    let st = c.data_mut();
    let token = next_token(st);
    let context_id = st.effective_ctx;
    st.callouts.push(Callout {
        token,
        context_id,
        cluster,
        kind: CalloutKind::Grpc {
            service,
            method,
            metadata,
            message: Bytes::from(message),
        },
        timeout: timeout(timeout_ms),
    });
    match write_u32(&mut c, ret_token, token) {
        Ok(()) => status(Status::Ok),
        Err(s) => status(s),
    }
}

#[allow(clippy::too_many_arguments)]
fn grpc_stream(
    mut c: C<'_>,
    up: i32,
    ul: i32,
    sp: i32,
    sl: i32,
    mp: i32,
    ml: i32,
    hp: i32,
    hl: i32,
    ret_token: i32,
) -> HostResult {
    let parts = (
        read_string(&c, up, ul),
        read_string(&c, sp, sl),
        read_string(&c, mp, ml),
        read(&c, hp, hl),
    );
    let (cluster, service, method, metadata) = match parts {
        (Ok(a), Ok(b), Ok(m), Ok(h)) => (a, b, m, h),
        (Err(s), ..) | (_, Err(s), ..) | (_, _, Err(s), _) | (.., Err(s)) => return status(s),
    };
    let Ok(metadata) = pairs::decode(&metadata) else {
        return status(Status::ParseFailure);
    };
    if let Err(s) = crate::memory::check(&c, ret_token, 4) {
        return status(s);
    }
    let st = c.data_mut();
    let token = next_token(st);
    let context_id = st.effective_ctx;
    st.grpc_streams.insert(token);
    st.callouts.push(Callout {
        token,
        context_id,
        cluster,
        kind: CalloutKind::GrpcStream {
            service,
            method,
            metadata: pairs::to_header_map(&metadata),
        },
        // Streams live until either side ends them; this bounds only the response head.
        timeout: DEFAULT_CALLOUT_TIMEOUT,
    });
    match write_u32(&mut c, ret_token, token) {
        Ok(()) => status(Status::Ok),
        Err(s) => status(s),
    }
}
