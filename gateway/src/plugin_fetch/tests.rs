use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

/// A one-route HTTP/1.1 server on 127.0.0.1:0: `/code` answers `body`, `/moved` redirects to
/// `/code`, anything else is 404. Counts the requests it answers.
async fn serve(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let reply: Vec<u8> = if head.starts_with("GET /code ") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            } else if head.starts_with("GET /moved ") {
                b"HTTP/1.1 302 Found\r\nlocation: /code\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
            };
            let _ = s.write_all(&reply).await;
        }
    });
    (base, hits)
}

const CODE: &[u8] = b"\0asm\x01\0\0\0 pretend module";

#[tokio::test]
async fn fetches_checks_and_caches_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, hits) = serve(CODE).await;
    let sha = sluice_wasm::cache::sha256_hex(CODE);
    let t = Duration::from_secs(10);
    let p = fetch_in(dir.path().into(), &format!("{base}/code"), &sha, t)
        .await
        .expect("fetch");
    assert_eq!(std::fs::read(&p).expect("read"), CODE);
    assert_eq!(p, dir.path().join(format!("{sha}.wasm")));
    // The second time comes from the cache: the server sees no new request.
    let again = fetch_in(
        dir.path().into(),
        &format!("{base}/code"),
        &sha.to_uppercase(),
        t,
    )
    .await
    .expect("cached");
    assert_eq!(again, p);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A damaged cache file is not trusted: it is fetched again.
    std::fs::write(&p, b"garbage").expect("damage");
    fetch_in(dir.path().into(), &format!("{base}/code"), &sha, t)
        .await
        .expect("refetch");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(&p).expect("read"), CODE);
}

#[tokio::test]
async fn follows_a_redirect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _) = serve(CODE).await;
    let sha = sluice_wasm::cache::sha256_hex(CODE);
    fetch_in(
        dir.path().into(),
        &format!("{base}/moved"),
        &sha,
        Duration::from_secs(10),
    )
    .await
    .expect("fetch through a redirect");
}

#[tokio::test]
async fn a_wrong_digest_is_refused_and_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _) = serve(CODE).await;
    let want = "0".repeat(64);
    let e = fetch_in(
        dir.path().into(),
        &format!("{base}/code"),
        &want,
        Duration::from_secs(10),
    )
    .await
    .expect_err("mismatch");
    assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains(&want), "{e}");
    assert!(cached_in(dir.path(), &want).is_none());
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[tokio::test]
async fn not_found_and_bad_inputs_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _) = serve(CODE).await;
    let sha = sluice_wasm::cache::sha256_hex(CODE);
    let t = Duration::from_secs(10);
    let e = fetch_in(dir.path().into(), &format!("{base}/nope"), &sha, t)
        .await
        .expect_err("404");
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e}");
    let e = fetch_in(dir.path().into(), "ftp://example.com/x.wasm", &sha, t)
        .await
        .expect_err("scheme");
    assert!(matches!(e, FetchError::BadUrl(_)), "{e}");
    let e = fetch_in(dir.path().into(), &format!("{base}/code"), "abc", t)
        .await
        .expect_err("digest");
    assert!(matches!(e, FetchError::BadDigest(_)), "{e}");
}

#[test]
fn blocking_fetch_works_without_a_runtime() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (base, _) = rt.block_on(serve(CODE));
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var(CODE_DIR_ENV, dir.path());
    let sha = sluice_wasm::cache::sha256_hex(CODE);
    let p = fetch_blocking(&format!("{base}/code"), &sha, Duration::from_secs(10)).expect("fetch");
    assert!(p.starts_with(dir.path()));
    assert_eq!(store(CODE).expect("store"), p);
}
