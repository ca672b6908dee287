//! Results of the conformance checks, per host function / callback and ABI version, and the
//! markdown table they become.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The proxy-wasm ABI versions the suite covers, and which plugins stand for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Abi {
    /// `rs_abi_010` (no SDK).
    V010,
    /// The AssemblyScript plugins (`@solo-io/proxy-runtime`).
    V020,
    /// The Rust plugins (`proxy-wasm` crate).
    V021,
}

impl Abi {
    pub const ALL: [Abi; 3] = [Abi::V010, Abi::V020, Abi::V021];

    pub fn name(self) -> &'static str {
        match self {
            Abi::V010 => "0.1.0",
            Abi::V020 => "0.2.0",
            Abi::V021 => "0.2.1",
        }
    }

    /// The ABI of a plugin file name (`rs_*`, `as_*`, `rs_abi_010`).
    pub fn of(plugin: &str) -> Abi {
        if plugin == "rs_abi_010" {
            Abi::V010
        } else if plugin.starts_with("as_") {
            Abi::V020
        } else {
            Abi::V021
        }
    }
}

/// Every host function (imported by plugins) and callback (exported by plugins) of the ABI.
pub const HOST_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_configuration",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_size",
    "proxy_send_local_response",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_call_foreign_function",
];

/// Callbacks the host calls.
pub const CALLBACKS: &[&str] = &[
    "_initialize / _start",
    "proxy_on_memory_allocate / malloc",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_queue_ready",
    "proxy_on_new_connection / downstream / upstream data (L4)",
];

/// Checks known to fail because of a documented Sluice design choice (docs/plugins.md,
/// "Pausing"): (check name, reason). They are shown as failing in docs/conformance.md but do not
/// fail the test; one that starts passing does, so that this list stays true.
pub const KNOWN_GAPS: &[(&str, &str)] = &[];

/// The L4 callbacks: Sluice runs plugins as HTTP filters only.
const L4: &str = "proxy_on_new_connection / downstream / upstream data (L4)";

/// Whether `f` exists in `abi`, per the spec's changelog: 0.2.0 replaced
/// `proxy_continue_request`/`_response` with `proxy_continue_stream` and
/// `proxy_get_configuration` with buffer reads, removed `proxy_clear_route_cache`, added
/// `proxy_close_stream` and foreign functions; 0.2.1 added `proxy_get_log_level`.
pub fn in_abi(f: &str, abi: Abi) -> bool {
    match f {
        "proxy_continue_request"
        | "proxy_continue_response"
        | "proxy_clear_route_cache"
        | "proxy_get_configuration" => abi == Abi::V010,
        "proxy_continue_stream" | "proxy_close_stream" | "proxy_call_foreign_function" => {
            abi != Abi::V010
        }
        "proxy_get_log_level" => abi == Abi::V021,
        _ => true,
    }
}

fn known_gap(check: &str) -> Option<&'static str> {
    KNOWN_GAPS
        .iter()
        .find(|(c, _)| *c == check)
        .map(|(_, r)| *r)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    pass: u32,
    fail: u32,
}

/// One hostile-plugin scenario's outcome.
pub struct HostileRow {
    pub scenario: String,
    pub expected: String,
    pub ok: bool,
    pub detail: String,
}

/// Collects check results.
#[derive(Default)]
pub struct Recorder {
    tally: BTreeMap<(String, Abi), Tally>,
    checks: Vec<(String, Abi, bool, String)>,
    pub hostile: Vec<HostileRow>,
}

