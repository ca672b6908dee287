//! `sluice check` semantics: every problem in a config is found, placed (key path and line) and
//! given a fix; a good config loads. One small YAML per check.
//!
//! YAML is written with `y(&[...])`, one string per line, so that line N is element N-1.

use std::fs;
use std::path::{Path, PathBuf};

use sluice::config::{load, load_str, Diagnostic, Diagnostics};

const NATIVE: &[&str] = &["local-rate-limit", "request-id"];

fn y(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(rel)
}

/// Problems in `text`, with relative paths resolved against a directory that does not exist.
fn problems(text: &str) -> Vec<Diagnostic> {
    problems_in(text, Path::new("/nonexistent/sluice-test"))
}

fn problems_in(text: &str, dir: &Path) -> Vec<Diagnostic> {
    match load_str(text, dir, NATIVE) {
        Ok(_) => Vec::new(),
        Err(d) => d.0,
    }
}

fn show(ds: &[Diagnostic]) -> String {
    Diagnostics(ds.to_vec()).render("test.yaml")
}

/// Assert that `text` has a problem at `path` on `line` whose message contains `needle`, with a
/// fix; returns it for further checks.
#[track_caller]
fn expect(text: &str, path: &str, line: usize, needle: &str) -> Diagnostic {
    let ds = problems(text);
    expect_in(&ds, path, line, needle)
}

#[track_caller]
fn expect_in(ds: &[Diagnostic], path: &str, line: usize, needle: &str) -> Diagnostic {
    let Some(d) = ds
        .iter()
        .find(|d| d.path == path && d.message.contains(needle))
    else {
        panic!(
            "no problem at `{path}` containing {needle:?}; got:\n{}",
            show(ds)
        );
    };
    assert_eq!(d.line, Some(line), "line of `{path}`:\n{}", show(ds));
    assert!(d.column.is_some(), "column of `{path}`");
    assert!(d.fix.is_some(), "no fix for `{path}`:\n{}", show(ds));
    d.clone()
}

#[track_caller]
fn expect_ok(text: &str) {
    let ds = problems(text);
    assert!(ds.is_empty(), "expected no problem, got:\n{}", show(&ds));
}

/// A valid listener (lines 1-3); tests append its routes and filters from line 4.
const L: [&str; 3] = [
    "listeners:",
    "  - name: public",
    "    address: 127.0.0.1:8080",
];

/// `L` plus a route to cluster `api` (lines 4-5); tests append top-level sections from line 6.
fn listener_with_route() -> Vec<&'static str> {
    let mut v = L.to_vec();
    v.extend(["    routes:", "      - cluster: api"]);
    v
}

/// A cluster `api` (3 lines) to put after a listener's routes.
const C: [&str; 3] = [
    "clusters:",
    "  - name: api",
    "    endpoints: [\"127.0.0.1:9000\"]",
];

/// Listener + route to `api` + cluster `api` + `rest` from line 9.
fn good_with(rest: &[&str]) -> String {
    let mut v = listener_with_route();
    v.extend(C);
    v.extend_from_slice(rest);
    y(&v)
}

// ---------------------------------------------------------------- shape (serde) problems

#[test]
fn minimal_config_is_valid() {
    expect_ok(&good_with(&[]));
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let text = y(&[
        "listeners:",
        "  - name: a",
        "    address: [127.0.0.1:1",
        "workers: 2",
    ]);
    let ds = problems(&text);
    assert_eq!(ds.len(), 1, "{}", show(&ds));
    assert!(
        ds[0].message.starts_with("YAML syntax error"),
        "{}",
        show(&ds)
    );
    assert_eq!(ds[0].line, Some(4));
}

#[test]
fn syntax_error_wins_over_an_earlier_shape_error() {
    let text = y(&["bogus: 1", "a: b", "  c: d"]);
    let ds = problems(&text);
    assert_eq!(ds.len(), 1);
    assert!(ds[0].message.contains("syntax"), "{}", show(&ds));
    assert_eq!(ds[0].line, Some(3));
}

#[test]
fn unknown_top_level_key_lists_valid_keys() {
    let d = expect(
        &good_with(&["listner: x"]),
        "listner",
        9,
        "unknown key `listner`",
    );
    let fix = d.fix.unwrap_or_default();
    assert!(fix.contains("did you mean `listeners`?"), "{fix}");
    assert!(
        fix.contains("admin, workers, drain_timeout, listeners"),
        "{fix}"
    );
}

#[test]
fn unknown_nested_key_points_at_the_key() {
    let text = y(&["listeners:", "  - name: a", "    adress: 127.0.0.1:1"]);
    let d = expect(&text, "listeners[0].adress", 3, "unknown key `adress`");
    assert_eq!(d.column, Some(5));
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("did you mean `address`?"));
}

#[test]
fn wrong_type_is_reported_in_plain_words() {
    let d = problems(&good_with(&["workers: many"]));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "workers");
    assert_eq!(d[0].line, Some(9));
    assert_eq!(d[0].column, Some(10));
    assert!(
        d[0].message
            .contains("expected a whole number, found string \"many\""),
        "{}",
        show(&d)
    );
}

#[test]
fn duration_without_unit() {
    let mut v = listener_with_route();
    v.extend(["    limits: { idle_timeout: 5 }"]);
    v.extend(C);
    let d = expect(
        &y(&v),
        "listeners[0].limits.idle_timeout",
        6,
        "duration `5` has no unit",
    );
    assert!(d.fix.unwrap_or_default().contains("5s"));
}

#[test]
fn duration_with_unknown_unit() {
    let text = good_with(&["drain_timeout: 5 minutes"]);
    expect(&text, "drain_timeout", 9, "unknown unit");
}

