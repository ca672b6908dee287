//! WebSocket (and other `Upgrade`) passthrough: after the upstream answers 101, the two upgraded
//! connections are spliced byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    let h = req.headers();
    h.contains_key(http::header::UPGRADE)
        && h.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Splice the downstream upgraded stream and the upstream connection (and the bytes it sent
/// after its 101 head) on the current worker.
pub fn splice(down: OnUpgrade, up: crate::h1::Conn) {
    tokio::task::spawn_local(async move {
        let down = match down.await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let crate::h1::Conn { io: mut up, buf } = up;
        if !buf.is_empty() {
            if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut down, &buf).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
                return;
            }
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
