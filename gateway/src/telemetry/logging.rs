//! `tracing` setup for the gateway's own logs (not the access log): stderr, filtered by
//! `RUST_LOG`, human-readable by default or JSON with `SLUICE_LOG_FORMAT=json`. Colours only
//! when stderr is a terminal and `NO_COLOR` is unset: a log file or journal gets plain text.
//!
//! A line written while a traced request is polled carries the request's ids
//! ([`super::log_context`]) as the outermost span scope, `request{trace_id=… span_id=…}`,
//! exactly as a `tracing` span of that name and those fields would show.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use super::log_context::{self, LogIds};

/// Installs the global subscriber. `default_filter` (e.g. "info") applies when `RUST_LOG` is
/// unset or invalid. Calling it again, or after another subscriber was installed (tests), does
/// nothing.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init fails only when a global subscriber already exists, which is what idempotent means.
    let _ = if json {
        builder
            .json()
            .event_format(RequestScope::json(format().json()))
            .try_init()
    } else {
        builder
            .event_format(RequestScope::text(format().with_ansi(ansi), ansi))
            .try_init()
    };
}

/// tracing-subscriber's default line format (the timer and options set here are its defaults).
fn format() -> format::Format {
    format::Format::default()
}

/// How the wrapped format writes a line, so the request scope is put where it belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `timestamp LEVEL scope: target: fields`, optionally with ANSI styles.
    Text { ansi: bool },
    /// One JSON object, with `span` (the innermost span) and `spans` (root first).
    Json,
}

/// An event format that writes lines as `inner` does and adds the scope of the traced request
/// being polled, as the outermost span.
///
/// `inner` must write the current span scope the way tracing-subscriber's full text format or
/// its JSON format (current span and span list on, not flattened) do, and with the ANSI
/// setting given here (it is set on the format, as the line is first written to a buffer).
pub struct RequestScope<F> {
    inner: F,
    layout: Layout,
}

impl<F> RequestScope<F> {
    /// Around tracing-subscriber's full text format, with ANSI styles or not.
    pub fn text(inner: F, ansi: bool) -> Self {
        RequestScope {
            inner,
            layout: Layout::Text { ansi },
        }
    }

    /// Around tracing-subscriber's JSON format.
    pub fn json(inner: F) -> Self {
        RequestScope {
            inner,
            layout: Layout::Json,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for RequestScope<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // An event with an explicit parent is not in the request's scope.
        let ids = log_context::current().filter(|_| event.is_contextual());
        let Some(ids) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let in_span = ctx.lookup_current().is_some();
        let level = event.metadata().level().as_str();
        match splice(&line, self.layout, ids, in_span, level) {
            Some(l) => writer.write_str(&l),
            // Not the expected layout: the line as it is beats no line.
            None => writer.write_str(&line),
        }
    }
}

/// `line` with the request scope of `ids` added. `in_span`: the line already shows a span
/// scope (the request's goes first); `level`: the event's level, as the line spells it.
fn splice(line: &str, layout: Layout, ids: LogIds, in_span: bool, level: &str) -> Option<String> {
    let (t, s) = ids.hex();
    // Hex digits are ASCII.
    let t = std::str::from_utf8(&t).ok()?;
    let s = std::str::from_utf8(&s).ok()?;
    let (at, scope) = match layout {
        Layout::Text { ansi } => {
            // After `LEVEL ` (styles included): the timestamp before it has no letters.
            let lvl = line.find(level)? + level.len();
            let at = lvl + line[lvl..].find(' ')? + 1;
            let scope = if ansi {
                format!(
                    "\x1b[1mrequest\x1b[0m\x1b[1m{{\x1b[0m\x1b[3mtrace_id\x1b[0m\x1b[2m=\x1b[0m\"{t}\" \
                     \x1b[3mspan_id\x1b[0m\x1b[2m=\x1b[0m\"{s}\"\x1b[1m}}\x1b[0m\x1b[2m:\x1b[0m"
                )
            } else {
                format!("request{{trace_id=\"{t}\" span_id=\"{s}\"}}:")
            };
            // One space after the last scope.
            (at, if in_span { scope } else { scope + " " })
        }
        Layout::Json => {
            let span = format!(r#"{{"span_id":"{s}","trace_id":"{t}","name":"request"}}"#);
            const SPANS: &str = r#","spans":["#;
            match line.rfind(SPANS) {
                // Root first in the list; `span` stays the innermost.
                Some(i) if in_span => (i + SPANS.len(), span + ","),
                _ => (
                    line.trim_end().strip_suffix('}')?.len(),
                    format!(r#","span":{span},"spans":[{span}]"#),
                ),
            }
        }
    };
    let mut out = String::with_capacity(line.len() + scope.len());
    out.push_str(line.get(..at)?);
    out.push_str(&scope);
    out.push_str(line.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::time::FormatTime;
    use tracing_subscriber::fmt::MakeWriter;

    const IDS: LogIds = LogIds {
        trace_id: [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ],
        span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
    };

    /// The same timestamp on every line, so that two lines can be compared.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-03T18:45:00.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn take(&self) -> String {
            let mut b = self.0.lock().expect("log buffer");
            String::from_utf8(std::mem::take(&mut *b)).expect("utf-8 lines")
        }
    }

    /// Lines logged (a) inside a real `request` span with the ids as fields, as the gateway
    /// once did, and (b) with the ids in the log context; optionally inside a further span.
    fn both_ways(json: bool, ansi: bool, inner_span: bool) -> (String, String) {
        let buf = Buf::default();
        let fmt = format().with_timer(Fixed).with_ansi(ansi);
        let builder = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(ansi);
        let dispatch: tracing::Dispatch = if json {
            builder
                .json()
                .event_format(RequestScope::json(fmt.json()))
                .into()
        } else {
            builder.event_format(RequestScope::text(fmt, ansi)).into()
        };
        let log = || {
            let inner = inner_span.then(|| tracing::info_span!("plugin", name = "x").entered());
            tracing::warn!(path = "/a", "hello {}", 1);
            drop(inner);
        };
        tracing::dispatcher::with_default(&dispatch, || {
            let (t, s) = IDS.hex();
            let t = std::str::from_utf8(&t).expect("hex");
            let s = std::str::from_utf8(&s).expect("hex");
            tracing::info_span!("request", trace_id = t, span_id = s).in_scope(log);
            let span = buf.take();
            log_context::with(IDS, log);
            (span, buf.take())
        })
    }

    /// The request scope reads exactly as the `tracing` span it replaces, in every layout.
    #[test]
    fn same_line_as_a_request_span() {
        for json in [false, true] {
            for ansi in [false, true] {
                for inner in [false, true] {
                    let (span, ctx) = both_ways(json, ansi, inner);
                    assert!(span.contains("00f067aa0ba902b7"), "{span}");
                    assert_eq!(ctx, span, "json {json}, ansi {ansi}, inner span {inner}");
                }
            }
        }
    }

    #[test]
    fn lines_outside_a_request_are_untouched() {
        let buf = Buf::default();
        let fmt = format().with_timer(Fixed).with_ansi(false);
        let dispatch: tracing::Dispatch = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .event_format(RequestScope::text(fmt, false))
            .into();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("plain"));
        assert_eq!(
            buf.take(),
            "2026-12-03T18:45:00.123456Z  INFO sluice::telemetry::logging::tests: plain\n"
        );
    }
}