#[test]
fn size_with_unknown_unit() {
    let mut v = listener_with_route();
    v.extend(["    limits:", "      max_request_body_size: 10XB"]);
    v.extend(C);
    expect(
        &y(&v),
        "listeners[0].limits.max_request_body_size",
        7,
        "unknown unit `XB`",
    );
}

#[test]
fn unknown_enum_value_suggests_the_closest() {
    let text = good_with(&["    load_balancing: round_robbin"]);
    let d = expect(
        &text,
        "clusters[0].load_balancing",
        9,
        "unknown value `round_robbin`",
    );
    let fix = d.fix.unwrap_or_default();
    assert!(fix.contains("did you mean `round_robin`?"), "{fix}");
    assert!(fix.contains("least_request"), "{fix}");
}

#[test]
fn missing_required_key() {
    let text = y(&["listeners:", "  - name: a", "    routes: []"]);
    let d = expect(&text, "listeners[0]", 2, "missing required key `address`");
    assert_eq!(d.column, Some(5));
}

#[test]
fn duplicate_key_points_at_the_second() {
    let text = y(&[
        "listeners:",
        "  - name: a",
        "    address: 127.0.0.1:1",
        "    name: b",
    ]);
    let d = expect(&text, "listeners[0].name", 4, "written twice");
    assert!(d.fix.unwrap_or_default().contains("line 2"));
}

#[test]
fn empty_file() {
    let ds = problems("# nothing but a comment\n\n");
    assert_eq!(ds.len(), 1);
    assert!(ds[0].message.contains("empty"));
    assert!(ds[0].fix.is_some());
}

#[test]
fn several_documents() {
    let ds = problems(&format!("{}---\nworkers: 2\n", good_with(&[])));
    assert_eq!(ds.len(), 1);
    assert!(
        ds[0].message.contains("more than one YAML document"),
        "{}",
        show(&ds)
    );
}

// ---------------------------------------------------------------- top level

#[test]
fn no_listeners() {
    let ds = problems(&y(&["workers: 2", "listeners: []"]));
    let d = expect_in(&ds, "listeners", 2, "no listeners");
    assert!(d.fix.unwrap_or_default().contains("listeners:"));
    // Without a `listeners:` key there is no line, but still the problem.
    let ds = problems(&y(&["workers: 2"]));
    assert!(
        ds.iter().any(|d| d.path == "listeners" && d.line.is_none()),
        "{}",
        show(&ds)
    );
}

#[test]
fn listeners_may_come_from_xds() {
    let text = y(&[
        "xds:",
        "  server: http://127.0.0.1:18000",
        "  node: { id: edge-1 }",
    ]);
    expect_ok(&text);
}

#[test]
fn workers_range() {
    expect(
        &good_with(&["workers: 0"]),
        "workers",
        9,
        "between 1 and 1024",
    );
    expect(
        &good_with(&["workers: 2000"]),
        "workers",
        9,
        "between 1 and 1024",
    );
    expect_ok(&good_with(&["workers: 1024"]));
}

#[test]
fn admin_address() {
    let d = expect(
        &good_with(&["admin: { address: \"localhost:9901\" }"]),
        "admin.address",
        9,
        "not an address",
    );
    assert!(d.fix.unwrap_or_default().contains("127.0.0.1"));
    expect(
        &good_with(&["admin:", "  address: 127.0.0.1"]),
        "admin.address",
        10,
        "not an address",
    );
    expect_ok(&good_with(&["admin: { address: \"[::1]:9901\" }"]));
}

// ---------------------------------------------------------------- listeners

