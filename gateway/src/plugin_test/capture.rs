//! Capturing what a plugin logged and how its VM failed, from the `tracing` events the host emits,
//! with a subscriber set on the running thread only (so parallel test runs do not mix).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// `proxy_log`.
    Plugin,
    /// WASI `fd_write` to stdout (`println!` in a plugin).
    Stdout,
    /// WASI `fd_write` to stderr (`eprintln!`, panic messages).
    Stderr,
}

/// One line the plugin logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error` (proxy-wasm log levels; critical is `error`).
    pub level: &'static str,
    pub source: LogSource,
    pub message: String,
}

/// The VM failed while handling the request (trap, deadline, fuel, memory cap, proc_exit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginFailure {
    /// `trap`, `deadline`, `fuel`, `memory_limit`, `proc_exit`, `start`, or `unavailable` when the
    /// VM had already failed on an earlier request.
    pub kind: String,
    pub message: String,
}

/// What the capture collected.
#[derive(Default)]
pub(crate) struct Captured {
    pub logs: Vec<LogLine>,
    pub host: Vec<String>,
    pub failure: Option<PluginFailure>,
}

/// Targets the plugin host logs under.
fn is_host_target(target: &str) -> bool {
    target.starts_with("sluice_wasm") || target.starts_with("sluice::wasm")
}

/// A subscriber that records the host's events into `sink` and drops everything else.
pub(crate) fn subscriber(sink: Arc<Mutex<Captured>>) -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry().with(Recorder { sink }.with_filter(HostOnly))
}

struct HostOnly;

impl<S> Filter<S> for HostOnly {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        is_host_target(meta.target())
    }
}

struct Recorder {
    sink: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    stream: Option<String>,
    kind: Option<String>,
    error: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "stream" => self.stream = Some(value.to_string()),
            "kind" => self.kind = Some(value.to_string()),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = Some(format!("{value:?}")),
            "plugin" => {}
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let target = meta.target();
        if target.starts_with("sluice_wasm::host::core") {
            sink.logs.push(LogLine {
                level: level_name(meta.level()),
                source: LogSource::Plugin,
                message: f.message,
            });
        } else if target.starts_with("sluice_wasm::host::wasi") && f.stream.is_some() {
            let source = if f.stream.as_deref() == Some("stderr") {
                LogSource::Stderr
            } else {
                LogSource::Stdout
            };
            sink.logs.push(LogLine {
                level: level_name(meta.level()),
                source,
                message: f.message,
            });
        } else if target.starts_with("sluice::wasm::worker_vm")
            && *meta.level() == Level::ERROR
            && f.kind.is_some()
        {
            // The worker logs each VM failure once, with its kind and error.
            sink.failure = Some(PluginFailure {
                kind: f.kind.unwrap_or_default(),
                message: f.error.unwrap_or(f.message),
            });
        } else {
            let mut line = f.message;
            line.push_str(&f.rest);
            sink.host.push(line);
        }
    }
}
