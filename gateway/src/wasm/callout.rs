//! Sending a plugin's callouts (`proxy_http_call`, `proxy_grpc_call`) through the worker's
//! upstream pools, and turning the answers into what the VM delivers to the plugin.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request};
use http_body::Frame;
use http_body_util::StreamBody;
use http_body_util::{BodyExt, Limited};
use sluice_wasm::{
    Callout, CalloutKind, CalloutResponse, Failure, GrpcEvent, GrpcSend, StreamHost, Vm,
};

use crate::body;

/// Largest callout response body the host reads.
const MAX_CALLOUT_BODY: usize = 4 * 1024 * 1024;
/// gRPC status codes used when the transport fails.
const GRPC_UNAVAILABLE: u32 = 14;
const GRPC_INTERNAL: u32 = 13;
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

/// The answer to one callout, ready to be delivered.
pub(crate) struct Answer {
    ctx: u32,
    token: u32,
    result: AnswerKind,
}

enum AnswerKind {
    Http(Option<CalloutResponse>),
    Grpc(Result<CalloutResponse, (u32, String)>),
}

impl Answer {
    /// Call the plugin's response callback.
    pub(crate) fn deliver(
        self,
        vm: &mut Vm,
        host: Option<&mut dyn StreamHost>,
    ) -> Result<(), Failure> {
        match self.result {
            AnswerKind::Http(r) => vm.on_http_call_response(self.ctx, self.token, r, host),
            AnswerKind::Grpc(r) => vm.on_grpc_response(self.ctx, self.token, r, host),
        }
    }
}

fn pairs(h: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Send the call and wait for its whole answer (bounded in size and by the call's timeout).
pub(crate) async fn send(call: Callout) -> Answer {
    let (ctx, token) = (call.context_id, call.token);
    let result = match call.kind {
        // Streams are run by `grpc_stream`; one arriving here is answered as unavailable.
        CalloutKind::GrpcStream { .. } => {
            AnswerKind::Grpc(Err((GRPC_UNAVAILABLE, "gRPC stream sent as a call".into())))
        }
        CalloutKind::Http { request, .. } => {
            let (parts, body) = request.into_parts();
            let req = Request::from_parts(parts, body::full(body));
            AnswerKind::Http(http(&call.cluster, req, call.timeout).await)
        }
        CalloutKind::Grpc {
            service,
            method,
            metadata,
            message,
        } => AnswerKind::Grpc(
            grpc(
                &call.cluster,
                &service,
                &method,
                metadata,
                message,
                call.timeout,
            )
            .await,
        ),
    };
    Answer { ctx, token, result }
}

async fn exchange(
    cluster: &str,
    req: Request<body::ProxyBody>,
    timeout: std::time::Duration,
) -> Result<CalloutResponse, String> {
    let fut = async {
        let resp = crate::worker::dispatch(cluster, req, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let collected = Limited::new(body, MAX_CALLOUT_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading callout response: {e}"))?;
        let trailers = collected.trailers().map(pairs).unwrap_or_default();
        let mut headers = vec![(
            b":status".to_vec(),
            parts.status.as_str().as_bytes().to_vec(),
        )];
        headers.extend(pairs(&parts.headers));
        Ok(CalloutResponse {
            headers,
            body: collected.to_bytes(),
            trailers,
        })
    };
    // The dispatch timeout covers the response head; this bounds the body too.
    match tokio::time::timeout(timeout * 2, fut).await {
        Ok(r) => r,
        Err(_) => Err("callout timed out".into()),
    }
}

async fn http(
    cluster: &str,
    req: Request<body::ProxyBody>,
    timeout: std::time::Duration,
) -> Option<CalloutResponse> {
    match exchange(cluster, req, timeout).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(cluster, error = %e, "plugin http callout failed");
            None
        }
    }
}

/// A unary gRPC call: one length-prefixed message out, one in, status from the trailers.
async fn grpc(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: HeaderMap,
    message: Bytes,
    timeout: std::time::Duration,
) -> Result<CalloutResponse, (u32, String)> {
    let req = grpc_request(service, method, metadata, body::full(frame_grpc(&message)))
        .map_err(|e| (GRPC_INTERNAL, e))?;
    let resp = exchange(cluster, req, timeout)
        .await
        .map_err(|e| (GRPC_UNAVAILABLE, e))?;
    decode_grpc(resp)
}

/// A gRPC request over HTTP/2 to `/service/method` with the plugin's metadata.
fn grpc_request(
    service: &str,
    method: &str,
    metadata: HeaderMap,
    body: body::ProxyBody,
) -> Result<Request<body::ProxyBody>, String> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = format!("/{service}/{method}")
        .parse()
        .map_err(|_| "invalid service or method name".to_string())?;
    *req.headers_mut() = metadata;
    let h = req.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(req)
}

/// Run an open gRPC stream: messages from `outbox` go up framed; every answer event goes to
/// `deliver`, which returns false when the plugin is gone (the stream is then dropped).
pub(crate) async fn grpc_stream(
    call: Callout,
    outbox: tokio::sync::mpsc::UnboundedReceiver<GrpcSend>,
    mut deliver: impl FnMut(GrpcEvent) -> bool,
) {
    let CalloutKind::GrpcStream {
        service,
        method,
        metadata,
    } = call.kind
    else {
        return;
    };
    let up = futures_util::stream::unfold((outbox, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        // The VM dropping its sender (it failed or went away) ends the request stream.
        let send = rx.recv().await?;
        if send.cancel {
            let reset: body::BoxError = "gRPC stream cancelled by the plugin".into();
            return Some((Err(reset), (rx, true)));
        }
        let data = send.message.map_or_else(Bytes::new, |m| frame_grpc(&m));
        Some((Ok(Frame::data(data)), (rx, send.end_stream)))
    });
    let req = match grpc_request(
        &service,
        &method,
        metadata,
        body::boxed(StreamBody::new(up)),
    ) {
        Ok(r) => r,
        Err(e) => {
            deliver(GrpcEvent::Close(GRPC_INTERNAL, e));
            return;
        }
    };
    let resp = match crate::worker::dispatch(&call.cluster, req, call.timeout).await {
        Ok(r) => r,
        Err(e) => {
            deliver(GrpcEvent::Close(GRPC_UNAVAILABLE, e.to_string()));
            return;
        }
    };
    let (parts, mut incoming) = resp.into_parts();
    let mut headers = vec![(
        b":status".to_vec(),
        parts.status.as_str().as_bytes().to_vec(),
    )];
    headers.extend(pairs(&parts.headers));
    if !deliver(GrpcEvent::InitialMetadata(headers.clone())) {
        return;
    }
    let mut buf = BytesMut::new();
    let mut trailers = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                deliver(GrpcEvent::Close(GRPC_UNAVAILABLE, e.to_string()));
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                if buf.len() > MAX_CALLOUT_BODY {
                    deliver(GrpcEvent::Close(
                        GRPC_RESOURCE_EXHAUSTED,
                        "gRPC message too large".into(),
                    ));
                    return;
                }
                while let Some(msg) = next_message(&mut buf) {
                    if !deliver(GrpcEvent::Message(msg)) {
                        return;
                    }
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = pairs(&t);
                }
            }
        }
    }
    let (code, message) = grpc_status(&headers, &trailers);
    if !trailers.is_empty() && !deliver(GrpcEvent::TrailingMetadata(trailers)) {
        return;
    }
    deliver(GrpcEvent::Close(code, message));
}

