//! WebSocket (and other `Upgrade`) passthrough: after the upstream answers 101, the two upgraded
//! connections are spliced byte for byte.

use hyper_util::rt::TokioIo;

/// Where the downstream connection goes after a 101 answer.
pub enum Downstream {
    /// An HTTP/1.1 connection of Sluice's own server.
    H1(crate::h1::OnUpgrade),
    /// A connection served by hyper.
    Hyper(hyper::upgrade::OnUpgrade),
}

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

/// Splice the downstream upgraded stream and the upstream connection (and the bytes each side
/// sent after its head) on the current worker.
pub fn splice(down: Downstream, up: crate::h1::Conn) {
    tokio::task::spawn_local(async move {
        let crate::h1::Conn {
            io: mut up, buf, ..
        } = up;
        let result = match down {
            Downstream::H1(rx) => match rx.await {
                Ok(crate::h1::Upgraded { mut io, read }) => {
                    match write_both(&mut io, &buf, &mut up, &read).await {
                        Ok(()) => tokio::io::copy_bidirectional(&mut io, &mut up)
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
                Err(_) => {
                    tracing::debug!("upgrade failed: the downstream connection ended first");
                    return;
                }
            },
            Downstream::Hyper(on) => match on.await {
                Ok(io) => {
                    let mut io = TokioIo::new(io);
                    match write_both(&mut io, &buf, &mut up, &[]).await {
                        Ok(()) => tokio::io::copy_bidirectional(&mut io, &mut up)
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            },
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}

/// Deliver what each side sent right after its head (already read by us) to the other side.
async fn write_both<D, U>(
    down: &mut D,
    to_down: &[u8],
    up: &mut U,
    to_up: &[u8],
) -> std::io::Result<()>
where
    D: tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    if !to_down.is_empty() {
        down.write_all(to_down).await?;
    }
    if !to_up.is_empty() {
        up.write_all(to_up).await?;
    }
    Ok(())
}
