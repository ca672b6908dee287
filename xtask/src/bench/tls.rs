//! The TLS cases' pieces: the load client (wrk over https for HTTP/1.1, h2load for h2), the
//! certificate every TLS peer serves (one ECDSA P-256 certificate made with openssl, so nginx and
//! Sluice do the same crypto work), and h2load's report.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::wrk::WrkReport;

/// Which client generates a case's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Client {
    /// wrk, cleartext HTTP/1.1.
    #[default]
    Wrk,
    /// wrk over https (HTTP/1.1, TLS).
    WrkTls,
    /// h2load over https (h2 by ALPN); its latency figures are mean and max, not percentiles.
    H2load,
}

/// The certificate and key every TLS peer serves, under `work/tls/`.
pub fn cert_paths(work: &Path) -> (PathBuf, PathBuf) {
    let dir = work.join("tls");
    (dir.join("bench.crt"), dir.join("bench.key"))
}

/// Writes a self-signed ECDSA P-256 certificate for `bench.test` (and 127.0.0.1) with openssl.
///
/// # Errors
/// openssl missing or failing.
pub fn make_cert(work: &Path) -> anyhow::Result<()> {
    let (crt, key) = cert_paths(work);
    if let Some(dir) = crt.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "7", "-subj", "/CN=bench.test"])
        .args(["-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .context("running openssl (apt-get install -y openssl)")?;
    anyhow::ensure!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// h2load's arguments for `secs` seconds against `url` with `connections` connections, each
/// with up to 10 concurrent streams (what a browser or gRPC client keeps in flight).
pub fn h2load_args(connections: u32, secs: u64, url: &str) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{connections}"),
        "-m10".into(),
        format!("-D{secs}"),
        url.into(),
    ]
}

/// Reads h2load's text report. Latency: `p50_us` holds the mean, `p99_us` the max (h2load gives
/// no percentiles).
pub fn parse_h2load(out: &str) -> anyhow::Result<WrkReport> {
    let mut r = WrkReport::default();
    let (mut rps, mut done, mut latency) = (None, None, None);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["finished", "in", _, v, ..] => rps = v.trim_end_matches(',').parse::<f64>().ok(),
            ["requests:", ..] => {
                // "N total, N started, N done, N succeeded, N failed, N errored, N timeout"
                for pair in words[1..].chunks(2) {
                    if let [n, what] = pair {
                        let n: u64 = n.parse().unwrap_or(0);
                        match what.trim_end_matches(',') {
                            "succeeded" => done = Some(n),
                            "failed" | "errored" | "timeout" => r.errors += n,
                            _ => {}
                        }
                    }
                }
            }
            ["time", "for", "request:", min, max, mean, ..] => {
                let _ = min;
                latency = Some((duration_us(mean), duration_us(max)));
            }
            _ => {}
        }
    }
    r.requests_per_second = rps.context("no 'finished in' line")?;
    r.requests = done.context("no 'requests:' line")?;
    let (mean, max) = latency.context("no 'time for request' line")?;
    r.p50_us = mean.context("unreadable mean latency")?;
    r.p99_us = max.context("unreadable max latency")?;
    Ok(r)
}

/// `123us`, `1.23ms`, `2.5s` → microseconds.
fn duration_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some((n * scale * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "starting benchmark...
finished in 5.00s, 52345.60 req/s, 1.23MB/s
requests: 261728 total, 261730 started, 261728 done, 261700 succeeded, 20 failed, 8 errored, 0 timeout
status codes: 261700 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:      123us     45.60ms      1.22ms       800us    73.45%
";

    #[test]
    fn parses_an_h2load_report() -> anyhow::Result<()> {
        let r = parse_h2load(SAMPLE)?;
        assert_eq!(r.requests, 261_700);
        assert!((r.requests_per_second - 52_345.6).abs() < 1e-6);
        assert_eq!(r.errors, 28);
        assert!((r.p50_us - 1220.0).abs() < 1e-9);
        assert!((r.p99_us - 45_600.0).abs() < 1e-9);
        assert!(parse_h2load("nothing").is_err());
        Ok(())
    }
}
