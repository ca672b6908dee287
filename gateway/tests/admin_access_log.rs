//! The JSON access log against a real file: fields, escaping, reopen after rotation, close.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice::config::model::AccessLogConfig;
use sluice::telemetry::access_log::{AccessLog, AccessLogEntry};
use sluice::telemetry::metrics::Metrics;

fn config(path: &std::path::Path) -> AccessLogConfig {
    AccessLogConfig {
        path: path.to_string_lossy().into_owned(),
        format: "json".into(),
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn entry(path: &str) -> AccessLogEntry<'_> {
    AccessLogEntry {
        path,
        ..AccessLogEntry::default()
    }
}

#[test]
fn fields_and_escaping() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("access.log");
    let metrics = Metrics::new();
    let log = AccessLog::open_with_metrics(&config(&file), &metrics)?;
    let client: SocketAddr = "[2001:db8::1]:40000".parse()?;
    let upstream: SocketAddr = "127.0.0.1:8081".parse()?;
    log.log(&AccessLogEntry {
        start_time: UNIX_EPOCH + Duration::from_millis(1_795_626_675_123),
        duration: Duration::from_micros(12_345),
        ttfb: Some(Duration::from_micros(2_001)),
        listener: "public",
        route: "api",
        cluster: "backend",
        upstream_addr: Some(upstream),
        client_addr: Some(client),
        method: "POST",
        authority: "example.com",
        path: "/a\"b\\c?d=\u{e9}",
        protocol: http::Version::HTTP_2,
        status: 201,
        bytes_received: 10,
        bytes_sent: 20,
        request_id: b"req-1",
        user_agent: b"curl/8\n\x01\xff",
        referer: b"https://r.example/",
        x_forwarded_for: b"192.0.2.1, 198.51.100.2",
        details: "",
        trace_id: "",
        span_id: "",
    });
    log.log(&AccessLogEntry {
        status: 429,
        details: "rate_limited",
        ..entry("/second")
    });
    log.flush();

    let got = lines(&file);
    assert_eq!(got.len(), 2);
    let first = &got[0];
    assert_eq!(first["start_time"], "2026-11-25T17:11:15.123Z");
    assert_eq!(first["duration_ms"].as_f64(), Some(12.345));
    assert_eq!(first["ttfb_ms"].as_f64(), Some(2.001));
    assert_eq!(first["listener"], "public");
    assert_eq!(first["route"], "api");
    assert_eq!(first["cluster"], "backend");
    assert_eq!(first["upstream_addr"], "127.0.0.1:8081");
    assert_eq!(first["client_ip"], "2001:db8::1");
    assert_eq!(first["client_port"], 40000);
    assert_eq!(first["method"], "POST");
    assert_eq!(first["authority"], "example.com");
    assert_eq!(first["path"], "/a\"b\\c?d=\u{e9}");
    assert_eq!(first["protocol"], "HTTP/2");
    assert_eq!(first["status"], 201);
    assert_eq!(first["bytes_received"], 10);
    assert_eq!(first["bytes_sent"], 20);
    assert_eq!(first["request_id"], "req-1");
    assert_eq!(first["user_agent"], "curl/8\n\u{1}\u{fffd}");
    assert_eq!(first["referer"], "https://r.example/");
    assert_eq!(first["x_forwarded_for"], "192.0.2.1, 198.51.100.2");
    assert_eq!(first["details"], "");
    assert_eq!(first["trace_id"], "");
    assert_eq!(first["span_id"], "");

    let second = &got[1];
    assert_eq!(second["status"], 429);
    assert_eq!(second["details"], "rate_limited");
    assert_eq!(second["ttfb_ms"], Value::Null);
    assert_eq!(second["client_ip"], "");
    assert_eq!(second["protocol"], "HTTP/1.1");

    // After close, lines are dropped and counted in the shared metric.
    log.flush_and_close();
    log.log(&entry("/late"));
    assert_eq!(log.dropped(), 1);
    assert!(metrics
        .render()
        .contains("sluice_access_log_dropped_total 1\n"));
    assert_eq!(lines(&file).len(), 2);
    Ok(())
}

