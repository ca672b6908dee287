//! Renders real metrics and parses the text back, as Prometheus would.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::*;

type Labels = BTreeMap<String, String>;

/// A strict little parser of the 0.0.4 text format: returns every sample, and fails on a sample
/// whose family has no `# TYPE` line before it or on a malformed line.
fn parse(text: &str) -> Result<Vec<(String, Labels, f64)>, String> {
    let mut typed: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(line)?;
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("bad type: {line}"));
            }
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..])?;
                (&line[..open], labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').ok_or(line)?;
                (name, Labels::new(), rest)
            }
        };
        let value: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("bad value: {line}"))?;
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        if !typed.contains(family) {
            return Err(format!("sample before its TYPE: {line}"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

/// Parses `k="v",...}` and returns the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find("=\"").ok_or("missing =\"")?;
        let key = s[..eq].to_string();
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (i, '"') => break eq + 2 + i + 1,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn find(samples: &[(String, Labels, f64)], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == want.len()
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

#[test]
fn rendered_values_parse_back() {
    let m = Metrics::new();
    let r = m.route("public", "api \"v1\"\\\n", "backend");
    for _ in 0..3 {
        r.record(200, Duration::from_micros(300), Duration::from_micros(100));
    }
    r.record(503, Duration::from_millis(30), Duration::from_millis(30));
    r.record(999, Duration::from_secs(60), Duration::from_secs(60));
    // The same labels resolve to the same series.
    m.route("public", "api \"v1\"\\\n", "backend")
        .record(404, Duration::ZERO, Duration::ZERO);
    RouteMetrics::default().record(200, Duration::ZERO, Duration::ZERO);

    m.connection_opened("public");
    m.connection_opened("public");
    m.connection_closed("public");
    m.upstream_connect("backend", Duration::from_millis(3));
    m.upstream_retry("backend");
    m.endpoint_health("backend", "10.0.0.1:80", true);
    m.endpoint_health("backend", "10.0.0.2:80", false);
    m.endpoint_health("backend", "10.0.0.3:80", false);
    m.forget_endpoint("backend", "10.0.0.3:80");
    m.reload_succeeded("v1");
    m.reload_succeeded("v2");
    m.reload_failed();
    m.access_log_dropped().fetch_add(7, Relaxed);
    let pm = m.plugin_metric("auth", "wasm.denied-total", MetricKind::Counter);
    assert!(pm.as_ref().is_ok_and(|c| c.increment(4).is_ok()));
    let ph = m.plugin_metric("auth", "lat", MetricKind::Histogram);
    assert!(ph.as_ref().map(|h| h.record(7)).is_ok());

    let text = m.render();
    let s = match parse(&text) {
        Ok(s) => s,
        Err(e) => panic!("{e}\n{text}"),
    };
    let route = [
        ("listener", "public"),
        ("route", "api \"v1\"\\\n"),
        ("cluster", "backend"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = route.to_vec();
        v.push(extra);
        v
    };
    assert_eq!(
        find(&s, "sluice_requests_total", &with(("status", "200"))),
        Some(3.0)
    );
    assert_eq!(
        find(&s, "sluice_requests_total", &with(("status", "503"))),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_requests_total", &with(("status", "404"))),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_requests_total", &with(("status", "999"))),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_requests_total", &with(("status", "201"))),
        None
    );

    let d = "sluice_request_duration_seconds";
    assert_eq!(
        find(&s, &format!("{d}_bucket"), &with(("le", "0.0005"))),
        Some(4.0)
    );
    assert_eq!(
        find(&s, &format!("{d}_bucket"), &with(("le", "0.05"))),
        Some(5.0)
    );
    assert_eq!(
        find(&s, &format!("{d}_bucket"), &with(("le", "10"))),
        Some(5.0)
    );
    assert_eq!(
        find(&s, &format!("{d}_bucket"), &with(("le", "+Inf"))),
        Some(6.0)
    );
    assert_eq!(find(&s, &format!("{d}_count"), &route), Some(6.0));
    let sum = find(&s, &format!("{d}_sum"), &route).unwrap_or(0.0);
    assert!((sum - 60.0309).abs() < 1e-9, "sum {sum}");
    let t = "sluice_request_ttfb_seconds";
    assert_eq!(
        find(&s, &format!("{t}_bucket"), &with(("le", "0.0005"))),
        Some(4.0)
    );

    let cluster = [("cluster", "backend")];
    let c = "sluice_upstream_connect_seconds";
    assert_eq!(
        find(&s, &format!("{c}_bucket"), &[cluster[0], ("le", "0.002")]),
        Some(0.0)
    );
    assert_eq!(
        find(&s, &format!("{c}_bucket"), &[cluster[0], ("le", "0.005")]),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_upstream_retries_total", &cluster),
        Some(1.0)
    );

    let l = [("listener", "public")];
    assert_eq!(
        find(&s, "sluice_downstream_connections_active", &l),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_downstream_connections_total", &l),
        Some(2.0)
    );

    let ep = |e| [("cluster", "backend"), ("endpoint", e)];
    assert_eq!(
        find(&s, "sluice_endpoint_healthy", &ep("10.0.0.1:80")),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_endpoint_healthy", &ep("10.0.0.2:80")),
        Some(0.0)
    );
    assert_eq!(
        find(&s, "sluice_endpoint_healthy", &ep("10.0.0.3:80")),
        None
    );

    assert_eq!(find(&s, "sluice_config_reload_total", &[]), Some(2.0));
    assert_eq!(
        find(&s, "sluice_config_reload_failures_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_config_info", &[("version", "v2")]),
        Some(1.0)
    );
    assert_eq!(find(&s, "sluice_config_info", &[("version", "v1")]), None);
    assert_eq!(find(&s, "sluice_access_log_dropped_total", &[]), Some(7.0));

    assert_eq!(
        find(&s, "sluice_plugin_wasm_denied_total", &[("plugin", "auth")]),
        Some(4.0)
    );
    assert_eq!(
        find(
            &s,
            "sluice_plugin_lat_bucket",
            &[("plugin", "auth"), ("le", "5")]
        ),
        Some(0.0)
    );
    assert_eq!(
        find(
            &s,
            "sluice_plugin_lat_bucket",
            &[("plugin", "auth"), ("le", "10")]
        ),
        Some(1.0)
    );
    assert_eq!(
        find(&s, "sluice_plugin_lat_sum", &[("plugin", "auth")]),
        Some(7.0)
    );
}

#[test]
fn shards_sum_across_threads() {
    let m = Metrics::new();
    let r = m.route("l", "r", "c");
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let r = r.clone();
            scope.spawn(move || {
                bind_worker(worker);
                for _ in 0..1000 {
                    r.record(200, Duration::from_millis(1), Duration::from_millis(1));
                }
            });
        }
    });
    let s = parse(&m.render()).unwrap_or_default();
    let labels = [
        ("listener", "l"),
        ("route", "r"),
        ("cluster", "c"),
        ("status", "200"),
    ];
    assert_eq!(find(&s, "sluice_requests_total", &labels), Some(4000.0));
}

#[test]
fn parser_rejects_untyped_samples() {
    assert!(parse("foo 1\n").is_err());
    assert!(parse("# TYPE foo counter\nfoo{a=\"x\\q\"} 1\n").is_err());
}

/// A shard's owner adds without atomics, so two threads must never own one shard: a second
/// thread bound to the same worker index (a restarted worker while the old one still runs)
/// writes the shared shard instead.
#[test]
fn two_live_threads_bound_to_one_index_never_both_own_its_shard() {
    let both_bound = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let both_bound = both_bound.clone();
            std::thread::spawn(move || {
                bind_worker(0);
                let owned = super::route::shard_slot(super::route::shard_count()).1;
                // Both threads hold their claims (a claim ends with its thread) until here.
                both_bound.wait();
                owned
            })
        })
        .collect();
    let mut owners = 0;
    for h in handles {
        match h.join() {
            Ok(owned) => owners += usize::from(owned),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    assert!(owners <= 1, "{owners} threads own shard 0");
}