#[test]
fn listener_names_unique_and_non_empty() {
    let text = good_with(&["  - name: api2", "    endpoints: [\"127.0.0.1:9001\"]"]);
    expect_ok(&text);
    let text = y(&[
        "listeners:",
        "  - { name: a, address: \"127.0.0.1:1\", routes: [{ cluster: api }] }",
        "  - { name: a, address: \"127.0.0.1:2\", routes: [{ cluster: api }] }",
        "  - { name: \"\", address: \"127.0.0.1:3\", routes: [{ cluster: api }] }",
        "clusters: [{ name: api, endpoints: [\"h:1\"] }]",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[1].name",
        3,
        "`a` is already used by listeners[0]",
    );
    expect_in(&ds, "listeners[2].name", 4, "name is empty");
}

#[test]
fn listener_address_must_parse() {
    let text = y(&[
        "listeners:",
        "  - { name: a, address: \"*:8080\", routes: [{ cluster: api }] }",
        "  - { name: b, address: \"::1:8080\", routes: [{ cluster: api }] }",
        "  - { name: c, address: \"[::]:8080\", routes: [{ cluster: api }] }",
        "clusters: [{ name: api, endpoints: [\"h:1\"] }]",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[0].address",
        2,
        "`*:8080` is not an address and port",
    );
    let d = expect_in(&ds, "listeners[1].address", 3, "not an address");
    assert!(d.fix.unwrap_or_default().contains("[::1]:PORT"));
    assert_eq!(ds.len(), 2, "{}", show(&ds));
}

#[test]
fn listener_addresses_must_not_clash() {
    let text = y(&[
        "listeners:",
        "  - { name: a, address: \"0.0.0.0:8080\", routes: [{ cluster: api }] }",
        "  - { name: b, address: \"127.0.0.1:8080\", routes: [{ cluster: api }] }",
        "  - { name: c, address: \"127.0.0.1:8081\", routes: [{ cluster: api }] }",
        "  - { name: d, address: \"[::1]:8080\", routes: [{ cluster: api }] }",
        "  - { name: e, address: \"127.0.0.1:0\", routes: [{ cluster: api }] }",
        "  - { name: f, address: \"127.0.0.1:0\", routes: [{ cluster: api }] }",
        "clusters: [{ name: api, endpoints: [\"h:1\"] }]",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[1].address",
        3,
        "clashes with `0.0.0.0:8080` of listener `a`",
    );
    assert_eq!(ds.len(), 1, "{}", show(&ds));
}

#[test]
fn listener_protocols_non_empty() {
    let mut v = listener_with_route();
    v.extend(["    protocols: []"]);
    v.extend(C);
    expect(&y(&v), "listeners[0].protocols", 6, "no protocols");
}

#[test]
fn listener_limits_non_zero() {
    let mut v = listener_with_route();
    v.extend([
        "    limits:",
        "      max_connections: 0",
        "      header_read_timeout: 0s",
        "      idle_timeout: 0",
        "      max_request_headers_size: 0",
        "      max_request_body_size: 0KiB",
    ]);
    v.extend(C);
    let ds = problems(&y(&v));
    expect_in(&ds, "listeners[0].limits.max_connections", 7, "is 0");
    expect_in(&ds, "listeners[0].limits.header_read_timeout", 8, "is 0");
    expect_in(&ds, "listeners[0].limits.idle_timeout", 9, "is 0");
    expect_in(
        &ds,
        "listeners[0].limits.max_request_headers_size",
        10,
        "is 0",
    );
    expect_in(&ds, "listeners[0].limits.max_request_body_size", 11, "is 0");
    assert_eq!(ds.len(), 5);
}

// ---------------------------------------------------------------- filter chains

#[test]
fn chain_entry_needs_exactly_one_of_name_and_plugin() {
    let mut v = listener_with_route();
    v.extend([
        "    filters:",
        "      - { name: request-id, plugin: p }",
        "      - config: { a: 1 }",
    ]);
    v.extend(C);
    let ds = problems(&y(&v));
    expect_in(
        &ds,
        "listeners[0].filters[0]",
        7,
        "both `name` and `plugin`",
    );
    expect_in(
        &ds,
        "listeners[0].filters[1]",
        8,
        "neither `name` nor `plugin`",
    );
}

#[test]
fn unknown_native_filter_lists_known_ones() {
    let mut v = listener_with_route();
    v.extend(["    filters:", "      - name: request-ids"]);
    v.extend(C);
    let d = expect(
        &y(&v),
        "listeners[0].filters[0].name",
        7,
        "unknown native filter `request-ids`",
    );
    let fix = d.fix.unwrap_or_default();
    assert!(fix.contains("did you mean `request-id`?"), "{fix}");
    assert!(fix.contains("local-rate-limit, request-id"), "{fix}");
}

#[test]
fn undefined_plugin_in_a_route_chain() {
    let mut v = L.to_vec();
    v.extend([
        "    routes:",
        "      - cluster: api",
        "        filters:",
        "          - plugin: add-headr",
    ]);
    v.extend(C);
    let plugin = format!("  - {{ name: add-header, url: \"https://x/a.wasm\", {SHA} }}");
    v.extend(["plugins:", plugin.as_str()]);
    let text = y(&v);
    let d = expect(
        &text,
        "listeners[0].routes[0].filters[0].plugin",
        7,
        "plugin `add-headr` is not defined",
    );
    let fix = d.fix.unwrap_or_default();
    assert!(fix.contains("did you mean `add-header`?"), "{fix}");
    assert!(fix.contains("define it under `plugins:`"), "{fix}");
}

#[test]
fn native_name_used_as_plugin_says_so() {
    let mut v = listener_with_route();
    v.extend(["    filters:", "      - plugin: request-id"]);
    v.extend(C);
    let d = expect(&y(&v), "listeners[0].filters[0].plugin", 7, "not defined");
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("write `name: request-id`"));
}

// ---------------------------------------------------------------- route matching

/// A listener with one route whose `match:` is the given flow mapping (line 5), to cluster `api`.
fn route_match(m: &str) -> String {
    let mut v = L.to_vec();
    let line = format!("      - match: {m}");
    v.extend(["    routes:", line.as_str(), "        cluster: api"]);
    v.extend(C);
    y(&v)
}

#[test]
fn one_path_condition_at_most() {
    let text = route_match("{ path: /a, path_prefix: /b }");
    expect(
        &text,
        "listeners[0].routes[0].match",
        5,
        "both `path` and `path_prefix`",
    );
}

#[test]
fn paths_start_with_slash() {
    let d = expect(
        &route_match("{ path: health }"),
        "listeners[0].routes[0].match.path",
        5,
        "does not start with `/`",
    );
    assert_eq!(d.fix.as_deref(), Some("write `/health`"));
    expect(
        &route_match("{ path_prefix: api/ }"),
        "listeners[0].routes[0].match.path_prefix",
        5,
        "does not start",
    );
}

#[test]
fn path_regex_must_compile() {
    let d = expect(
        &route_match("{ path_regex: \"^/v(1\" }"),
        "listeners[0].routes[0].match.path_regex",
        5,
        "does not compile",
    );
    assert!(d.message.contains("unclosed group"), "{}", d.message);
    expect_ok(&route_match("{ path_regex: \"^/v[0-9]+/\" }"));
}

#[test]
fn host_is_exact_or_wildcard_suffix() {
    expect(
        &route_match("{ host: \"api.*.com\" }"),
        "listeners[0].routes[0].match.host",
        5,
        "`*`",
    );
    expect(
        &route_match("{ host: \"*\" }"),
        "listeners[0].routes[0].match.host",
        5,
        "`*`",
    );
    expect_ok(&route_match("{ host: \"*.example.com\" }"));
}

#[test]
fn methods_are_valid_tokens() {
    let text = route_match("{ methods: [GET, post, \"BAD METHOD\"] }");
    let ds = problems(&text);
    let d = expect_in(
        &ds,
        "listeners[0].routes[0].match.methods[1]",
        5,
        "not upper case",
    );
    assert_eq!(d.fix.as_deref(), Some("write `POST`"));
    expect_in(
        &ds,
        "listeners[0].routes[0].match.methods[2]",
        5,
        "not an HTTP method",
    );
    assert_eq!(ds.len(), 2);
}

#[test]
fn header_matches() {
    let mut v = L.to_vec();
    v.extend([
        "    routes:",
        "      - cluster: api",
        "        match:",
        "          headers:",
        "            - { name: \"x canary\", value: \"1\" }",
        "            - { name: x-a, value: \"1\", present: true }",
        "            - { name: x-b, regex: \"[\" }",
        "            - { name: x-c, present: false }",
    ]);
    v.extend(C);
    let ds = problems(&y(&v));
    expect_in(
        &ds,
        "listeners[0].routes[0].match.headers[0].name",
        8,
        "not a valid header name",
    );
    expect_in(
        &ds,
        "listeners[0].routes[0].match.headers[1]",
        9,
        "more than one of `value`, `present`, `regex`",
    );
    expect_in(
        &ds,
        "listeners[0].routes[0].match.headers[2].regex",
        10,
        "does not compile",
    );
    assert_eq!(ds.len(), 3, "{}", show(&ds));
}

#[test]
fn identical_match_is_unreachable() {
    let mut v = L.to_vec();
    v.extend([
        "    routes:",
        "      - match: { path_prefix: /a/, methods: [GET, POST] }",
        "        cluster: api",
        "      - match: { methods: [POST, GET], path_prefix: /a/ }",
        "        cluster: api",
        "      - match: { path_prefix: /b/ }",
        "        cluster: api",
    ]);
    v.extend(C);
    let ds = problems(&y(&v));
    expect_in(
        &ds,
        "listeners[0].routes[1].match",
        7,
        "routes[0] has the same `match`",
    );
    assert_eq!(ds.len(), 1, "{}", show(&ds));
}

#[test]
fn route_after_catch_all_is_unreachable() {
    let mut v = L.to_vec();
    v.extend([
        "    routes:",
        "      - match: { path_prefix: / }",
        "        cluster: api",
        "      - name: never",
        "        match: { path: /x }",
        "        cluster: api",
    ]);
    v.extend(C);
    let d = expect(
        &y(&v),
        "listeners[0].routes[1].match",
        8,
        "matches every request",
    );
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("move this route above routes[0]"));
}

// ---------------------------------------------------------------- route actions

/// A listener with one route (lines 5..) made of `route` lines, then cluster `api`.
fn route(route: &[&str]) -> String {
    let mut v = L.to_vec();
    v.push("    routes:");
    v.extend_from_slice(route);
    v.extend(C);
    y(&v)
}

#[test]
fn route_needs_exactly_one_action() {
    expect(
        &route(&["      - match: { path: /a }"]),
        "listeners[0].routes[0]",
        5,
        "no action",
    );
    let text = route(&[
        "      - cluster: api",
        "        direct_response: { status: 200 }",
    ]);
    expect(
        &text,
        "listeners[0].routes[0]",
        5,
        "more than one action: cluster, direct_response",
    );
}

#[test]
fn dangling_cluster_suggests_and_lists() {
    let text = y(&[
        "listeners:",
        "  - name: public",
        "    address: 127.0.0.1:8080",
        "    routes:",
        "      - match: { path_prefix: /a/ }",
        "        cluster: api",
        "      - match: { path_prefix: /b/ }",
        "        cluster: apx",
        "clusters:",
        "  - { name: api, endpoints: [\"h:1\"] }",
        "  - { name: web, endpoints: [\"h:2\"] }",
    ]);
    let d = expect(
        &text,
        "listeners[0].routes[1].cluster",
        8,
        "cluster `apx` is not defined",
    );
    assert_eq!(d.column, Some(18));
    assert_eq!(
        d.fix.as_deref(),
        Some("did you mean `api`? define it under `clusters:`, or use one of: api, web")
    );
}

#[test]
fn weighted_clusters() {
    expect(
        &route(&["      - weighted_clusters: []"]),
        "listeners[0].routes[0].weighted_clusters",
        5,
        "is empty",
    );
    let text = route(&[
        "      - weighted_clusters:",
        "          - { name: api, weight: 0 }",
        "          - { name: canary, weight: 0 }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[0].routes[0].weighted_clusters[1].name",
        7,
        "cluster `canary` is not defined",
    );
    expect_in(
        &ds,
        "listeners[0].routes[0].weighted_clusters",
        5,
        "add up to 0",
    );
}

#[test]
fn redirect_checks() {
    let text = route(&["      - redirect: { path: /new, status: 200 }"]);
    let d = expect(
        &text,
        "listeners[0].routes[0].redirect.status",
        5,
        "200 is not a redirect status",
    );
    assert_eq!(d.fix.as_deref(), Some("use 301, 302, 303, 307 or 308"));
    let text = route(&["      - redirect: { status: 301 }"]);
    expect(&text, "listeners[0].routes[0].redirect", 5, "same URL");
    let text = route(&["      - redirect: { path_prefix: new/, scheme: ftp }"]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[0].routes[0].redirect.path_prefix",
        5,
        "does not start with `/`",
    );
    expect_in(
        &ds,
        "listeners[0].routes[0].redirect.scheme",
        5,
        "not http or https",
    );
    expect_ok(&route(&[
        "      - redirect: { https_redirect: true, port: 8443 }",
    ]));
}

#[test]
fn direct_response_status_range() {
    let text = route(&["      - direct_response:", "          status: 600"]);
    expect(
        &text,
        "listeners[0].routes[0].direct_response.status",
        6,
        "600 is not an HTTP status code",
    );
    let text = route(&[
        "      - direct_response:",
        "          status: 200",
        "          headers: [{ name: \"bad name\", value: ok }]",
    ]);
    expect(
        &text,
        "listeners[0].routes[0].direct_response.headers[0].name",
        7,
        "not a valid header name",
    );
}

#[test]
fn retry_limits() {
    let text = route(&[
        "      - cluster: api",
        "        retries:",
        "          attempts: 11",
        "          budget_percent: 150",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[0].routes[0].retries.attempts",
        7,
        "11 retry attempts",
    );
    expect_in(
        &ds,
        "listeners[0].routes[0].retries.budget_percent",
        8,
        "150% is over 100%",
    );
    let text = route(&[
        "      - cluster: api",
        "        retries: { attempts: 2, on: [5xx, timeout] }",
    ]);
    let d = expect(
        &text,
        "listeners[0].routes[0].retries.on[1]",
        6,
        "unknown value `timeout`",
    );
    assert!(d.fix.unwrap_or_default().contains("gateway-error"));
}

#[test]
fn rewrite_prefix_starts_with_slash() {
    let text = route(&[
        "      - cluster: api",
        "        rewrite: { path_prefix: v2/ }",
    ]);
    let d = expect(
        &text,
        "listeners[0].routes[0].rewrite.path_prefix",
        6,
        "does not start with `/`",
    );
    assert_eq!(d.fix.as_deref(), Some("write `/v2/`"));
}

// ---------------------------------------------------------------- clusters

/// Listener + route (lines 1-5), then `clusters:` (line 6) and the given lines from line 7.
fn clusters(lines: &[&str]) -> String {
    let mut v = listener_with_route();
    v.push("clusters:");
    v.extend_from_slice(lines);
    y(&v)
}

#[test]
fn weighted_endpoints() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints:",
        "      - 127.0.0.1:9000",
        "      - { address: \"127.0.0.1:9001\", weight: 3 }",
        "      - address: backend.internal:9002",
        "      - { address: \"127.0.0.1:9003\", weight: 0 }",
        "      - { address: \"127.0.0.1:9004\", weight: 129 }",
        "      - { address: \"127.0.0.1\", weight: 2 }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "clusters[0].endpoints[3].weight",
        12,
        "weight 0 is out of range",
    );
    let d = expect_in(&ds, "clusters[0].endpoints[4].weight", 13, "out of range");
    assert!(
        d.fix.unwrap_or_default().contains("from 1 to 128"),
        "{}",
        show(&ds)
    );
    expect_in(&ds, "clusters[0].endpoints[5].address", 14, "has no port");
    assert_eq!(ds.len(), 3, "{}", show(&ds));

    let good = good_with(&[
        "  - name: web",
        "    endpoints: [\"127.0.0.1:9001\", { address: \"127.0.0.1:9002\", weight: 3 }]",
    ]);
    let config = load_str(&good, Path::new("."), NATIVE).expect("loads");
    let eps = &config.file.clusters[1].endpoints;
    assert_eq!(
        eps.iter()
            .map(|e| (e.address.as_str(), e.weight))
            .collect::<Vec<_>>(),
        [("127.0.0.1:9001", 1), ("127.0.0.1:9002", 3)]
    );
}

#[test]
fn weighted_endpoint_shape_problems_point_at_the_entry() {
    let one = |entry: &str| {
        clusters(&[
            "  - name: api",
            "    endpoints:",
            &format!("      - {entry}"),
        ])
    };
    let d = expect(
        &one("{ adress: \"h:1\", weight: 2 }"),
        "clusters[0].endpoints[0].adress",
        9,
        "unknown key `adress`",
    );
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("did you mean `address`?"));
    expect(
        &one("{ weight: 2 }"),
        "clusters[0].endpoints[0]",
        9,
        "missing required key `address`",
    );
    let d = expect(&one("8080"), "clusters[0].endpoints[0]", 9, "is neither");
    assert!(d.fix.unwrap_or_default().contains("weight: 2"));
    let ds = problems(&one("{ address: \"h:1\", weight: heavy }"));
    assert_eq!(ds.len(), 1, "{}", show(&ds));
    assert_eq!(ds[0].path, "clusters[0].endpoints[0].weight");
    assert!(
        ds[0].message.contains("expected a whole number"),
        "{}",
        show(&ds)
    );
}