#[test]
fn reopen_after_rename() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let log = AccessLog::open(&config(&file))?;
    log.log(&entry("/before"));
    log.flush();
    std::fs::rename(&file, &rotated)?;
    log.reopen();
    log.log(&entry("/after"));
    log.flush();
    assert_eq!(lines(&rotated).len(), 1);
    assert_eq!(lines(&rotated)[0]["path"], "/before");
    assert_eq!(lines(&file).len(), 1);
    assert_eq!(lines(&file)[0]["path"], "/after");
    Ok(())
}

#[test]
fn rename_is_noticed_without_reopen() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let log = AccessLog::open(&config(&file))?;
    log.log(&entry("/before"));
    log.flush();
    std::fs::rename(&file, &rotated)?;
    // The writer checks the path about once a second; poll generously rather than time it.
    let deadline = SystemTime::now() + Duration::from_secs(30);
    while lines(&file).is_empty() {
        assert!(
            SystemTime::now() < deadline,
            "the renamed log was never reopened"
        );
        log.log(&entry("/after"));
        log.flush();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lines(&file).iter().all(|l| l["path"] == "/after"));
    assert_eq!(lines(&rotated)[0]["path"], "/before");
    Ok(())
}

#[test]
fn unsupported_format_is_rejected() {
    let cfg = AccessLogConfig {
        path: "stderr".into(),
        format: "clf".into(),
    };
    assert!(AccessLog::open(&cfg).is_err());
}

#[test]
fn flushes_on_its_own() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("access.log");
    let log = AccessLog::open(&config(&file))?;
    log.log(&entry("/x"));
    // No flush call: the periodic flush must write it out.
    let deadline = SystemTime::now() + Duration::from_secs(30);
    while lines(&file).is_empty() {
        assert!(SystemTime::now() < deadline, "the line was never flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A FIFO whose reader opens it (which lets the log's writer open it) but reads nothing until
/// `go` is sent: the pipe, then the writer's buffer, then the log's queue fill up. The reader
/// returns every line it read once the writer closes the pipe.
struct HeldFifo {
    path: std::path::PathBuf,
    go: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<std::io::Result<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl HeldFifo {
    fn new() -> Result<HeldFifo, Box<dyn std::error::Error>> {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&path).status()?;
        assert!(made.success(), "mkfifo failed");
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
            let file = std::fs::File::open(&reader_path)?;
            let _ = go_rx.recv();
            BufReader::new(file).lines().collect()
        });
        Ok(HeldFifo {
            path,
            go,
            reader,
            _dir: dir,
        })
    }

    /// Lets the reader read, closes `log` (the reader then sees end-of-file once the writer has
    /// drained its queue) and returns the lines read.
    fn release(
        self,
        log: std::sync::Arc<AccessLog>,
    ) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        self.go.send(())?;
        drop(log);
        Ok(self.reader.join().map_err(|_| "reader panicked")??)
    }
}

#[test]
fn full_queue_drops_and_counts_instead_of_blocking() -> Result<(), Box<dyn std::error::Error>> {
    const LINES: u64 = 100_000;
    let fifo = HeldFifo::new()?;
    let log = AccessLog::open(&config(&fifo.path))?;
    for _ in 0..LINES {
        log.log(&entry("/flood"));
    }
    let dropped = log.dropped();
    assert!(dropped > 0, "a blocked writer must make lines drop");
    let written = fifo.release(log)?;
    for line in &written {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "bad line {line}"
        );
    }
    assert_eq!(written.len() as u64 + dropped, LINES);
    Ok(())
}

/// A backlog larger than one pass of the writer (it handles a few thousand lines at a time and
/// does not wait on the channel while lines flow) arrives whole and in order, without drops.
#[test]
fn a_backlog_is_written_whole_and_in_order() -> Result<(), Box<dyn std::error::Error>> {
    // Below the queue's capacity, so that none may be dropped while the writer is stuck (on
    // the full pipe after a few hundred lines; the rest queue up, several passes' worth).
    const LINES: usize = 12_000;
    let fifo = HeldFifo::new()?;
    let log = AccessLog::open(&config(&fifo.path))?;
    let paths: Vec<String> = (0..LINES).map(|i| format!("/backlog/{i}")).collect();
    for p in &paths {
        log.log(&entry(p));
    }
    assert_eq!(log.dropped(), 0);
    let got = fifo.release(log)?;
    assert_eq!(got.len(), LINES);
    for (i, line) in got.iter().enumerate() {
        let v: Value = serde_json::from_str(line)?;
        assert_eq!(v["path"], paths[i].as_str(), "line {i}");
    }
    Ok(())
}
