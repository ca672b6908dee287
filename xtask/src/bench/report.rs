//! Results: medians, ratios, the markdown table, the raw JSON, and filling docs/performance.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::wrk::WrkReport;

/// One measured round of one peer.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    pub wrk: WrkReport,
    /// The peer's CPU time (user + sys, whole process tree) over the measured run.
    pub cpu_seconds: f64,
    /// The kernel's part of `cpu_seconds` (system time).
    pub sys_seconds: f64,
    /// Its peak RSS so far (sum of VmHWM over the process tree).
    pub peak_rss_kib: u64,
    /// Wall-clock length of the measured run.
    pub wall_seconds: f64,
}

impl Round {
    /// CPU microseconds per request served.
    pub fn cpu_us_per_request(&self) -> f64 {
        if self.wrk.requests == 0 {
            return f64::NAN;
        }
        self.cpu_seconds * 1e6 / self.wrk.requests as f64
    }

    /// Kernel (system) CPU microseconds per request: the part of [`Round::cpu_us_per_request`]
    /// spent in syscalls, the TCP stack and wake-ups of the peers on core 0.
    pub fn sys_us_per_request(&self) -> f64 {
        if self.wrk.requests == 0 {
            return f64::NAN;
        }
        self.sys_seconds * 1e6 / self.wrk.requests as f64
    }

    /// The share of its core the peer used (1.0 = saturated): below 1, the limit was elsewhere
    /// (core 0: wrk and the upstream).
    pub fn core_use(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.cpu_seconds / self.wall_seconds
        } else {
            f64::NAN
        }
    }
}

/// Everything measured for one peer.
#[derive(Debug)]
pub struct PeerResult {
    pub name: String,
    pub rounds: Vec<Round>,
    /// Why the peer dropped out (failed to start, died, wrong responses), if it did.
    pub failure: Option<String>,
}

/// The medians reported for a peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_request: f64,
    pub sys_us_per_request: f64,
    pub peak_rss_kib: f64,
    /// Median share of its core the peer used.
    pub core_use: f64,
    /// Total over all rounds, not a median: any error makes the row suspect.
    pub errors: u64,
}

