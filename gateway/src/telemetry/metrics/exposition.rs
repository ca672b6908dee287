//! Writing the Prometheus text exposition format (version 0.0.4): family headers, samples and
//! label escaping. Rendering is off the request path, so it favours clarity over speed.

use std::fmt::{Display, Write};

/// The content type of the text exposition format, for the admin `/metrics` response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as written on its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

impl FamilyType {
    fn as_str(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines that open a family.
pub(crate) fn family(out: &mut String, name: &str, kind: FamilyType, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    // HELP text escapes only backslash and newline (quotes are legal there).
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// Writes one sample line: `name{labels,extra} value`.
pub(crate) fn sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
    value: impl Display,
) {
    out.push_str(name);
    let mut pairs = labels.iter().copied().chain(extra).peekable();
    if pairs.peek().is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in pairs {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    // Writing into a String cannot fail.
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline; everything else is literal UTF-8.
pub(crate) fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(
            &mut out,
            "m",
            &[("a", "x\"y\\z\nw")],
            Some(("le", "+Inf")),
            3,
        );
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",le=\"+Inf\"} 3\n");
    }

    #[test]
    fn sample_without_labels_has_no_braces() {
        let mut out = String::new();
        sample(&mut out, "m", &[], None, 1.5);
        assert_eq!(out, "m 1.5\n");
    }
}
