//! Upstream failures map to the right status, once: refused → 503, timeout → 504, garbage → 502,
//! reset mid-body → the client sees the stream cut.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::support::*;

fn config(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: up
        timeout: 500ms
{extra}
clusters:
  - name: up
    endpoints: ["{endpoint}"]
    connect_timeout: 300ms
"#
    )
}

/// A raw TCP server that answers every connection with `reply` (then closes after `linger`).
fn raw_server(reply: &'static [u8], linger: Duration) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
                std::thread::sleep(linger);
            });
        }
    });
    addr
}

#[test]
fn connect_refused_is_503() {
    let port = free_port(); // nothing listens there
    let gw = Gateway::start(&config(&format!("127.0.0.1:{port}"), ""));
    let r = get(&gw, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), "upstream_connect_refused\n");
}

#[test]
fn slow_upstream_is_504() {
    let up = Upstream::start("slow");
    let gw = Gateway::start(&config(&up.addr.to_string(), ""));
    let r = get(&gw, "/delay/3000");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.text(), "upstream_response_timeout\n");
    // The same upstream still serves fast requests.
    assert_eq!(get(&gw, "/delay/1").status, 200);
}

#[test]
fn garbage_response_is_502() {
    let addr = raw_server(b"this is not http\r\n\r\n", Duration::from_millis(100));
    let gw = Gateway::start(&config(&addr.to_string(), ""));
    let r = get(&gw, "/");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn reset_before_response_is_502() {
    let addr = raw_server(b"", Duration::from_millis(0));
    let gw = Gateway::start(&config(&addr.to_string(), ""));
    let r = get(&gw, "/");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.text(), "upstream_reset\n");
}

#[test]
fn reset_mid_body_cuts_the_client_stream() {
    let addr = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nonly-a-few-bytes",
        Duration::from_millis(50),
    );
    let gw = Gateway::start(&config(&addr.to_string(), ""));
    let (ok, _out, _err) = curl(&["-o", "/dev/null", &gw.url("/")]);
    assert!(
        !ok,
        "the client must see an incomplete body, not a clean end"
    );
    // The gateway is still healthy.
    let (ok, out, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &gw.url("/")]);
    assert!(!ok || out == "200");
}

/// One keep-alive request on `s`: the status and body of its answer (Content-Length framed).
fn keep_alive_get(s: &mut std::net::TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("length"))
            })
            .expect("content-length");
        if buf.len() >= end + 4 + len {
            let status = text[9..12].parse().expect("status");
            return (status, text[end + 4..end + 4 + len].to_string());
        }
    }
}

#[test]
fn route_timeout_holds_for_each_request_of_a_keep_alive_connection() {
    // The route timeout's timer is reused by the requests of a connection: each request must
    // get its own full timeout, neither a stale earlier deadline nor none at all.
    let up = Upstream::start("slow");
    let gw = Gateway::start(&config(&up.addr.to_string(), ""));
    let mut s = std::net::TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for _ in 0..3 {
        assert_eq!(keep_alive_get(&mut s, "/delay/1").0, 200);
    }
    // Later than the first requests' deadlines would have been, well within its own.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(keep_alive_get(&mut s, "/delay/300").0, 200);
    let (status, body) = keep_alive_get(&mut s, "/delay/3000");
    assert_eq!(
        (status, body.as_str()),
        (504, "upstream_response_timeout\n")
    );
    assert_eq!(keep_alive_get(&mut s, "/delay/300").0, 200);
}
