//! Test support for the conformance runner: a reflecting upstream, a gRPC health server, a real
//! gateway process and a small client. Adapted from tests/e2e/support.rs (not shared: the e2e
//! binary owns that file).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body of `data` followed by `trailers`.
pub fn with_trailers(data: &'static str, trailers: &[(&str, &str)]) -> TestBody {
    let mut map = http::HeaderMap::new();
    for (k, v) in trailers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(data.as_bytes()))),
        Ok(Frame::trailers(map)),
    ];
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

/// A server on its own thread and runtime, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Handler =
    fn(Request<Incoming>) -> futures_util::future::BoxFuture<'static, Response<TestBody>>;

fn serve(h2: bool, handler: Handler) -> Server {
    let std = StdListener::bind("127.0.0.1:0").expect("bind");
    std.set_nonblocking(true).expect("nonblocking");
    let addr = std.local_addr().expect("addr");
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(std).expect("listener");
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    r = l.accept() => {
                        let Ok((s, _)) = r else { continue };
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| async move {
                                Ok::<_, Infallible>(handler(req).await)
                            });
                            if h2 {
                                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(s), svc).await;
                            } else {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(s), svc).await;
                            }
                        });
                    }
                }
            }
        });
    });
    Server {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// The reflecting upstream (HTTP/1.1). It answers with JSON `{"method", "path", "headers",
/// "trailers", "body"}` describing the request it received, except:
/// - `/text/TEXT` answers with body `TEXT` (for response body edits);
/// - `/callout*` answers 201 with `x-callout-echo: yes` and body `callout-body`;
/// - request header `x-up-resp-NAME: V` makes it send response header `NAME: V`, and
///   `x-up-trailer-NAME: V` response trailer `NAME: V`.
///
/// Every response carries `x-upstream: echo`.
pub fn echo_upstream() -> Server {
    serve(false, |req| Box::pin(reflect(req)))
}

async fn reflect(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let mut headers = BTreeMap::<String, String>::new();
    let mut resp_headers = Vec::new();
    let mut resp_trailers = http::HeaderMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if let Some(name) = k.as_str().strip_prefix("x-up-resp-") {
            resp_headers.push((name.to_string(), v.clone()));
        }
        if let Some(name) = k.as_str().strip_prefix("x-up-trailer-") {
            if let (Ok(n), Ok(hv)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&v),
            ) {
                resp_trailers.append(n, hv);
            }
        }
        headers
            .entry(k.to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v)
            })
            .or_insert(v);
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut body = BytesMut::new();
    let mut trailers = BTreeMap::<String, String>::new();
    let mut incoming = req.into_body();
    while let Some(Ok(f)) = incoming.frame().await {
        match f.into_data() {
            Ok(d) => body.extend_from_slice(&d),
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    for (k, v) in &t {
                        trailers
                            .insert(k.to_string(), String::from_utf8_lossy(v.as_bytes()).into());
                    }
                }
            }
        }
    }
    if let Some(text) = path.strip_prefix("/slow-text/") {
        // The head now, the body 50 ms later: the gateway gets them apart, so the response
        // body reaches the filters as a stream, not whole with the head.
        let text = Bytes::from(text.to_string());
        let later = futures_util::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(Frame::data(text))
        });
        let mut r = Response::new(StreamBody::new(later).boxed());
        r.headers_mut()
            .insert("x-upstream", http::HeaderValue::from_static("echo"));
        return r;
    }
    let (status, out) = if let Some(text) = path.strip_prefix("/text/") {
        (200, Bytes::from(text.to_string()))
    } else if path == "/callout" {
        (201, Bytes::from_static(b"callout-body"))
    } else {
        let json = serde_json::json!({
            "method": method, "path": uri, "headers": headers, "trailers": trailers,
            "body": String::from_utf8_lossy(&body),
        });
        (200, Bytes::from(json.to_string()))
    };
    let body: TestBody = if resp_trailers.is_empty() {
        full(out)
    } else {
        let frames = vec![
            Ok::<_, std::io::Error>(Frame::data(out)),
            Ok(Frame::trailers(resp_trailers)),
        ];
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    };
    let mut r = Response::new(body);
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    for (k, v) in resp_headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    if path == "/callout" {
        r.headers_mut()
            .insert("x-callout-echo", http::HeaderValue::from_static("yes"));
    }
    r.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static("echo"));
    r
}