/// Split one complete message off the front of `buf`.
fn next_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let mut msg = buf.split_to(5 + len);
    Some(msg.split_off(5).freeze())
}

/// The gRPC status of an answer: trailers first, then (trailers-only answers) headers.
fn grpc_status(headers: &[(Vec<u8>, Vec<u8>)], trailers: &[(Vec<u8>, Vec<u8>)]) -> (u32, String) {
    let find = |list: &[(Vec<u8>, Vec<u8>)], name: &[u8]| {
        list.iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let code = find(trailers, b"grpc-status")
        .or_else(|| find(headers, b"grpc-status"))
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(GRPC_INTERNAL);
    let message = find(trailers, b"grpc-message")
        .or_else(|| find(headers, b"grpc-message"))
        .unwrap_or_default();
    (code, message)
}

/// Frame one gRPC message: compressed flag 0, 4-byte big-endian length, the message.
fn frame_grpc(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The status and single message of a unary gRPC answer.
fn decode_grpc(resp: CalloutResponse) -> Result<CalloutResponse, (u32, String)> {
    let (code, message) = grpc_status(&resp.headers, &resp.trailers);
    if code != 0 {
        return Err((code, message));
    }
    let body = &resp.body;
    if body.len() < 5 || body[0] != 0 {
        return Err((GRPC_INTERNAL, "missing or compressed gRPC message".into()));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let Some(msg) = body.get(5..5 + len) else {
        return Err((GRPC_INTERNAL, "truncated gRPC message".into()));
    };
    Ok(CalloutResponse {
        headers: resp.headers.clone(),
        body: Bytes::copy_from_slice(msg),
        trailers: resp.trailers.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: Bytes, trailers: &[(&str, &str)]) -> CalloutResponse {
        CalloutResponse {
            headers: vec![(b":status".to_vec(), b"200".to_vec())],
            body,
            trailers: trailers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn unary_grpc_round_trip() {
        let framed = frame_grpc(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        let ok = decode_grpc(answer(framed, &[("grpc-status", "0")]));
        assert_eq!(ok.map(|r| r.body), Ok(Bytes::from_static(b"hello")));
    }

    #[test]
    fn stream_messages_are_split_at_frame_boundaries() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame_grpc(b"one"));
        buf.extend_from_slice(&frame_grpc(b"two")[..4]);
        assert_eq!(next_message(&mut buf), Some(Bytes::from_static(b"one")));
        assert_eq!(
            next_message(&mut buf),
            None,
            "a partial frame waits for more data"
        );
        buf.extend_from_slice(&frame_grpc(b"two")[4..]);
        assert_eq!(next_message(&mut buf), Some(Bytes::from_static(b"two")));
        assert!(buf.is_empty());
    }

    #[test]
    fn grpc_errors_carry_status_and_message() {
        let err = decode_grpc(answer(
            Bytes::new(),
            &[("grpc-status", "7"), ("grpc-message", "no")],
        ));
        assert_eq!(err.err(), Some((7, "no".to_string())));
        let truncated = decode_grpc(answer(
            Bytes::from_static(&[0, 0, 0, 0, 9, 1]),
            &[("grpc-status", "0")],
        ));
        assert_eq!(truncated.err().map(|e| e.0), Some(GRPC_INTERNAL));
        let no_status = decode_grpc(answer(frame_grpc(b"x"), &[]));
        assert_eq!(no_status.err().map(|e| e.0), Some(GRPC_INTERNAL));
    }
}
