//! Sending a plugin's callouts (`proxy_http_call`, `proxy_grpc_call`) through the worker's
//! upstream pools, and turning the answers into what the VM delivers to the plugin.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use sluice_wasm::{Callout, CalloutKind, CalloutResponse, Failure, StreamHost, Vm};

use crate::body;

/// Largest callout response body the host reads.
const MAX_CALLOUT_BODY: usize = 4 * 1024 * 1024;
/// gRPC status codes used when the transport fails.
const GRPC_UNAVAILABLE: u32 = 14;
const GRPC_INTERNAL: u32 = 13;

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
    let mut req = Request::new(body::full(frame_grpc(&message)));
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = format!("/{service}/{method}")
        .parse()
        .map_err(|_| (GRPC_INTERNAL, "invalid service or method name".to_string()))?;
    *req.headers_mut() = metadata;
    let h = req.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let resp = exchange(cluster, req, timeout)
        .await
        .map_err(|e| (GRPC_UNAVAILABLE, e))?;
    decode_grpc(resp)
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
    let find = |list: &[(Vec<u8>, Vec<u8>)], name: &[u8]| {
        list.iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    // Trailers-only answers carry the status in the headers.
    let status =
        find(&resp.trailers, b"grpc-status").or_else(|| find(&resp.headers, b"grpc-status"));
    let code = status
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(GRPC_INTERNAL);
    if code != 0 {
        let msg = find(&resp.trailers, b"grpc-message")
            .or_else(|| find(&resp.headers, b"grpc-message"))
            .unwrap_or_default();
        return Err((code, msg));
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