/// [`echo_upstream`] over h2c.
pub fn echo_upstream_h2() -> Server {
    serve(true, |req| Box::pin(reflect(req)))
}

/// A gRPC server over h2c implementing `grpc.health.v1.Health`: `Check` answers one SERVING
/// message (`0801`) with `grpc-status: 0` in the trailers; `Watch` sends one SERVING message and
/// keeps the stream open (as a real health server does until the status changes).
pub fn grpc_health_server() -> Server {
    serve(true, |req| Box::pin(grpc_health(req)))
}

async fn grpc_health(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    // Read the request message (the plugin sends an empty HealthCheckRequest).
    let mut incoming = req.into_body();
    let mut message = Vec::from([0u8, 0, 0, 0, 2, 0x08, 0x01]);
    let grpc = |status: &str| {
        let mut r = Response::new(full(Bytes::new()));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        if let Ok(v) = http::HeaderValue::from_str(status) {
            r.headers_mut().insert("grpc-status", v);
        }
        r
    };
    match path.as_str() {
        "/grpc.health.v1.Health/Check" => {
            while let Some(Ok(_)) = incoming.frame().await {}
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = vec![
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(std::mem::take(&mut message)))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            r
        }
        "/grpc.health.v1.Health/Watch" => {
            // One message, then the stream stays open until the client cancels it.
            let first = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(
                Bytes::from(message),
            ))]);
            let pending = futures_util::stream::pending();
            let body = StreamBody::new(futures_util::StreamExt::chain(first, pending)).boxed();
            let mut r = Response::new(body);
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            r
        }
        // UNIMPLEMENTED, trailers-only.
        _ => grpc("12"),
    }
}

/// A running `sluice run` process with its own config directory. SIGKILL + wait on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

/// Where compiled plugins are cached between the gateways of one run (compiling in a debug build
/// is the slow part of a start).
pub fn wasm_cache_dir() -> PathBuf {
    std::env::temp_dir().join("sluice-conformance-wasm-cache")
}

impl Gateway {
    /// Start with `yaml` (`{PORT}`, `{ADMIN}`, `{DIR}` are substituted); `None` with the log when
    /// the process exits instead of listening.
    ///
    /// When a port picked for it was taken before the gateway bound it (another test's server
    /// can take it in between), the start is tried again with new ports.
    pub fn try_start(yaml: &str) -> Result<Gateway, String> {
        let mut attempt = 1;
        loop {
            match Gateway::start_once(yaml) {
                Err(log) if attempt < 3 && log.contains("Address already in use") => attempt += 1,
                started => return started,
            }
        }
    }