impl PeerResult {
    /// Medians over the rounds, or `None` without a complete round.
    pub fn summary(&self) -> Option<Summary> {
        if self.rounds.is_empty() {
            return None;
        }
        let m = |f: fn(&Round) -> f64| median(self.rounds.iter().map(f).collect());
        Some(Summary {
            requests_per_second: m(|r| r.wrk.requests_per_second),
            p50_us: m(|r| r.wrk.p50_us),
            p99_us: m(|r| r.wrk.p99_us),
            cpu_us_per_request: m(Round::cpu_us_per_request),
            sys_us_per_request: m(Round::sys_us_per_request),
            peak_rss_kib: m(|r| r.peak_rss_kib as f64),
            core_use: m(Round::core_use),
            errors: self.rounds.iter().map(|r| r.wrk.errors).sum(),
        })
    }
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One case's results.
#[derive(Debug)]
pub struct CaseResult {
    pub name: &'static str,
    pub title: &'static str,
    pub peers: Vec<PeerResult>,
    pub ratios: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// How the run was made, printed above the tables.
#[derive(Debug)]
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub revision: String,
    pub machine: String,
    /// 1-minute load average before and after the run: a busy machine shows here.
    pub load_before: String,
    pub load_after: String,
    pub versions: Vec<String>,
    pub rounds: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: u32,
    /// Bytes of the upstream's response body.
    pub response_bytes: u32,
}

fn fmt_rps(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The lowest and highest of the per-round ratios `f(a) / f(b)`, round i of `a` against round
/// i of `b`: the rounds are interleaved, so a pair was measured within a few seconds, and the
/// range shows how far the machine moved the ratio during the run. `None` without a pair.
pub fn round_ratio_range(
    a: &PeerResult,
    b: &PeerResult,
    f: fn(&Round) -> f64,
) -> Option<(f64, f64)> {
    a.rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| f(x) / f(y))
        .filter(|r| r.is_finite())
        .fold(None, |acc, r| match acc {
            None => Some((r, r)),
            Some((lo, hi)) => Some((f64::min(lo, r), f64::max(hi, r))),
        })
}

fn fmt_range(range: Option<(f64, f64)>) -> String {
    match range {
        Some((lo, hi)) => format!("{lo:.2}–{hi:.2}×"),
        None => "–".into(),
    }
}

fn fmt_ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

impl RunInfo {
    /// The lines above a case table: command, date, settings, machine.
    fn header(&self) -> String {
        format!(
            "Command: `{}` — {} — revision {}\n\n\
             {} rounds × {} s ({}), {} connections, wrk -t1, {}-byte responses; medians of the rounds. \
             Proxy alone on core 1; wrk and the upstream nginx on core 0.\n\n\
             Machine: {}; load average {} at the start, {} at the end; {}.\n",
            self.command,
            self.date,
            self.revision,
            self.rounds,
            self.duration_s,
            if self.warmup_s == 0 {
                "no warm-up".to_string()
            } else {
                format!("after a {} s warm-up each", self.warmup_s)
            },
            self.connections,
            self.response_bytes,
            self.machine,
            self.load_before,
            self.load_after,
            self.versions.join(", ")
        )
    }
}

impl CaseResult {
    /// The case's markdown: title, run header, figures table, ratio table, notes.
    pub fn markdown(&self, info: &RunInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "#### `{}`: {}\n", self.name, self.title);
        s.push_str(&info.header());
        s.push_str(
            "\n| peer | req/s | p50 | p99 | CPU/request | of which kernel | core use | peak RSS | errors |\n",
        );
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.peers {
            match (p.summary(), &p.failure) {
                (Some(m), failure) => {
                    let _ = writeln!(
                        s,
                        "| {}{} | {} | {} | {} | {:.2} µs | {:.2} µs | {:.0} % | {:.1} MiB | {} |",
                        p.name,
                        if failure.is_some() {
                            " (incomplete)"
                        } else {
                            ""
                        },
                        fmt_rps(m.requests_per_second),
                        fmt_latency(m.p50_us),
                        fmt_latency(m.p99_us),
                        m.cpu_us_per_request,
                        m.sys_us_per_request,
                        m.core_use * 100.0,
                        m.peak_rss_kib / 1024.0,
                        m.errors
                    );
                }
                (None, _) => {
                    let _ = writeln!(s, "| {} | did not run (see notes) | | | | | | | |", p.name);
                }
            }
        }
        let ratios: Vec<String> = self
            .ratios
            .iter()
            .filter_map(|(a, b)| {
                let (ma, mb) = (self.summary_of(a)?, self.summary_of(b)?);
                let (pa, pb) = (self.peer(a)?, self.peer(b)?);
                Some(format!(
                    "| {a} / {b} | {} | {} | {} | {} | {} | {} |",
                    fmt_ratio(ma.requests_per_second, mb.requests_per_second),
                    fmt_ratio(ma.p99_us, mb.p99_us),
                    fmt_ratio(ma.cpu_us_per_request, mb.cpu_us_per_request),
                    fmt_ratio(ma.peak_rss_kib, mb.peak_rss_kib),
                    fmt_range(round_ratio_range(pa, pb, |r| r.wrk.requests_per_second)),
                    fmt_range(round_ratio_range(pa, pb, Round::cpu_us_per_request)),
                ))
            })
            .collect();
        if !ratios.is_empty() {
            s.push_str(
                "\n| ratio | req/s | p99 | CPU/request | peak RSS | req/s, round by round | CPU/request, round by round |\n\
                 |---|---:|---:|---:|---:|---:|---:|\n",
            );
            for r in ratios {
                s.push_str(&r);
                s.push('\n');
            }
        }
        let failures = self.peers.iter().filter_map(|p| {
            p.failure
                .as_ref()
                .map(|f| format!("{}: {}", p.name, first_line(f)))
        });
        let notes: Vec<String> = self.notes.iter().cloned().chain(failures).collect();
        if !notes.is_empty() {
            s.push_str("\nNotes:\n");
            for n in notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    fn summary_of(&self, name: &str) -> Option<Summary> {
        self.peer(name)?.summary()
    }

    fn peer(&self, name: &str) -> Option<&PeerResult> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Every round of every peer, plus the medians.
    pub fn json(&self) -> Value {
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|p| {
                let rounds: Vec<Value> = p
                    .rounds
                    .iter()
                    .map(|r| {
                        json!({
                            "requests": r.wrk.requests,
                            "requests_per_second": r.wrk.requests_per_second,
                            "p50_us": r.wrk.p50_us,
                            "p99_us": r.wrk.p99_us,
                            "errors": r.wrk.errors,
                            "cpu_seconds": r.cpu_seconds,
                            "sys_seconds": r.sys_seconds,
                            "cpu_us_per_request": finite(r.cpu_us_per_request()),
                            "sys_us_per_request": finite(r.sys_us_per_request()),
                            "peak_rss_kib": r.peak_rss_kib,
                            "wall_seconds": r.wall_seconds,
                            "core_use": finite(r.core_use()),
                        })
                    })
                    .collect();
                let median = p.summary().map(|m| {
                    json!({
                        "requests_per_second": m.requests_per_second,
                        "p50_us": m.p50_us,
                        "p99_us": m.p99_us,
                        "cpu_us_per_request": finite(m.cpu_us_per_request),
                        "sys_us_per_request": finite(m.sys_us_per_request),
                        "peak_rss_kib": m.peak_rss_kib,
                        "core_use": finite(m.core_use),
                        "errors": m.errors,
                    })
                });
                json!({ "name": p.name, "failure": p.failure, "rounds": rounds, "median": median })
            })
            .collect();
        // Per pair: the lowest and highest round-by-round ratios (see `round_ratio_range`).
        let ranges: Vec<Value> = self
            .ratios
            .iter()
            .filter_map(|(a, b)| {
                let (pa, pb) = (self.peer(a)?, self.peer(b)?);
                let range =
                    |f: fn(&Round) -> f64| round_ratio_range(pa, pb, f).map(|(lo, hi)| [lo, hi]);
                Some(json!({
                    "subject": a,
                    "reference": b,
                    "requests_per_second": range(|r| r.wrk.requests_per_second),
                    "cpu_us_per_request": range(Round::cpu_us_per_request),
                }))
            })
            .collect();
        json!({
            "name": self.name,
            "title": self.title,
            "peers": peers,
            "ratios": self.ratios,
            "ratio_ranges": ranges,
            "notes": self.notes,
        })
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The whole run as JSON.
pub fn run_json(info: &RunInfo, cases: &[CaseResult]) -> Value {
    json!({
        "command": info.command,
        "date": info.date,
        "revision": info.revision,
        "machine": info.machine,
        "load_average": [info.load_before, info.load_after],
        "versions": info.versions,
        "rounds": info.rounds,
        "duration_s": info.duration_s,
        "warmup_s": info.warmup_s,
        "connections": info.connections,
        "cases": cases.iter().map(CaseResult::json).collect::<Vec<_>>(),
    })
}

/// The marker pair around a case's generated section in docs/performance.md.
fn markers(case: &str) -> (String, String) {
    (
        format!("<!-- bench:{case}:begin -->"),
        format!("<!-- bench:{case}:end -->"),
    )
}

/// Replaces the text between a case's markers with `body`; an error if the markers are missing.
pub fn fill_section(doc: &str, case: &str, body: &str) -> anyhow::Result<String> {
    let (begin, end) = markers(case);
    let b = doc
        .find(&begin)
        .with_context(|| format!("no {begin} marker"))?
        + begin.len();
    let e = doc[b..]
        .find(&end)
        .with_context(|| format!("no {end} marker after {begin}"))?
        + b;
    Ok(format!("{}\n{}\n{}", &doc[..b], body.trim_end(), &doc[e..]))
}

/// Writes every case's markdown into its marked section of the docs file.
pub fn update_doc(path: &Path, info: &RunInfo, cases: &[CaseResult]) -> anyhow::Result<()> {
    let mut doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for c in cases {
        doc = fill_section(&doc, c.name, &c.markdown(info))
            .with_context(|| format!("in {}", path.display()))?;
    }
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))
}

/// `YYYY-MM-DD HH:MM UTC` and a file-name stamp `YYYYMMDDTHHMMSSZ`, from the system clock.
pub fn now_utc() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let (h, mi, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    (
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC"),
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rps: f64, p99: f64, requests: u64, cpu: f64, rss: u64) -> Round {
        Round {
            wrk: WrkReport {
                requests,
                requests_per_second: rps,
                p50_us: p99 / 2.0,
                p99_us: p99,
                errors: 0,
            },
            cpu_seconds: cpu,
            sys_seconds: cpu * 0.75,
            peak_rss_kib: rss,
            wall_seconds: 5.0,
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            command: "cargo xtask bench".into(),
            date: "2026-01-01 00:00 UTC".into(),
            revision: "abc".into(),
            machine: "test".into(),
            load_before: "0.10".into(),
            load_after: "0.20".into(),
            versions: vec!["nginx/1".into()],
            rounds: 3,
            duration_s: 5,
            warmup_s: 1,
            connections: 64,
            response_bytes: 6,
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn table_has_medians_ratios_and_failures() {
        let nginx = PeerResult {
            name: "nginx".into(),
            rounds: vec![
                round(90_000.0, 1000.0, 450_000, 4.5, 13 * 1024),
                round(100_000.0, 2000.0, 500_000, 5.0, 13 * 1024),
                round(95_000.0, 1500.0, 475_000, 4.75, 13 * 1024),
            ],
            failure: None,
        };
        let sluice = PeerResult {
            name: "sluice".into(),
            rounds: vec![round(47_500.0, 3000.0, 237_500, 4.75, 26 * 1024)],
            failure: None,
        };
        let haproxy = PeerResult {
            name: "haproxy".into(),
            rounds: vec![],
            failure: Some("exited (signal 9)\nlog".into()),
        };
        let case = CaseResult {
            name: "proxy",
            title: "t",
            peers: vec![nginx, haproxy, sluice],
            ratios: vec![
                ("sluice".into(), "nginx".into()),
                ("sluice".into(), "haproxy".into()),
            ],
            notes: vec![],
        };
        let md = case.markdown(&info());
        assert!(
            md.contains(
                "| nginx | 95,000 | 750 µs | 1.50 ms | 10.00 µs | 7.50 µs | 95 % | 13.0 MiB | 0 |"
            ),
            "{md}"
        );
        // One sluice round: paired with nginx's first (90,000 req/s, 10 µs per request).
        assert!(
            md.contains(
                "| sluice / nginx | 0.50× | 2.00× | 2.00× | 2.00× | 0.53–0.53× | 2.00–2.00× |"
            ),
            "{md}"
        );
        assert!(!md.contains("sluice / haproxy"), "{md}");
        assert!(md.contains("- haproxy: exited (signal 9)\n"), "{md}");
        let js = case.json();
        assert_eq!(js["peers"][0]["median"]["requests_per_second"], 95_000.0);
        assert!(js["peers"][1]["median"].is_null());
    }

    #[test]
    fn round_by_round_ratios_pair_the_interleaved_rounds() {
        let peer = |name: &str, rps: &[f64]| PeerResult {
            name: name.into(),
            rounds: rps
                .iter()
                .map(|&r| round(r, 1000.0, (r * 5.0) as u64, 5.0, 1024))
                .collect(),
            failure: None,
        };
        // Medians 100 and 100, but round by round 0.90, 1.00 and 1.10.
        let a = peer("a", &[90.0, 100.0, 110.0]);
        let b = peer("b", &[100.0, 100.0, 100.0]);
        let (lo, hi) = round_ratio_range(&a, &b, |r| r.wrk.requests_per_second).expect("pairs");
        assert!(
            (lo - 0.9).abs() < 1e-9 && (hi - 1.1).abs() < 1e-9,
            "{lo} {hi}"
        );
        let (lo, hi) = round_ratio_range(&a, &b, Round::cpu_us_per_request).expect("pairs");
        assert!((lo - 100.0 / 110.0).abs() < 1e-9 && (hi - 100.0 / 90.0).abs() < 1e-9);
        // A peer without rounds pairs with nothing; extra rounds of the other are left out.
        assert!(round_ratio_range(&a, &peer("c", &[]), |r| r.wrk.requests_per_second).is_none());
        let short = peer("d", &[100.0]);
        assert_eq!(
            round_ratio_range(&a, &short, |r| r.wrk.requests_per_second),
            Some((0.9, 0.9))
        );
        let case = CaseResult {
            name: "proxy",
            title: "t",
            peers: vec![a, b],
            ratios: vec![("a".into(), "b".into())],
            notes: vec![],
        };
        let js = case.json();
        assert_eq!(js["ratio_ranges"][0]["subject"], "a");
        assert_eq!(js["ratio_ranges"][0]["requests_per_second"][1], 1.1);
    }

    #[test]
    fn fills_only_the_marked_section() -> anyhow::Result<()> {
        let doc = "a\n<!-- bench:proxy:begin -->\nold\n<!-- bench:proxy:end -->\nb\n";
        let out = fill_section(doc, "proxy", "new table\n")?;
        assert_eq!(
            out,
            "a\n<!-- bench:proxy:begin -->\nnew table\n<!-- bench:proxy:end -->\nb\n"
        );
        assert!(fill_section(doc, "filters", "x").is_err());
        Ok(())
    }

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