#[test]
fn cluster_names_unique() {
    let text = clusters(&[
        "  - { name: api, endpoints: [\"h:1\"] }",
        "  - { name: api, endpoints: [\"h:2\"] }",
    ]);
    expect(
        &text,
        "clusters[1].name",
        8,
        "`api` is already used by clusters[0]",
    );
}

#[test]
fn endpoints() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints:",
        "      - 127.0.0.1",
        "      - \"::1:80\"",
        "      - \"[::1]:80\"",
        "      - backend:0",
        "      - http://backend:80",
        "      - backend.internal:9001",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "clusters[0].endpoints[0]", 9, "has no port");
    let d = expect_in(&ds, "clusters[0].endpoints[1]", 10, "not in brackets");
    assert_eq!(d.fix.as_deref(), Some("write `[::1]:80`"));
    expect_in(&ds, "clusters[0].endpoints[3]", 12, "is not a port");
    expect_in(&ds, "clusters[0].endpoints[4]", 13, "has a scheme");
    assert_eq!(ds.len(), 4, "{}", show(&ds));
    expect(
        &clusters(&["  - name: api", "    endpoints: []"]),
        "clusters[0].endpoints",
        8,
        "no endpoints",
    );
}

#[test]
fn ring_hash_and_hash_key_go_together() {
    let text = clusters(&[
        "  - { name: api, endpoints: [\"h:1\"], load_balancing: ring_hash }",
        "  - { name: b, endpoints: [\"h:1\"], hash_key: { header: x-user } }",
        "  - { name: c, endpoints: [\"h:1\"], load_balancing: ring_hash, hash_key: { header: x-user } }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "clusters[0].load_balancing",
        7,
        "ring_hash needs a `hash_key`",
    );
    // hash_key without ring_hash is allowed (CONFIG.md's example writes it); it is unused.
    assert_eq!(ds.len(), 1, "{}", show(&ds));
}

#[test]
fn health_check() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints: [\"h:1\"]",
        "    health_check:",
        "      path: healthz",
        "      interval: 1s",
        "      timeout: 2s",
        "      unhealthy_threshold: 0",
        "      healthy_threshold: 0",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "clusters[0].health_check.path",
        10,
        "does not start with `/`",
    );
    expect_in(
        &ds,
        "clusters[0].health_check.timeout",
        12,
        "longer than its interval",
    );
    expect_in(
        &ds,
        "clusters[0].health_check.unhealthy_threshold",
        13,
        "is 0",
    );
    expect_in(
        &ds,
        "clusters[0].health_check.healthy_threshold",
        14,
        "is 0",
    );
    assert_eq!(ds.len(), 4, "{}", show(&ds));
}

