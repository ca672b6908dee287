//! Converts the Prometheus text of /metrics into OTLP metrics, so that everything /metrics shows
//! can also be pushed: counters become monotonic cumulative sums, gauges (and untyped samples)
//! gauges, histograms explicit-bucket histograms. Reading the rendered text keeps one source of
//! truth: a metric added to /metrics is pushed without further work.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Only its `_sum` and `_count` series are written; they are pushed as counters.
    Summary,
}

/// Label names and (unescaped) values, in the order written.
type Labels<'a> = Vec<(&'a str, String)>;

/// One sample line: name, labels (in order), value.
struct Sample<'a> {
    name: &'a str,
    labels: Labels<'a>,
    value: f64,
}

/// Parse one sample line; None for a line that is not one.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (name_labels, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = name_labels.split_once('{') else {
        return Some(Sample {
            name: name_labels,
            labels: Vec::new(),
            value,
        });
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => val.push('\n'),
                    Some((_, c)) => val.push(c),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => val.push(c),
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(','), val));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn attributes(labels: &[(&str, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue {
            key: (*k).to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            }),
            ..Default::default()
        })
        .collect()
}

/// A histogram series being assembled from its `_bucket`, `_sum` and `_count` lines.
#[derive(Default)]
struct HistSeries {
    bounds: Vec<(f64, f64)>,
    sum: f64,
    count: u64,
}

/// Convert Prometheus text to OTLP metrics; `start`/`now` in Unix nanoseconds.
pub fn convert(text: &str, start: u64, now: u64) -> Vec<Metric> {
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    let mut help: BTreeMap<&str, &str> = BTreeMap::new();
    let mut numbers: BTreeMap<String, (Kind, Vec<NumberDataPoint>)> = BTreeMap::new();
    let mut hists: BTreeMap<&str, BTreeMap<Labels<'_>, HistSeries>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                let k = match kind.trim() {
                    "counter" => Kind::Counter,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    _ => Kind::Gauge,
                };
                kinds.insert(name, k);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                help.insert(name, h);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(mut s) = parse_sample(line) else {
            continue;
        };
        let hist_family = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let fam = s.name.strip_suffix(suffix)?;
            (kinds.get(fam) == Some(&Kind::Histogram)).then_some((fam, *suffix))
        });
        if let Some((fam, suffix)) = hist_family {
            let le = s
                .labels
                .iter()
                .position(|(k, _)| *k == "le")
                .map(|i| s.labels.remove(i).1);
            let series = hists.entry(fam).or_default().entry(s.labels).or_default();
            match (suffix, le) {
                ("_bucket", Some(le)) => {
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    };
                    series.bounds.push((bound, s.value));
                }
                ("_sum", _) => series.sum = s.value,
                ("_count", _) => series.count = s.value as u64,
                _ => {}
            }
            continue;
        }
        let summary_part = ["_sum", "_count"].iter().any(|suffix| {
            s.name
                .strip_suffix(suffix)
                .is_some_and(|fam| kinds.get(fam) == Some(&Kind::Summary))
        });
        let kind = if summary_part {
            Kind::Counter
        } else {
            kinds.get(s.name).copied().unwrap_or(Kind::Gauge)
        };
        let point = NumberDataPoint {
            attributes: attributes(&s.labels),
            start_time_unix_nano: if kind == Kind::Counter { start } else { 0 },
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(s.value)),
            ..Default::default()
        };
        numbers
            .entry(s.name.to_string())
            .or_insert_with(|| (kind, Vec::new()))
            .1
            .push(point);
    }
    let mut out = Vec::new();
    for (name, (kind, points)) in numbers {
        let description = help
            .get(name.as_str())
            .map_or_else(String::new, |h| (*h).to_string());
        let data = if kind == Kind::Counter {
            metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })
        } else {
            metric::Data::Gauge(Gauge {
                data_points: points,
            })
        };
        out.push(Metric {
            name,
            description,
            data: Some(data),
            ..Default::default()
        });
    }
    for (name, series) in hists {
        let points = series
            .into_iter()
            .map(|(labels, mut h)| {
                h.bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
                // Prometheus buckets are cumulative; OTLP's are per bucket.
                let mut prev = 0.0;
                let mut counts = Vec::with_capacity(h.bounds.len());
                let mut bounds = Vec::with_capacity(h.bounds.len());
                for (b, c) in &h.bounds {
                    counts.push((c - prev).max(0.0) as u64);
                    prev = *c;
                    if b.is_finite() {
                        bounds.push(*b);
                    }
                }
                if h.bounds.last().is_none_or(|(b, _)| b.is_finite()) {
                    counts.push(h.count.saturating_sub(prev as u64));
                }
                HistogramDataPoint {
                    attributes: attributes(&labels),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: h.count,
                    sum: Some(h.sum),
                    bucket_counts: counts,
                    explicit_bounds: bounds,
                    ..Default::default()
                }
            })
            .collect();
        out.push(Metric {
            name: name.to_string(),
            description: help
                .get(name)
                .map_or_else(String::new, |h| (*h).to_string()),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP req_total Requests.\n# TYPE req_total counter\n\
req_total{route=\"a\",code=\"2xx\"} 5\n\
# TYPE up gauge\nup 1\n\
# TYPE phase summary\nphase_sum{plugin=\"p\"} 7\nphase_count{plugin=\"p\"} 2\n\
# TYPE lat_seconds histogram\n\
lat_seconds_bucket{route=\"a\",le=\"0.1\"} 2\nlat_seconds_bucket{route=\"a\",le=\"1\"} 3\n\
lat_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\nlat_seconds_sum{route=\"a\"} 2.5\nlat_seconds_count{route=\"a\"} 4\n";

    #[test]
    fn converts_each_kind() {
        let m = convert(TEXT, 1, 2);
        let get = |n: &str| m.iter().find(|x| x.name == n).expect(n);
        match &get("req_total").data {
            Some(metric::Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(s.data_points.len(), 1);
                assert_eq!(s.data_points[0].attributes.len(), 2);
                assert_eq!(
                    s.data_points[0].value,
                    Some(number_data_point::Value::AsDouble(5.0))
                );
            }
            other => panic!("not a sum: {other:?}"),
        }
        assert_eq!(get("req_total").description, "Requests.");
        assert!(matches!(get("up").data, Some(metric::Data::Gauge(_))));
        assert!(matches!(get("phase_sum").data, Some(metric::Data::Sum(_))));
        assert!(matches!(
            get("phase_count").data,
            Some(metric::Data::Sum(_))
        ));
        match &get("lat_seconds").data {
            Some(metric::Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
                assert_eq!(p.bucket_counts, vec![2, 1, 1]);
                assert_eq!(p.count, 4);
                assert_eq!(p.sum, Some(2.5));
                assert_eq!(p.attributes.len(), 1);
            }
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn escaped_label_values() {
        let s = parse_sample(r#"x{a="q\"u\\o",b="n\nl"} 3"#).expect("sample");
        assert_eq!(
            s.labels,
            vec![("a", "q\"u\\o".to_string()), ("b", "n\nl".to_string())]
        );
        assert_eq!(s.value, 3.0);
    }
}
