//! `sluice plugin test`: run a plugin against one request and print what it did.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use serde_json::json;

use super::{Harness, Outcome, PluginTestError, TestRequest, TestResponse};

/// Arguments of `sluice plugin test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The plugin module (.wasm).
    #[arg(value_name = "PLUGIN.wasm")]
    pub plugin: PathBuf,
    /// The plugin's configuration: JSON (a string is passed as is), or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pub config: Option<String>,
    /// The VM configuration (`vm_config`): JSON or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pub vm_config: Option<String>,
    /// The root context id the plugin is configured with.
    #[arg(long, value_name = "ID", default_value = "")]
    pub root_id: String,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The request path (and query).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A request header `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request body: text or @FILE.
    #[arg(long, value_name = "STR|@FILE")]
    pub body: Option<String>,
    /// The status of the upstream's response.
    #[arg(long, default_value_t = 200)]
    pub response_status: u16,
    /// A header of the upstream's response `name: value` (repeatable).
    #[arg(long = "response-header", value_name = "NAME: VALUE")]
    pub response_headers: Vec<String>,
    /// The upstream's response body: text or @FILE.
    #[arg(long, value_name = "STR|@FILE")]
    pub response_body: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why the command could not run the test.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {0}: {1}")]
    File(String, std::io::Error),
    #[error("{what} is not valid JSON: {err} (give a JSON value, e.g. '{{\"key\": \"value\"}}', or @file)")]
    Json {
        what: &'static str,
        err: serde_json::Error,
    },
    #[error("header {0:?} is not `name: value`")]
    Header(String),
    #[error(transparent)]
    Test(#[from] PluginTestError),
}

/// Text of an `X` or `@file` argument.
fn text_or_file(v: &str) -> Result<Vec<u8>, CliError> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| CliError::File(path.to_string(), e)),
        None => Ok(v.as_bytes().to_vec()),
    }
}

fn json_arg(v: &str, what: &'static str) -> Result<serde_json::Value, CliError> {
    let bytes = text_or_file(v)?;
    serde_json::from_slice(&bytes).map_err(|err| CliError::Json { what, err })
}

fn split_header(h: &str) -> Result<(&str, &str), CliError> {
    let (k, v) = h
        .split_once(':')
        .ok_or_else(|| CliError::Header(h.into()))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(CliError::Header(h.into()));
    }
    Ok((k, v.trim()))
}

/// Run the command: print the outcome, return the exit code (0 ran, 1 the plugin failed or could
/// not be loaded, 2 bad arguments).
pub fn run(args: &TestArgs) -> u8 {
    match test(args) {
        Ok((name, out)) => {
            let text = if args.json {
                let mut t = serde_json::to_string_pretty(&out.to_json()).unwrap_or_default();
                t.push('\n');
                t
            } else {
                render(&name, &out)
            };
            // A closed stdout (`| head`) is not a reason to panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            match &out.failure {
                Some(f) => {
                    eprintln!("sluice: plugin {name} failed ({}): {}", f.kind, f.message);
                    1
                }
                None => 0,
            }
        }
        Err(CliError::Test(e @ (PluginTestError::Load { .. } | PluginTestError::Read { .. }))) => {
            if args.json {
                let text = format!("{}\n", json!({ "error": e.to_string() }));
                let _ = std::io::stdout().write_all(text.as_bytes());
            }
            eprintln!("sluice: plugin failed to load: {e}");
            1
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            2
        }
    }
}

fn test(args: &TestArgs) -> Result<(String, Outcome), CliError> {
    let wasm = std::fs::read(&args.plugin).map_err(|source| PluginTestError::Read {
        path: args.plugin.display().to_string(),
        source,
    })?;
    let name = plugin_name(&args.plugin);
    let mut settings = json!({ "name": name, "root_id": args.root_id });
    if let Some(c) = &args.config {
        settings["config"] = json_arg(c, "--config")?;
    }
    if let Some(c) = &args.vm_config {
        settings["vm_config"] = json_arg(c, "--vm-config")?;
    }
    let mut request = TestRequest::new(&args.method, &args.path);
    for h in &args.headers {
        let (k, v) = split_header(h)?;
        request = request.header(k, v);
    }
    if let Some(b) = &args.body {
        request = request.body(text_or_file(b)?);
    }
    let mut response = TestResponse::status(args.response_status);
    for h in &args.response_headers {
        let (k, v) = split_header(h)?;
        response = response.header(k, v);
    }
    if let Some(b) = &args.response_body {
        response = response.body(text_or_file(b)?);
    }
    let harness = Harness::from_settings(settings, &wasm)?;
    let out = harness.run(&request, &response)?;
    Ok((name, out))
}

/// The plugin's name: the file name without `.wasm`.
fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "plugin".into())
}

fn write_headers(s: &mut String, h: &HeaderMap) {
    for (k, v) in h {
        let _ = writeln!(s, "  {}: {}", k, String::from_utf8_lossy(v.as_bytes()));
    }
}

fn write_body(s: &mut String, body: &[u8]) {
    if body.is_empty() {
        return;
    }
    let _ = writeln!(s);
    for line in String::from_utf8_lossy(body).lines() {
        let _ = writeln!(s, "  {line}");
    }
}

/// The human-readable report.
fn render(name: &str, out: &Outcome) -> String {
    let mut s = String::new();
    match &out.upstream_request {
        Some(r) => {
            let _ = writeln!(s, "request to upstream:");
            let _ = writeln!(s, "  {} {}", r.method, r.path);
            write_headers(&mut s, &r.headers);
            write_body(&mut s, &r.body);
            if !r.trailers.is_empty() {
                let _ = writeln!(s, "  trailers:");
                write_headers(&mut s, &r.trailers);
            }
        }
        None => {
            let why = out.local_response.as_ref().map_or("", |l| l.details);
            let _ = writeln!(s, "request to upstream: none (the gateway answered: {why})");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "response to client:");
    let _ = writeln!(s, "  {}", out.response.status);
    write_headers(&mut s, &out.response.headers);
    write_body(&mut s, &out.response.body);
    if !out.response.trailers.is_empty() {
        let _ = writeln!(s, "  trailers:");
        write_headers(&mut s, &out.response.trailers);
    }
    if !out.callouts.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "callouts:");
        for c in &out.callouts {
            let answer = c
                .status
                .map_or("failed (no answer in a plugin test)".to_string(), |st| {
                    st.to_string()
                });
            let _ = writeln!(
                s,
                "  {} {} {} -> {answer}",
                c.request.cluster, c.request.method, c.request.path
            );
        }
    }
    let _ = writeln!(s);
    if out.logs.is_empty() {
        let _ = writeln!(s, "logs: none");
    } else {
        let _ = writeln!(s, "logs:");
        for l in &out.logs {
            let message = l.message.trim_end().replace('\n', "\n    ");
            let _ = writeln!(s, "  [{} {name}] {message}", l.level);
        }
    }
    for m in &out.host_messages {
        let _ = writeln!(s, "  [host] {m}");
    }
    if !out.metrics.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "metrics:");
        for m in &out.metrics {
            let _ = writeln!(s, "  {} ({}) = {}", m.name, m.kind, m.value);
        }
    }
    s
}
