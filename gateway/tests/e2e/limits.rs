//! Listener limits: max connections, header size, header read timeout (slowloris), idle timeout,
//! max body size; and draining on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn config(limits: &str) -> String {
    format!(
        r#"
workers: 1
drain_timeout: 5s
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    limits: {limits}
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "ok\n" }}
"#
    )
}

#[test]
fn oversized_headers_are_rejected() {
    let gw = Gateway::start(&config("{ max_request_headers_size: 8KiB }"));
    let big = "a".repeat(20_000);
    let out = raw(
        gw.addr(),
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

#[test]
fn slowloris_is_cut_by_header_read_timeout() {
    let gw = Gateway::start(&config("{ header_read_timeout: 500ms }"));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // Closed by the gateway (possibly with a 408), not by our 10 s read timeout.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "connection was not cut"
    );
}

#[test]
fn idle_keepalive_connections_are_closed() {
    let gw = Gateway::start(&config("{ idle_timeout: 300ms }"));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "idle connection not closed"
    );
}

/// The idle deadline moves with each request: a connection used more often than
/// `idle_timeout` stays open well past it (the timer armed for an earlier deadline must not
/// close it), and closes once it really is idle that long. `header_read_timeout` is shorter, so
/// the timer armed for the first head fires early and has to re-arm.
#[test]
fn the_idle_deadline_moves_with_each_request() {
    let gw = Gateway::start(&config(
        "{ idle_timeout: 600ms, header_read_timeout: 150ms }",
    ));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    for i in 0..6 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap_or_else(|e| panic!("request {i} after {:?}: {e}", start.elapsed()));
        let mut buf = [0u8; 256];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("response {i} after {:?}: {e}", start.elapsed()));
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "request {i} after {:?}: {text:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Six requests 300 ms apart: 1.8 s on one connection with a 600 ms idle timeout.
    assert!(start.elapsed() >= Duration::from_millis(1800));
    let idle = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(8),
        "closed after {waited:?} idle (idle_timeout 600ms, 300ms already spent)"
    );
}

#[test]
fn max_connections_is_enforced() {
    let gw = Gateway::start(&config("{ max_connections: 2 }"));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr()).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
        let n = s.read(&mut buf).expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The third connection is accepted by the kernel and closed by the gateway without an answer.
    let out = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.is_empty(), "third connection served: {out}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&gw, "/").status, 200);
}

#[test]
fn request_body_over_the_limit_is_413() {
    let up = Upstream::start("up");
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    limits: {{ max_request_body_size: 1KiB }}
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
"#,
        up.addr
    ));
    let r = request(&gw, "POST", "/upload", &[], vec![b'x'; 4096]);
    assert_eq!(r.status, 413);
    // Chunked (no content-length): cut while streaming, still 413.
    let path = gw.dir().join("big");
    std::fs::write(&path, vec![b'y'; 64 * 1024]).expect("write");
    let (_, out, _) = curl(&[
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &format!("@{}", path.display()),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &gw.url("/upload"),
    ]);
    assert_eq!(out, "413");
    // Under the limit passes.
    let r = request(&gw, "POST", "/upload", &[], vec![b'x'; 512]);
    assert_eq!((r.status, r.text().as_str()), (200, "512"));
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start("up");
    let mut gw = Gateway::start(&format!(
        r#"
workers: 1
drain_timeout: 10s
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: up
        timeout: 10s
clusters:
  - name: up
    endpoints: ["{}"]
"#,
        up.addr
    ));
    let url = gw.url("/delay/1500");
    let inflight = std::thread::spawn(move || curl(&["-w", " %{http_code}", &url]));
    std::thread::sleep(Duration::from_millis(400));
    let status = gw.terminate();
    let (ok, out, err) = inflight.join().expect("join");
    assert!(ok, "in-flight request failed during drain: {err}");
    assert_eq!(out, "delayed\n 200");
    assert!(status.success(), "exit status {status:?}");
    // After exit nothing listens.
    assert!(TcpStream::connect(gw.addr()).is_err());
}

#[test]
fn ipv6_listener_serves() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let port = free_port();
    let gw = Gateway::start(&format!(
        r#"
listeners:
  - name: v4
    address: "127.0.0.1:{{PORT}}"
    routes: [{{ match: {{ path_prefix: "/" }}, direct_response: {{ status: 200, body: "v4\n" }} }}]
  - name: v6
    address: "[::1]:{port}"
    routes: [{{ match: {{ path_prefix: "/" }}, direct_response: {{ status: 200, body: "v6\n" }} }}]
"#
    ));
    let (ok, out, err) = curl(&["-g", &format!("http://[::1]:{port}/")]);
    assert!(ok, "{err}\n{}", gw.log());
    assert_eq!(out, "v6\n");
}