#[test]
fn pool_and_timeouts() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints: [\"h:1\"]",
        "    pool: { max_idle_per_endpoint: 1000000, idle_timeout: 0s }",
        "    connect_timeout: 0s",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "clusters[0].pool.max_idle_per_endpoint", 9, "too many");
    expect_in(&ds, "clusters[0].pool.idle_timeout", 9, "ever reused");
    expect_in(&ds, "clusters[0].connect_timeout", 10, "is 0");
    expect_ok(&clusters(&[
        "  - name: api",
        "    endpoints: [\"h:1\"]",
        "    pool: { max_idle_per_endpoint: 0, idle_timeout: 0s }",
    ]));
}

#[test]
fn upstream_tls_ca_must_exist() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints: [\"h:1\"]",
        "    tls: { server_name: api.internal, ca: certs/ca.crt }",
    ]);
    let d = expect(
        &text,
        "clusters[0].tls.ca",
        9,
        "not found (looked at /nonexistent/sluice-test/certs/ca.crt)",
    );
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("config file's directory"));
}

// ---------------------------------------------------------------- plugins

/// Minimal good config, then `plugins:` at line 9 and the given lines from line 10.
fn plugins(lines: &[&str]) -> String {
    let mut v = vec!["plugins:"];
    v.extend_from_slice(lines);
    good_with(&v)
}

