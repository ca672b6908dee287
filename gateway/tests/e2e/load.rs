//! A steady keep-alive load for reload tests: `conns` connections each sending requests back to
//! back at a bounded total rate, recording every status and every transport error.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[derive(Default, Debug)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    /// Distinct response bodies seen, in order of first appearance.
    pub bodies: Vec<String>,
    /// Distinct values of the watched response header (see [`Load::start_watching`]).
    pub header_values: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
    pub sent: Arc<AtomicU64>,
}

impl Load {
    /// Start `conns` keep-alive connections sending GET `path` at about `rate` requests/s total.
    pub fn start(addr: SocketAddr, path: &'static str, conns: usize, rate: u64) -> Load {
        Self::start_watching(addr, path, conns, rate, None)
    }

    /// As [`Load::start`], also recording the distinct values of response header `header`
    /// (`<none>` when a response lacks it).
    pub fn start_watching(
        addr: SocketAddr,
        path: &'static str,
        conns: usize,
        rate: u64,
        header: Option<&'static str>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let report = Arc::new(Mutex::new(LoadReport::default()));
                let per_conn = Duration::from_secs_f64(conns as f64 / rate as f64);
                let mut tasks = Vec::new();
                for _ in 0..conns {
                    let (stop, sent, report) = (s2.clone(), sent2.clone(), report.clone());
                    tasks.push(tokio::spawn(async move {
                        run_conn(addr, path, header, per_conn, stop, sent, report).await
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
                let mut r = report.lock().expect("report");
                std::mem::take(&mut *r)
            })
        });
        Load {
            stop,
            thread: Some(thread),
            sent,
        }
    }

    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("load thread")
    }
}

async fn run_conn(
    addr: SocketAddr,
    path: &'static str,
    header: Option<&'static str>,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    report: Arc<Mutex<LoadReport>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => match hyper::client::conn::http1::handshake(TokioIo::new(s)).await {
                    Ok((tx, c)) => {
                        tokio::spawn(c);
                        conn = Some(tx);
                    }
                    Err(e) => {
                        record_err(&report, format!("handshake: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    record_err(&report, format!("connect: {e}"));
                    continue;
                }
            }
        }
        let Some(tx) = conn.as_mut() else { continue };
        if tx.ready().await.is_err() {
            conn = None;
            continue;
        }
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .body(Empty::new())
            .expect("req");
        sent.fetch_add(1, Ordering::Relaxed);
        match tx.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let seen = header.map(|h| {
                    resp.headers().get(h).map_or("<none>".to_string(), |v| {
                        String::from_utf8_lossy(v.as_bytes()).into_owned()
                    })
                });
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                let mut r = report.lock().expect("report");
                match body {
                    Ok(b) if status < 500 => {
                        r.ok += 1;
                        let s = String::from_utf8_lossy(&b).into_owned();
                        if !r.bodies.contains(&s) {
                            r.bodies.push(s);
                        }
                        if let Some(v) = seen {
                            if !r.header_values.contains(&v) {
                                r.header_values.push(v);
                            }
                        }
                    }
                    Ok(b) => {
                        r.failed += 1;
                        r.errors
                            .push(format!("status {status}: {}", String::from_utf8_lossy(&b)));
                    }
                    Err(e) => {
                        r.failed += 1;
                        r.errors.push(format!("body: {e}"));
                    }
                }
            }
            Err(e) => {
                conn = None;
                record_err(&report, format!("request: {e}"));
            }
        }
    }
}

fn record_err(report: &Arc<Mutex<LoadReport>>, e: String) {
    let mut r = report.lock().expect("report");
    r.failed += 1;
    if r.errors.len() < 20 {
        r.errors.push(e);
    }
}
