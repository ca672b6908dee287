//! Runs wrk on core 0 and reads its `--latency` report.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::process::Proc;
use super::signal;
use super::tls::{self, Client};

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

/// Load settings shared by every run.
#[derive(Clone, Debug)]
pub struct Load {
    pub wrk: std::path::PathBuf,
    pub connections: u32,
    /// wrk threads; one, so that wrk leaves the upstream its share of core 0.
    pub threads: u32,
    pub core: u32,
    /// h2load, for the h2 TLS case (optional: the case fails without it).
    pub h2load: Option<std::path::PathBuf>,
}

impl Load {
    /// Runs `client` against `ADDR` for `secs` seconds; its output goes to `log`.
    pub fn run(
        &self,
        client: Client,
        addr: SocketAddr,
        secs: u64,
        log: &Path,
    ) -> anyhow::Result<WrkReport> {
        if client == Client::H2load {
            return self.run_h2load(addr, secs, log);
        }
        let (t, c, d) = (
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{secs}s"),
        );
        let scheme = if client == Client::WrkTls {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{addr}/");
        let args = [
            t.as_str(),
            c.as_str(),
            d.as_str(),
            "--latency",
            url.as_str(),
        ];
        let mut proc = Proc::spawn_pinned("wrk", self.core, &self.wrk, &args, log)?;
        // wrk stops by itself after `secs`; the margin covers its start and final report.
        let status = proc.wait_timeout(Duration::from_secs(secs + 30))?;
        signal::check()?;
        let output =
            std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        match status {
            Some(s) if s.success() => {
                parse(&output).with_context(|| format!("wrk output:\n{output}"))
            }
            Some(s) => anyhow::bail!("wrk failed ({s}):\n{output}"),
            None => anyhow::bail!("wrk did not finish after {}s:\n{output}", secs + 30),
        }
    }
}

impl Load {
    fn run_h2load(&self, addr: SocketAddr, secs: u64, log: &Path) -> anyhow::Result<WrkReport> {
        let h2load = self
            .h2load
            .as_ref()
            .context("h2load is not installed (apt-get install -y nghttp2-client)")?;
        let args = tls::h2load_args(self.connections, secs, &format!("https://{addr}/"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn_pinned("h2load", self.core, h2load, &args, log)?;
        let status = proc.wait_timeout(Duration::from_secs(secs + 30))?;
        signal::check()?;
        let output =
            std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        match status {
            Some(s) if s.success() => {
                tls::parse_h2load(&output).with_context(|| format!("h2load output:\n{output}"))
            }
            Some(s) => anyhow::bail!("h2load failed ({s}):\n{output}"),
            None => anyhow::bail!("h2load did not finish after {}s:\n{output}", secs + 30),
        }
    }
}

/// `636.00us`, `1.23ms`, `2.00s` → microseconds.
fn parse_latency_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    // Rounded to 0.01 µs so that `1.23ms` reads 1230, not 1229.9999999999998.
    Some((n * scale * 100.0).round() / 100.0)
}

/// Reads the figures out of wrk's text report.
pub fn parse(out: &str) -> anyhow::Result<WrkReport> {
    let mut r = WrkReport::default();
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = parse_latency_us(v),
            ["99%", v] => p99 = parse_latency_us(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    r.p50_us = p50.context("no 50% latency line (was --latency passed?)")?;
    r.p99_us = p99.context("no 99% latency line")?;
    r.requests_per_second = rps.context("no Requests/sec line")?;
    r.requests = requests.context("no 'N requests in' line")?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   700.00us  100.00us   5.00ms   90.00%
    Req/Sec    90.00k     1.00k   95.00k    80.00%
  Latency Distribution
     50%  636.00us
     75%  700.00us
     90%  800.00us
     99%    1.23ms
  450123 requests in 5.00s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  90024.60
Transfer/sec:     12.00MB
";

    #[test]
    fn parses_a_latency_report() -> anyhow::Result<()> {
        let r = parse(SAMPLE)?;
        assert_eq!(r.requests, 450_123);
        assert!((r.requests_per_second - 90_024.6).abs() < 1e-6);
        assert!((r.p50_us - 636.0).abs() < 1e-9);
        assert!((r.p99_us - 1230.0).abs() < 1e-9);
        assert_eq!(r.errors, 8);
        Ok(())
    }

    #[test]
    fn refuses_a_report_without_latency() {
        assert!(parse(&SAMPLE.replace("     50%  636.00us\n", "")).is_err());
        assert_eq!(parse_latency_us("2.5s"), Some(2.5e6));
        assert_eq!(parse_latency_us("12"), None);
    }
}