    fn start_once(yaml: &str) -> Result<Gateway, String> {
        let port = free_port();
        let admin_port = free_port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("sluice.yaml");
        let yaml = yaml
            .replace("{PORT}", &port.to_string())
            .replace("{ADMIN}", &admin_port.to_string())
            .replace("{DIR}", &dir.path().display().to_string());
        let yaml = format!("admin: {{ address: \"127.0.0.1:{admin_port}\" }}\n{yaml}");
        std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
        let log_path = dir.path().join("sluice.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("SLUICE_WASM_CACHE_DIR", wasm_cache_dir())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut gw = Gateway {
            child: Some(child),
            dir,
            port,
            admin_port,
            config_path,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            // Ready when both the listener and the admin API accept: the admin API is bound after
            // the workers, and a scenario may call it first thing (a CI run once saw POST /reload
            // refused right after start).
            if StdStream::connect(gw.addr()).is_ok() && StdStream::connect(gw.admin_addr()).is_ok()
            {
                return Ok(gw);
            }
            if !gw.alive() {
                return Err(format!("gateway exited; log:\n{}", gw.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("gateway did not start; log:\n{}", gw.log()))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The admin `/metrics` text.
    /// The admin API's /metrics text; a failed fetch is tried again (twice) and then reported
    /// in the text itself, so that a check on it says why it found nothing.
    pub fn metrics(&self) -> String {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let req = Request::get("/metrics")
                .header("host", "admin")
                .body(full(Bytes::new()))
                .expect("static request");
            match send(self.admin_addr(), req, false) {
                Ok(r) if r.status == 200 => return r.text(),
                Ok(r) => last = format!("# /metrics answered {}: {}", r.status, r.text()),
                Err(e) => last = format!("# /metrics failed: {e}"),
            }
        }
        last
    }

    /// The value of the metric line starting with `series` (name and labels), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_CONFORMANCE_LOGS").is_some() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- gateway log (last 40 lines) ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child process id we own; no memory is touched.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// A response as the runner sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub trailers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.get(name).and_then(|v| v.to_str().ok())
    }
    /// A request header as the reflecting upstream received it.
    pub fn upstream_saw(&self, name: &str) -> Option<String> {
        self.json()
            .get("headers")
            .and_then(|h| h.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
}

/// One request over a fresh connection (HTTP/1.1 or h2c prior knowledge), on its own runtime.
pub fn send(addr: SocketAddr, req: Request<TestBody>, h2: bool) -> Result<Resp, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let io = TokioIo::new(s);
        let fut = async {
            let resp = if h2 {
                let (mut tx, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                tx.send_request(req).await.map_err(|e| e.to_string())?
            } else {
                let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                tx.send_request(req).await.map_err(|e| e.to_string())?
            };
            let (parts, body) = resp.into_parts();
            let collected = body.collect().await.map_err(|e| e.to_string())?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            Ok::<_, String>(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                trailers,
                body: collected.to_bytes(),
            })
        };
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .map_err(|_| "timeout".to_string())?
    })
}

/// Builds a request; `host: localhost` unless given.
pub fn build(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "localhost");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).expect("test request headers are valid")
}

/// GET over HTTP/1.1.
pub fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    send(
        gw.addr(),
        build("GET", path, headers, full(Bytes::new())),
        false,
    )
}

/// POST `body` over HTTP/1.1.
pub fn post(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Result<Resp, String> {
    send(gw.addr(), build("POST", path, headers, full(body)), false)
}

/// Run `sluice check -c FILE` on `yaml`; (exit ok, output). Killed after 60 s (a check that hangs
/// on a looping plugin is a failure, reported as such).
pub fn sluice_check(yaml: &str) -> (bool, String) {
    let Ok(dir) = tempfile::tempdir() else {
        return (false, "tempdir".into());
    };
    let path = dir.path().join("sluice.yaml");
    let out_path = dir.path().join("out.txt");
    if std::fs::write(&path, yaml).is_err() {
        return (false, "write".into());
    }
    let Ok(out) = std::fs::File::create(&out_path) else {
        return (false, "output file".into());
    };
    let Ok(err) = out.try_clone() else {
        return (false, "output file".into());
    };
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env("SLUICE_WASM_CACHE_DIR", wasm_cache_dir())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => (
            false,
            format!("sluice check did not finish in 60 s: {text}"),
        ),
    }
}

/// The plugin directory (target/plugins), built with scripts/build-plugins.sh when missing.
pub fn plugins_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/plugins");
    if !dir.join("rs_headers.wasm").exists() {
        let status = Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .current_dir(&root)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()) && dir.join("rs_headers.wasm").exists(),
            "target/plugins is missing and scripts/build-plugins.sh failed: run it by hand \
             (it needs the wasm32-wasip1 target and node/npm for the AssemblyScript plugins)"
        );
    }
    dir
}

/// Whether the part named `name` runs: all of them unless `SLUICE_CONFORMANCE_ONLY` (a
/// comma-separated list) says otherwise. For debugging one plugin; a filtered run is not written
/// to docs/conformance.md.
pub fn selected(name: &str) -> bool {
    match std::env::var("SLUICE_CONFORMANCE_ONLY") {
        Ok(list) => list.split(',').any(|n| n.trim() == name),
        Err(_) => true,
    }
}
