//! Test support: real upstream servers, a real gateway process, and a small HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A first-party or conformance plugin built by `scripts/build-plugins.sh`, by file name.
pub fn wasm(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

/// A real HTTP upstream on 127.0.0.1 with a few canned behaviours, chosen by path:
/// - `/status/NNN` answers NNN; `/delay/MS` waits MS ms then answers 200;
/// - `/bytes/N` streams N bytes in 64 KiB chunks (chunked encoding);
/// - `/upload` reads the whole body and answers with its length;
/// - `/ws` accepts a WebSocket-style upgrade and echoes bytes;
/// - anything else echoes the request as JSON: method, uri, headers, body length.
///
/// Every response carries `x-upstream: NAME`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Self::start_with(name, false)
    }

    pub fn start_h2(name: &str) -> Upstream {
        Self::start_with(name, true)
    }

    /// Start on a given address (to bring a stopped upstream back).
    pub fn start_at(name: &str, addr: SocketAddr) -> Upstream {
        Self::start_on(name, false, addr)
    }

    fn start_with(name: &str, h2: bool) -> Upstream {
        Self::start_on(name, h2, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn start_on(name: &str, h2: bool, addr: SocketAddr) -> Upstream {
        let std = StdListener::bind(addr).expect("bind upstream");
        std.set_nonblocking(true).expect("nonblocking");
        let addr = std.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (c2, r2, n2) = (connections.clone(), requests.clone(), name.to_string());
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
                            c2.fetch_add(1, Ordering::SeqCst);
                            let (r3, n3) = (r2.clone(), n2.clone());
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    r3.fetch_add(1, Ordering::SeqCst);
                                    behave(n3.clone(), req)
                                });
                                if h2 {
                                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                        .serve_connection(TokioIo::new(s), svc).await;
                                } else {
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(s), svc).with_upgrades().await;
                                }
                            });
                        }
                    }
                }
            });
        });
        Upstream {
            addr,
            name: name.to_string(),
            connections,
            requests,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

/// A keep-alive HTTP/1.1 upstream on a plain socket, answering each request (without a body)
/// with the exact bytes `reply` gives for its path: for tests that need a response head
/// written byte for byte. A HEAD request gets the reply's head only; a reply whose head says
/// `Connection: close` closes the connection after it. Stopped when dropped.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedUpstream {
    pub fn start(reply: fn(&str) -> &'static [u8]) -> ScriptedUpstream {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || answer_scripted(conn, reply));
            }
        });
        ScriptedUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn answer_scripted(mut s: StdStream, reply: fn(&str) -> &'static [u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut out = reply(head.split(' ').nth(1).unwrap_or("/"));
        let head_end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |e| e + 4);
        if head.starts_with("HEAD ") {
            out = &out[..head_end];
        }
        let close = String::from_utf8_lossy(&out[..head_end])
            .lines()
            .any(|l| l.eq_ignore_ascii_case("connection: close"));
        if s.write_all(out).is_err() || close {
            return;
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = StdStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn behave(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let mut resp = if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        let mut r = Response::new(full(format!("status {code}\n")));
        *r.status_mut() =
            hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        r
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::new(full("delayed\n"))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64) as usize;
                Some((
                    Ok::<_, std::io::Error>(Frame::data(chunk.slice(..n))),
                    left - n as u64,
                ))
            }
        });
        Response::new(StreamBody::new(stream).boxed())
    } else if path == "/upload" {
        let mut total = 0u64;
        let mut body = req.into_body();
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        Response::new(full(format!("{total}")))
    } else if path == "/ws" {
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = up.await {
                let mut io = TokioIo::new(io);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(full(""));
        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().expect("hv"));
        r.headers_mut()
            .insert("upgrade", "websocket".parse().expect("hv"));
        r
    } else {
        let mut headers = BTreeMap::<String, Vec<String>>::new();
        for (k, v) in req.headers() {
            headers
                .entry(k.to_string())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into());
        }
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let version = format!("{:?}", req.version());
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json = serde_json::json!({"method": method, "uri": uri, "headers": headers, "body_len": body.len(), "version": version});
        let mut r = Response::new(full(json.to_string()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("hv"));
        r
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().expect("hv"));
    Ok(resp)
}

/// A running `sluice run` process with its own config directory. SIGTERM + wait on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Gateway {
    /// Start with `yaml`, where `{PORT}` is replaced by a free port for the (first) listener.
    ///
    /// When a port the test picked was taken before the gateway bound it (another test's
    /// server can take it in between), the start is tried again with new ports.
    pub fn start(yaml: &str) -> Gateway {
        let mut attempt = 1;
        loop {
            match Gateway::try_start(yaml) {
                Ok(gw) => return gw,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    attempt += 1;
                }
                Err(log) => panic!("gateway did not start; log:\n{log}"),
            }
        }
    }

    fn try_start(yaml: &str) -> Result<Gateway, String> {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("sluice.yaml");
        let admin_port = free_port();
        let mut yaml = yaml
            .replace("{PORT}", &port.to_string())
            .replace("{DIR}", &dir.path().display().to_string());
        // Each gateway gets its own admin port unless the test sets one.
        if !yaml.contains("\nadmin:") {
            yaml = format!("admin: {{ address: \"127.0.0.1:{admin_port}\" }}\n{yaml}");
        }
        let yaml = yaml.replace("{ADMIN}", &admin_port.to_string());
        std::fs::write(&config_path, yaml).expect("write config");
        let log_path = dir.path().join("sluice.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("clone")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice");
        let mut gw = Gateway {
            child: Some(child),
            dir,
            port,
            admin_port,
            config_path,
            log_path,
        };
        gw.wait_ready()?;
        Ok(gw)
    }

    /// Start with `workers` workers and one listener whose every request goes to `up`.
    pub fn proxying_to(up: &Upstream, workers: usize) -> Gateway {
        Gateway::start(&format!(
            r#"
workers: {workers}
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
"#,
            up.addr
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        // The listener accepts as soon as it is bound; /ready says the workers serve and the
        // file watcher is armed (a config written after that is seen).
        let admin = SocketAddr::from(([127, 0, 0, 1], self.admin_port));
        while Instant::now() < deadline {
            if StdStream::connect(self.addr()).is_ok() && admin_ready(admin) {
                return Ok(());
            }
            if self.has_exited() {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(self.log())
    }

    /// Whether the process has exited (it does at once when a listener cannot bind).
    fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), libc::SIGTERM);
        child.wait().expect("wait")
    }

    /// Peak resident memory of the gateway process in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process id we own; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A minimal HTTP/1.1 (or h2c) client over a fresh connection, on its own runtime.
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
        let resp = if h2 {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
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
        let body = tokio::time::timeout(Duration::from_secs(60), body.collect())
            .await
            .map_err(|_| "body timeout".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    })
}

pub fn get(gw: &Gateway, path: &str) -> Resp {
    get_with(gw, path, &[])
}

pub fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(gw, "GET", path, headers, Bytes::new())
}

pub fn request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "localhost");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(full(body)).expect("request");
    send(gw.addr(), req, false)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\nlog:\n{}", gw.log()))
}

/// `GET /ready` on the admin API answers 200.
fn admin_ready(admin: SocketAddr) -> bool {
    let Ok(mut s) = StdStream::connect(admin) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = b"GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n";
    if s.write_all(req).is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

/// Write raw bytes on a new connection and read until the server closes or `timeout` passes.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Run curl with `args`; returns (exit ok, stdout, stderr).
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