const SHA: &str = "sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn plugin_names_unique() {
    let text = plugins(&[
        "  - { name: p, url: \"https://x/p.wasm\", sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }",
        "  - { name: p, url: \"https://x/p.wasm\", sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "plugins[1].name",
        11,
        "`p` is already used by plugins[0]",
    );
    assert_eq!(ds.len(), 1, "{}", show(&ds));
}

#[test]
fn plugin_code_source() {
    let both = format!("    {SHA}");
    let text = plugins(&[
        "  - name: both",
        "    wasm: a.wasm",
        "    url: https://x/a.wasm",
        both.as_str(),
        "  - name: none",
        "  - name: unpinned",
        "    url: https://x/a.wasm",
        "  - name: badsha",
        "    url: ftp://x/a.wasm",
        "    sha256: abc",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "plugins[0]", 10, "both `wasm` and `url`");
    expect_in(&ds, "plugins[1]", 14, "has no code");
    expect_in(&ds, "plugins[2]", 15, "needs `sha256:`");
    expect_in(&ds, "plugins[3].url", 18, "scheme `ftp`");
    expect_in(&ds, "plugins[3].sha256", 19, "not 64 hex characters");
}

#[test]
fn local_wasm_must_exist_relative_to_base_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("plugins")).expect("mkdir");
    fs::write(dir.path().join("plugins/p.wasm"), b"\0asm\x01\0\0\0").expect("write wasm");
    let good = plugins(&["  - { name: p, wasm: plugins/p.wasm }"]);
    assert!(
        problems_in(&good, dir.path()).is_empty(),
        "{}",
        show(&problems_in(&good, dir.path()))
    );
    let bad = plugins(&["  - { name: p, wasm: plugins/q.wasm }"]);
    let ds = problems_in(&bad, dir.path());
    expect_in(
        &ds,
        "plugins[0].wasm",
        10,
        "wasm file `plugins/q.wasm` not found",
    );
    let dir_not_file = plugins(&["  - { name: p, wasm: plugins }"]);
    let ds = problems_in(&dir_not_file, dir.path());
    expect_in(&ds, "plugins[0].wasm", 10, "is not a file");
}

