//! `/xdp/bans` handlers and the `sluice xdp bans` CLI, end to end over a real socket: the CLI
//! talks HTTP to a small server on 127.0.0.1 that routes to `handle_admin`, which writes the
//! ban map of a loaded (detached) program, whose verdict is then checked with a test run.

mod xdp_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice::xdp::admin::handle_admin;
use sluice::xdp::cli::{cli_bans, BansArgs, BansCommand};
use sluice::xdp::Xdp;
use xdp_support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

async fn call(xdp: Option<&Arc<Xdp>>, method: &str, uri: &str, body: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = handle_admin(xdp, req).await;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn handlers_report_unavailable_without_xdp() {
    let (status, body) = rt().block_on(call(None, "GET", "/xdp/bans", ""));
    assert_eq!(status, 503);
    assert!(body.contains("not running"), "{body}");
}

/// Serve `n` requests on 127.0.0.1:0 through handle_admin; returns the address.
fn serve(xdp: Arc<Xdp>, n: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let rt = rt();
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            r.read_line(&mut line).expect("request line");
            let mut parts = line.split_whitespace();
            let (method, uri) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).expect("header");
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).expect("body");
            let (status, text) = rt.block_on(call(
                Some(&xdp),
                &method,
                &uri,
                &String::from_utf8_lossy(&body),
            ));
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    addr
}

#[test]
fn cli_adds_lists_and_removes_bans_through_the_admin_api() {
    let Some(xdp) = load(
        "cli_adds_lists_and_removes_bans",
        "interface: lo\nban_default_ttl: 2m\n",
    ) else {
        return;
    };
    let admin = serve(xdp.clone(), 5);
    let ip: IpAddr = "198.18.5.5".parse().unwrap();
    let args = |command| BansArgs {
        command: Some(command),
        admin: admin.clone(),
    };
    cli_bans(args(BansCommand::Add {
        ip,
        ttl: Some("90s".parse().unwrap()),
    }))
    .expect("add");
    assert_eq!(run(&xdp, &v4("198.18.5.5", TCP, 80, SYN)), XDP_DROP);
    let bans = xdp.bans();
    assert_eq!(bans.len(), 1);
    assert!(
        bans[0].expires_in_secs <= 90 && bans[0].expires_in_secs > 60,
        "{bans:?}"
    );
    cli_bans(args(BansCommand::List)).expect("list");
    cli_bans(args(BansCommand::Remove { ip })).expect("remove");
    assert_eq!(run(&xdp, &v4("198.18.5.5", TCP, 80, SYN)), XDP_PASS);
    // Removing again: the API answers 404 and the CLI reports an error.
    let err = cli_bans(args(BansCommand::Remove { ip })).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    // A bad POST body is a 400 that says what to send.
    let (status, body) = rt().block_on(call(Some(&xdp), "POST", "/xdp/bans", "{\"addr\": 5}"));
    assert_eq!(status, 400);
    assert!(body.contains("ttl"), "{body}");
    // Default ttl from the config.
    let (status, body) = rt().block_on(call(
        Some(&xdp),
        "POST",
        "/xdp/bans",
        "{\"addr\": \"2001:db8::5\"}",
    ));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ttl_secs\":120"), "{body}");
}