impl Recorder {
    /// Records one check of `plugin` that exercised `functions`.
    pub fn check(
        &mut self,
        plugin: &str,
        name: &str,
        functions: &[&str],
        result: Result<(), String>,
    ) {
        let abi = Abi::of(plugin);
        let ok = result.is_ok();
        for f in functions {
            debug_assert!(
                HOST_FUNCTIONS.contains(f) || CALLBACKS.contains(f),
                "unknown function {f}"
            );
            let t = self.tally.entry((f.to_string(), abi)).or_default();
            if ok {
                t.pass += 1;
            } else {
                t.fail += 1;
            }
        }
        let detail = result.err().unwrap_or_default();
        eprintln!(
            "[{}] {plugin}: {name}{}",
            if ok { "pass" } else { "FAIL" },
            if ok {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
        self.checks
            .push((format!("{plugin}: {name}"), abi, ok, detail));
    }

    /// Records a hostile scenario.
    pub fn hostile(&mut self, scenario: &str, expected: &str, result: Result<String, String>) {
        let ok = result.is_ok();
        let detail = match result {
            Ok(d) | Err(d) => d,
        };
        eprintln!(
            "[{}] hostile {scenario}: {detail}",
            if ok { "pass" } else { "FAIL" }
        );
        self.hostile.push(HostileRow {
            scenario: scenario.into(),
            expected: expected.into(),
            ok,
            detail,
        });
    }

    /// Every failing check and scenario, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.2 && known_gap(&c.0).is_none())
            .map(|c| format!("{} (ABI {}): {}", c.0, c.1.name(), c.3))
            .collect();
        out.extend(
            self.checks
                .iter()
                .filter(|c| c.2 && known_gap(&c.0).is_some())
                .map(|c| format!("{} passes now: remove it from KNOWN_GAPS", c.0)),
        );
        out.extend(
            self.hostile
                .iter()
                .filter(|h| !h.ok)
                .map(|h| format!("hostile {}: {}", h.scenario, h.detail)),
        );
        out
    }

    fn cell(&self, f: &str, abi: Abi) -> String {
        match self.tally.get(&(f.to_string(), abi)) {
            None if f == L4 => "not applicable: no TCP filters".into(),
            None if !in_abi(f, abi) => "not in this ABI".into(),
            None => "not tested".into(),
            Some(t) if t.fail == 0 => format!("pass ({})", t.pass),
            Some(t) => format!("**FAIL** ({} of {})", t.fail, t.fail + t.pass),
        }
    }

    /// The generated docs/conformance.md.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let passed = self.checks.iter().filter(|c| c.2).count();
        let _ = writeln!(
            s,
            "# proxy-wasm conformance\n\n\
             <!-- generated by `SLUICE_WRITE_CONFORMANCE=1 cargo test -p sluice --test conformance`; do not edit -->\n\n\
             The test plugins of `conformance/` (Rust `proxy-wasm` 0.2.5 for ABI 0.2.1, AssemblyScript \
             `@solo-io/proxy-runtime` 0.1.8 for ABI 0.2.0, `rs_abi_010` without SDK for ABI 0.1.0) run in a \
             real `sluice run` in front of real upstreams (an HTTP/1.1 echo server, a second one as the \
             callout cluster, an h2c gRPC health server). Each check sends real requests and asserts only \
             on what the client or the upstream sees. A cell counts the checks that exercised that \
             function: `pass (N)` when all N passed. `not tested` means no check observes it — not that \
             it is missing. `not in this ABI`: the function does not exist in that version (see the \
             spec's changelog); `not applicable`: Sluice has no TCP (L4) filter chain, so the L4 \
             callbacks are never called.\n\n\
             Functional checks: {passed} of {} passed. Hostile scenarios: {} of {} passed.\n",
            self.checks.len(),
            self.hostile.iter().filter(|h| h.ok).count(),
            self.hostile.len()
        );
        for (title, list) in [("Host functions", HOST_FUNCTIONS), ("Callbacks", CALLBACKS)] {
            let _ = writeln!(s, "## {title}\n\n| function | ABI 0.1.0 | ABI 0.2.0 | ABI 0.2.1 |\n| --- | --- | --- | --- |");
            for f in list.iter() {
                let cells: Vec<String> = Abi::ALL.iter().map(|a| self.cell(f, *a)).collect();
                let _ = writeln!(s, "| `{f}` | {} |", cells.join(" | "));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Hostile plugins\n\nEach scenario runs on its own route of one gateway (one worker) next to a healthy route. \
            For every scenario the runner also checks that the gateway process is alive, that the healthy route answers 200 — \
            including requests sent concurrently while the hostile route is hit — and, where a VM fails, that \
            `sluice_plugin_failures_total{{plugin,kind}}` on `/metrics` went up.\n\n| scenario | expected | result | observed |\n| --- | --- | --- | --- |");
        for h in &self.hostile {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                h.scenario,
                h.expected,
                if h.ok { "pass" } else { "**FAIL**" },
                h.detail.replace('|', "\\|").replace('\n', " ")
            );
        }
        let _ = writeln!(
            s,
            "\n## Checks\n\n| check | ABI | result |\n| --- | --- | --- |"
        );
        for (name, abi, ok, detail) in &self.checks {
            let r = if *ok {
                "pass".to_string()
            } else if let Some(reason) = known_gap(name) {
                format!("**FAIL** (known gap: {reason})")
            } else {
                format!(
                    "**FAIL**: {}",
                    detail.replace('|', "\\|").replace('\n', " ")
                )
            };
            let _ = writeln!(s, "| {name} | {} | {r} |", abi.name());
        }
        s
    }
}