#[test]
fn plugin_limits() {
    let text = plugins(&[
        "  - name: p",
        "    url: https://x/a.wasm",
        &format!("    {SHA}"),
        "    limits: { memory: 512KiB, callback_timeout: 0ms, fuel: 0 }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "plugins[0].limits.memory",
        13,
        "512KiB is outside 1MiB..4GiB",
    );
    expect_in(&ds, "plugins[0].limits.callback_timeout", 13, "is 0");
    expect_in(&ds, "plugins[0].limits.fuel", 13, "fuel is 0");
    assert_eq!(ds.len(), 3, "{}", show(&ds));
}

#[test]
fn unknown_failure_policy() {
    let text = plugins(&[
        "  - name: p",
        "    url: https://x/a.wasm",
        &format!("    {SHA}"),
        "    failure_policy: fail_opne",
    ]);
    let d = expect(
        &text,
        "plugins[0].failure_policy",
        13,
        "unknown value `fail_opne`",
    );
    assert!(d
        .fix
        .unwrap_or_default()
        .contains("did you mean `fail_open`?"));
}

// ---------------------------------------------------------------- TLS

/// Listener with `tls` lines from line 4, a route at lines after, then cluster `api`.
fn tls(lines: &[&str]) -> String {
    let mut v = L.to_vec();
    v.push("    tls:");
    v.extend_from_slice(lines);
    v.extend(["    routes:", "      - cluster: api"]);
    v.extend(C);
    y(&v)
}

#[test]
fn tls_files_and_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("server.crt"), "x").expect("write");
    fs::write(dir.path().join("server.key"), "x").expect("write");
    let text = tls(&[
        "      certificates:",
        "        - cert: server.crt",
        "          key: missing.key",
        "          server_names: [\"example.com\", \"a.*.com\"]",
        "      client_ca: ca.crt",
        "      min_version: \"1.1\"",
    ]);
    let ds = problems_in(&text, dir.path());
    expect_in(
        &ds,
        "listeners[0].tls.certificates[0].key",
        7,
        "private key file `missing.key` not found",
    );
    expect_in(
        &ds,
        "listeners[0].tls.certificates[0].server_names[1]",
        8,
        "`*`",
    );
    expect_in(
        &ds,
        "listeners[0].tls.client_ca",
        9,
        "client CA file `ca.crt` not found",
    );
    expect_in(
        &ds,
        "listeners[0].tls.min_version",
        10,
        "`1.1` is not supported",
    );
    assert_eq!(ds.len(), 4, "{}", show(&ds));

    let good = tls(&[
        "      certificates: [{ cert: server.crt, key: server.key }]",
        "      min_version: 1.3",
    ]);
    assert!(problems_in(&good, dir.path()).is_empty());
}

#[test]
fn tls_needs_a_certificate() {
    let text = tls(&["      certificates: []"]);
    expect(
        &text,
        "listeners[0].tls.certificates",
        5,
        "at least one certificate",
    );
}

// ---------------------------------------------------------------- XDP, xDS, telemetry

