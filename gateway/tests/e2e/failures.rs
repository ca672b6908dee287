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
