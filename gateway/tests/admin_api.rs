//! The admin API over real loopback sockets with a real hyper client.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sluice::admin::{self, AdminServer, AdminState};
use sluice::services::Services;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Generous bound so a broken server fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Result<Value, Error> {
        Ok(serde_json::from_str(&self.body)?)
    }
}

async fn call(addr: SocketAddr, method: Method, path: &str) -> Result<Reply, Error> {
    tokio::time::timeout(LIMIT, async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec())?,
        })
    })
    .await?
}

fn state() -> AdminState {
    AdminState::new(Services::new())
        .with_config_json(|| json!({ "listeners": [{ "name": "public" }] }))
        .with_plugins_json(|| json!([{ "name": "auth", "version": "1" }]))
}

/// Runs the default router on 127.0.0.1:0 on this test's runtime; returns the address and the
/// shutdown trigger with the server task.
async fn start(
    state: Arc<AdminState>,
) -> Result<
    (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ),
    Error,
> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(admin::serve(listener, state, async {
        let _ = rx.await;
    }));
    Ok((addr, tx, task))
}

#[tokio::test]
async fn endpoints_status_codes_and_content_types() -> Result<(), Error> {
    let state = Arc::new(state());
    state
        .services
        .metrics
        .route("public", "api", "backend")
        .record(200, Duration::from_millis(1), Duration::from_millis(1));
    let (addr, stop, task) = start(state.clone()).await?;

    let r = call(addr, Method::GET, "/healthz").await?;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert!(r.content_type().starts_with("text/plain"));

    assert_eq!(
        call(addr, Method::GET, "/ready").await?.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.ready.store(true, Ordering::Release);
    assert_eq!(
        call(addr, Method::GET, "/ready").await?.status,
        StatusCode::OK
    );
    state.draining.store(true, Ordering::Release);
    let r = call(addr, Method::GET, "/ready").await?;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    );

    let r = call(addr, Method::GET, "/metrics").await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    assert!(r.body.contains(
        "sluice_requests_total{listener=\"public\",route=\"api\",cluster=\"backend\",status=\"200\"} 1\n"
    ));

    let r = call(addr, Method::GET, "/config").await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(r.json()?, json!({ "listeners": [{ "name": "public" }] }));
    assert!(r.body.contains('\n'), "pretty-printed");

    let r = call(addr, Method::GET, "/plugins").await?;
    assert_eq!(r.json()?, json!([{ "name": "auth", "version": "1" }]));

    let r = call(addr, Method::GET, "/").await?;
    assert_eq!(r.status, StatusCode::OK);
    let paths: Vec<Value> = r.json()?["endpoints"]
        .as_array()
        .map(|a| a.iter().map(|e| e["path"].clone()).collect())
        .unwrap_or_default();
    for p in [
        "/healthz", "/ready", "/metrics", "/config", "/plugins", "/reload",
    ] {
        assert!(paths.contains(&json!(p)), "index lacks {p}");
    }

    let r = call(addr, Method::GET, "/nope").await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.content_type(), "application/json");
    assert!(r.json()?["endpoints"]
        .as_array()
        .is_some_and(|a| a.len() == 6));

    let r = call(addr, Method::POST, "/metrics").await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.headers.get(header::ALLOW).map(|v| v.as_bytes()),
        Some(&b"GET, HEAD"[..])
    );

    let r = call(addr, Method::HEAD, "/healthz").await?;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, ""));

    let r = call(addr, Method::GET, "/reload").await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.headers.get(header::ALLOW).map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    // No reload hook was given.
    assert_eq!(
        call(addr, Method::POST, "/reload").await?.status,
        StatusCode::NOT_IMPLEMENTED
    );

    let _ = stop.send(());
    tokio::time::timeout(LIMIT, task).await???;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn reload_outcomes() -> Result<(), Error> {
    let attempts = Arc::new(Mutex::new(0u32));
    let counter = attempts.clone();
    let state = state().with_reload(move || {
        let mut n = counter.lock().map_err(|e| e.to_string())?;
        *n += 1;
        if *n == 1 {
            Ok("v2".to_string())
        } else {
            Err("listeners[0].address: invalid socket address".to_string())
        }
    });
    let (addr, stop, task) = start(Arc::new(state)).await?;

    let r = call(addr, Method::POST, "/reload").await?;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()?, json!({ "version": "v2" }));

    let r = call(addr, Method::POST, "/reload").await?;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        r.json()?["error"],
        "listeners[0].address: invalid socket address"
    );

    let _ = stop.send(());
    tokio::time::timeout(LIMIT, task).await???;
    Ok(())
}

#[tokio::test]
async fn overlapping_reload_is_refused() -> Result<(), Error> {
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let state = state().with_reload(move || {
        let _ = entered_tx.send(());
        // Held until the test has seen the second request refused.
        let rx = release_rx.lock().map_err(|e| e.to_string())?;
        rx.recv_timeout(LIMIT).map_err(|e| e.to_string())?;
        Ok("v3".to_string())
    });
    let (addr, stop, task) = start(Arc::new(state)).await?;

    let first = tokio::spawn(call(addr, Method::POST, "/reload"));
    tokio::time::timeout(LIMIT, entered_rx.recv()).await?;
    let r = call(addr, Method::POST, "/reload").await?;
    assert_eq!(r.status, StatusCode::CONFLICT);
    release_tx.send(())?;
    let r = tokio::time::timeout(LIMIT, first).await???;
    assert_eq!(
        (r.status, r.json()?),
        (StatusCode::OK, json!({ "version": "v3" }))
    );

    let _ = stop.send(());
    tokio::time::timeout(LIMIT, task).await???;
    Ok(())
}

#[tokio::test]
async fn extra_route_and_dedicated_thread() -> Result<(), Error> {
    let router = admin::default_router().route("/xdp/bans", Method::DELETE, |_, _| async {
        admin::AdminResponse::new(http_body_util::Full::new(Bytes::from_static(b"unbanned")))
    });
    let server = AdminServer::start("127.0.0.1:0".parse()?, Arc::new(state()), router)?;
    let addr = server.local_addr();

    let r = call(addr, Method::DELETE, "/xdp/bans").await?;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "unbanned"));
    let r = call(addr, Method::GET, "/xdp/bans").await?;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.headers.get(header::ALLOW).map(|v| v.as_bytes()),
        Some(&b"DELETE"[..])
    );
    assert_eq!(
        call(addr, Method::GET, "/healthz").await?.status,
        StatusCode::OK
    );

    tokio::task::spawn_blocking(move || server.stop()).await??;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after stop"
    );
    Ok(())
}