#[test]
fn xdp_lists_files_and_redirects() {
    let text = good_with(&[
        "xdp:",
        "  interface: eth0",
        "  allow: [\"198.18.0.0/24\", \"10.0.0.1\", \"10.0.0.0/33\"]",
        "  deny:",
        "    - 2001:db8::/32",
        "    - not-an-ip",
        "  deny_files: [lists/deny.txt]",
        "  redirect:",
        "    - { match: { protocol: icmp }, to_interface: eth1 }",
        "    - { match: { protocol: udp, dst_port: 53 }, to_interface: eth1, tx: true }",
        "    - { match: { protocol: tcp } }",
        "    - { match: { protocol: udp }, tx: true }",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "xdp.allow[2]", 11, "`10.0.0.0/33` is not a CIDR");
    expect_in(&ds, "xdp.deny[1]", 14, "`not-an-ip` is not a CIDR");
    expect_in(
        &ds,
        "xdp.deny_files[0]",
        15,
        "deny list file `lists/deny.txt` not found",
    );
    expect_in(
        &ds,
        "xdp.redirect[0].match.protocol",
        17,
        "`icmp` cannot be redirected",
    );
    expect_in(
        &ds,
        "xdp.redirect[1]",
        18,
        "both `to_interface` and `tx: true`",
    );
    expect_in(&ds, "xdp.redirect[2]", 19, "no target");
    assert_eq!(ds.len(), 6, "{}", show(&ds));
}

#[test]
fn xdp_interface_and_rates() {
    let text = good_with(&[
        "xdp:",
        "  interface: a-very-long-interface-name",
        "  rate_limit: { packets_per_second: 0 }",
        "  syn_rate_limit: { per_second: 10, burst: 0 }",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "xdp.interface", 10, "not a network interface name");
    expect_in(&ds, "xdp.rate_limit.packets_per_second", 11, "is 0");
    expect_in(&ds, "xdp.syn_rate_limit.burst", 12, "burst is 0");
}

#[test]
fn xds_server_is_an_http_url() {
    let text = good_with(&["xds:", "  server: 127.0.0.1:18000", "  node: { id: \"\" }"]);
    let ds = problems(&text);
    expect_in(&ds, "xds.server", 10, "not");
    expect_in(&ds, "xds.node.id", 11, "node id is empty");
}

#[test]
fn telemetry_checks() {
    let text = good_with(&[
        "telemetry:",
        "  access_log: { format: text }",
        "  tracing:",
        "    sample_ratio: 1.5",
        "    otlp_endpoint: localhost:4317",
    ]);
    let ds = problems(&text);
    let d = expect_in(
        &ds,
        "telemetry.access_log.format",
        10,
        "`text` is not supported",
    );
    assert!(d.fix.unwrap_or_default().contains("json"));
    expect_in(
        &ds,
        "telemetry.tracing.sample_ratio",
        12,
        "1.5 is not between 0 and 1",
    );
    expect_in(&ds, "telemetry.tracing.otlp_endpoint", 13, "localhost:4317");
}

// ---------------------------------------------------------------- whole files

#[test]
fn the_full_example_loads() {
    let path = data("full/sluice.yaml");
    let config = match load(&path, NATIVE) {
        Ok(c) => c,
        Err(d) => panic!("{}", d.render("full/sluice.yaml")),
    };
    assert_eq!(config.path.as_deref(), Some(path.as_path()));
    assert_eq!(config.base_dir, data("full"));
    assert_eq!(config.version.len(), 12);
    assert!(config.version.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(config.file.listeners[0].routes.len(), 3);
    assert_eq!(config.file.plugins[0].name, "add-header");
    assert_eq!(
        config.resolve("plugins/add_header.wasm"),
        data("full/plugins/add_header.wasm")
    );
    assert_eq!(
        config.referenced_files(),
        [
            "certs/ca.crt",
            "certs/example.crt",
            "certs/example.key",
            "lists/deny.txt",
            "plugins/add_header.wasm",
        ]
        .map(|f| data("full").join(f))
    );
    // Later stages locate their own problems with the source map.
    assert_eq!(
        config.source.locate("listeners[0].filters[1].config"),
        Some((28, 9))
    );
    // The version follows the bytes.
    let text = fs::read_to_string(&path).expect("read");
    let again = load_str(&format!("{text}\n"), &data("full"), NATIVE).expect("loads");
    assert_ne!(again.version, config.version);
}

#[test]
fn every_problem_is_reported_together() {
    let path = data("multi.yaml");
    let err = load(&path, NATIVE).expect_err("multi.yaml is bad");
    let expected = fs::read_to_string(data("multi.expected")).expect("read expected");
    assert_eq!(err.render("multi.yaml"), expected);
}

#[test]
fn unreadable_file() {
    let err = load(Path::new("/nonexistent/sluice.yaml"), NATIVE).expect_err("no file");
    assert_eq!(err.len(), 1);
    assert!(
        err.0[0].message.contains("cannot read config file"),
        "{err}"
    );
}

#[test]
fn later_stages_locate_their_problems() {
    let config = load_str(&good_with(&[]), Path::new("."), NATIVE).expect("loads");
    let later = Diagnostics(vec![
        Diagnostic::at(
            "clusters[0].endpoints[0]",
            "connection refused while probing",
        ),
        Diagnostic::at("listeners[0].routes[0].cluster", "something else"),
        Diagnostic::at("clusters[0].pool.idle_timeout", "defaulted field"),
    ])
    .locate_all(&config.source);
    let places: Vec<_> = later.iter().map(|d| (d.path.as_str(), d.line)).collect();
    assert_eq!(
        places,
        [
            ("listeners[0].routes[0].cluster", Some(5)),
            ("clusters[0].pool.idle_timeout", Some(7)),
            ("clusters[0].endpoints[0]", Some(8)),
        ]
    );
}

// ---------------------------------------------------------------- the smaller checks

#[test]
fn route_action_details() {
    let text = route(&[
        "      - match: { path: /a }",
        "        redirect: { scheme: http, https_redirect: true, port: 0 }",
        "      - match: { path: /b }",
        "        direct_response:",
        "          status: 200",
        "          headers: [{ name: x-a, value: \"line\\nbreak\" }]",
        "      - match: { path: /c }",
        "        cluster: api",
        "        rewrite: { host: \"a/b\" }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "listeners[0].routes[0].redirect",
        6,
        "both `scheme` and `https_redirect`",
    );
    expect_in(&ds, "listeners[0].routes[0].redirect.port", 6, "port is 0");
    expect_in(
        &ds,
        "listeners[0].routes[1].direct_response.headers[0].value",
        10,
        "not a valid header value",
    );
    expect_in(
        &ds,
        "listeners[0].routes[2].rewrite.host",
        13,
        "not a host name",
    );
    assert_eq!(ds.len(), 4, "{}", show(&ds));
}

#[test]
fn cluster_details() {
    let text = clusters(&[
        "  - name: api",
        "    endpoints: [\"h:1\"]",
        "    load_balancing: ring_hash",
        "    hash_key: { header: \"x user\" }",
        "    tls: { server_name: \"\" }",
        "    dns_refresh: 0s",
        "    health_check: { path: /h, interval: 0s, timeout: 0s }",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "clusters[0].hash_key.header",
        10,
        "not a valid header name",
    );
    expect_in(
        &ds,
        "clusters[0].tls.server_name",
        11,
        "server_name is empty",
    );
    expect_in(&ds, "clusters[0].dns_refresh", 12, "dns_refresh is 0");
    expect_in(
        &ds,
        "clusters[0].health_check.interval",
        13,
        "interval is 0",
    );
    expect_in(&ds, "clusters[0].health_check.timeout", 13, "timeout is 0");
    assert_eq!(ds.len(), 5, "{}", show(&ds));
}

#[test]
fn plugin_details() {
    let text = plugins(&[
        "  - name: p",
        "    url: https://x/a.wasm",
        &format!("    {SHA}"),
        "    limits: { max_buffered_body: 0 }",
        "    allowed_env: [HOME, \"A=B\"]",
    ]);
    let ds = problems(&text);
    expect_in(
        &ds,
        "plugins[0].limits.max_buffered_body",
        13,
        "max_buffered_body is 0",
    );
    expect_in(
        &ds,
        "plugins[0].allowed_env[1]",
        14,
        "not an environment variable name",
    );
    assert_eq!(ds.len(), 2, "{}", show(&ds));
}

#[test]
fn xdp_and_telemetry_details() {
    let text = good_with(&[
        "xdp:",
        "  interface: eth0",
        "  redirect:",
        "    - { match: { protocol: udp, dst_port: 0 }, to_interface: \"\" }",
        "  ban_default_ttl: 0s",
        "telemetry:",
        "  access_log: { path: \"\" }",
        "  metrics: { otlp_endpoint: \"grpc://collector:4317\" }",
    ]);
    let ds = problems(&text);
    expect_in(&ds, "xdp.redirect[0].match.dst_port", 12, "dst_port is 0");
    expect_in(
        &ds,
        "xdp.redirect[0].to_interface",
        12,
        "not a network interface name",
    );
    expect_in(&ds, "xdp.ban_default_ttl", 13, "expire at once");
    expect_in(&ds, "telemetry.access_log.path", 15, "path is empty");
    expect_in(&ds, "telemetry.metrics.otlp_endpoint", 16, "scheme `grpc`");
    assert_eq!(ds.len(), 5, "{}", show(&ds));
}
