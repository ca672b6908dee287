// Smoke tests of the built plugins (target/plugins/*.wasm) against the in-process mock host:
// each plugin's directives produce the documented effects. Run scripts/build-plugins.sh first.
// The real conformance runner checks the same effects through the gateway over HTTP.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("path");
const { Host } = require("./mock-host");

const DIR = path.join(__dirname, "..", "..", "..", "target", "plugins");
const wasm = (name) => path.join(DIR, name + ".wasm");
const CONTINUE = 0, PAUSE = 1;

function get(pairs, name) {
  const hit = pairs.find(([k]) => k === name);
  return hit ? hit[1] : undefined;
}

for (const lang of ["rs", "as"]) {
  test(`${lang}_headers: request and response header edits`, () => {
    const h = new Host(wasm(`${lang}_headers`), { rootId: `${lang}_headers` });
    assert.deepEqual(h.start(), { vmOk: 1, configOk: 1 });
    const id = h.stream();
    const request = [[":method", "GET"], [":path", "/p"], ["x-conf-replace", "old"], ["x-conf-remove", "x"]];
    assert.equal(h.requestHeaders(id, request), CONTINUE);
    const up = h.maps.request_headers;
    assert.equal(get(up, "x-conf-added"), lang);
    assert.equal(get(up, "x-conf-replace"), "replaced");
    assert.equal(get(up, "x-conf-remove"), undefined);
    assert.equal(get(up, "x-conf-request-header-count"), "4");
    assert.equal(h.responseHeaders(id, [[":status", "200"], ["x-conf-upstream-remove", "1"]]), CONTINUE);
    const down = h.maps.response_headers;
    assert.equal(get(down, "x-conf-response-added"), lang);
    assert.equal(get(down, "x-conf-upstream-remove"), undefined);
    assert.equal(get(down, "x-conf-request-path"), "/p");
    assert.equal(get(down, "x-conf-request-trailers"), "none");
    assert.equal(get(down, "x-conf-response-header-count"), "2");
  });

  test(`${lang}_headers: request and response trailers`, () => {
    const h = new Host(wasm(`${lang}_headers`), { rootId: `${lang}_headers` });
    h.start();
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/t"]]);
    h.maps.request_trailers = [["grpc-status", "0"]];
    assert.equal(h.at(id, () => h.x.proxy_on_request_trailers(id, 1)), CONTINUE);
    assert.equal(get(h.maps.request_trailers, "x-conf-trailer-added"), lang);
    h.responseHeaders(id, [[":status", "200"]]);
    assert.equal(get(h.maps.response_headers, "x-conf-request-trailers"), "grpc-status=0");
    h.maps.response_trailers = [["x-conf-upstream-trailer-remove", "1"], ["x-t", "1"]];
    assert.equal(h.at(id, () => h.x.proxy_on_response_trailers(id, 2)), CONTINUE);
    assert.equal(get(h.maps.response_trailers, "x-conf-upstream-trailer-remove"), undefined);
    assert.equal(get(h.maps.response_trailers, "x-conf-response-trailer-added"), lang);
    assert.equal(get(h.maps.response_trailers, "x-conf-response-trailer-count"), "2");
  });

  test(`${lang}_headers: x-conf-set-map replaces the whole map`, () => {
    const h = new Host(wasm(`${lang}_headers`), { rootId: `${lang}_headers` });
    h.start();
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-conf-set-map", "1"]]);
    assert.equal(get(h.maps.request_headers, "x-conf-map-replaced"), "1");
  });

  for (const [op, expected] of [["replace", "T"], ["prepend", "Tbody"], ["append", "bodyT"]]) {
    test(`${lang}_body: x-body-op ${op}`, () => {
      const h = new Host(wasm(`${lang}_body`), { rootId: `${lang}_body` });
      h.start();
      const id = h.stream();
      h.requestHeaders(id, [[":path", "/"], ["x-body-op", op], ["x-body-text", "T"], ["content-length", "4"]]);
      assert.equal(get(h.maps.request_headers, "content-length"), undefined);
      assert.equal(h.requestBody(id, "bo", false), PAUSE);
      assert.equal(h.requestBody(id, "body", true), CONTINUE);
      assert.equal(h.buffers.request_body.toString(), expected);
      h.responseHeaders(id, [[":status", "200"]]);
      assert.equal(get(h.maps.response_headers, "x-body-request-size"), "4");
    });
  }

  test(`${lang}_body: x-response-body-op append`, () => {
    const h = new Host(wasm(`${lang}_body`), { rootId: `${lang}_body` });
    h.start();
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-response-body-op", "append"]], true);
    h.responseHeaders(id, [[":status", "200"], ["content-length", "2"]]);
    assert.equal(get(h.maps.response_headers, "content-length"), undefined);
    assert.equal(h.responseBody(id, "ok", true), CONTINUE);
    assert.equal(h.buffers.response_body.toString(), `ok[${lang}]`);
  });

  test(`${lang}_local_response: status, headers and body`, () => {
    const h = new Host(wasm(`${lang}_local_response`), { rootId: `${lang}_local_response` });
    h.start();
    const id = h.stream();
    const action = h.requestHeaders(id, [[":path", "/"], ["x-local-status", "418"], ["x-local-body", "tea"], ["x-local-header", "x-extra=1"]]);
    assert.equal(action, PAUSE);
    assert.equal(h.localResponse.status, 418);
    assert.equal(h.localResponse.body, "tea");
    assert.equal(get(h.localResponse.headers, "x-local"), lang);
    assert.equal(get(h.localResponse.headers, "x-extra"), "1");
  });

  test(`${lang}_local_response: grpc status and close`, () => {
    const h = new Host(wasm(`${lang}_local_response`), { rootId: `${lang}_local_response` });
    h.start();
    let id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-local-grpc-status", "7"]]);
    assert.equal(h.localResponse.grpc, 7);
    id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-local-close", "request"]]);
    assert.deepEqual(h.closed, [[id, 0]]);
  });

  test(`${lang}_config: echo and rejection`, () => {
    let h = new Host(wasm(`${lang}_config`), { rootId: `${lang}_config`, pluginConfig: '{"a": 1}', vmConfig: "vm-1" });
    assert.deepEqual(h.start(), { vmOk: 1, configOk: 1 });
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/"]]);
    h.responseHeaders(id, [[":status", "200"]]);
    assert.equal(get(h.maps.response_headers, "x-config-plugin"), '{"a": 1}');
    assert.equal(get(h.maps.response_headers, "x-config-vm"), "vm-1");
    assert.equal(get(h.maps.response_headers, "x-config-plugin-json"), "object");
    h = new Host(wasm(`${lang}_config`), { rootId: `${lang}_config`, pluginConfig: '{"fail": true}' });
    assert.equal(h.start().configOk, 0);
  });

  test(`${lang}_http_call: resume and local modes`, () => {
    const h = new Host(wasm(`${lang}_http_call`), { rootId: `${lang}_http_call`, pluginConfig: '{"cluster": "echo", "timeout_ms": 1000}' });
    assert.equal(h.start().configOk, 1);
    let id = h.stream();
    assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-callout", "resume"]]), PAUSE);
    assert.equal(h.httpCalls.length, 1);
    assert.equal(h.httpCalls[0].cluster, "echo");
    assert.equal(h.httpCalls[0].timeout, 1000);
    assert.equal(get(h.httpCalls[0].headers, "x-callout-from"), lang);
    h.httpCallResponse(1, [[":status", "201"], ["x-from-callout", "y"]], "abc");
    assert.equal(get(h.maps.request_headers, "x-callout-status"), "201");
    assert.equal(get(h.maps.request_headers, "x-callout-body-size"), "3");
    assert.deepEqual(h.continued, [[id, 0]]);
    id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-callout", "local"]]);
    h.httpCallResponse(2, [[":status", "202"], ["x-from-callout", "y"]], "hello");
    assert.equal(h.localResponse.status, 202);
    assert.equal(h.localResponse.body, "hello");
    assert.equal(get(h.localResponse.headers, "x-from-callout"), "y");
    id = h.stream();
    h.requestHeaders(id, [[":path", "/"], ["x-callout", "local"], ["x-callout-cluster", "missing"]]);
    assert.equal(h.localResponse.status, 500);
    assert.equal(get(h.localResponse.headers, "x-callout-dispatch-error"), "BadArgument");
  });
}

test("rs_shared: CAS counter increments per request", () => {
  const h = new Host(wasm("rs_shared"));
  h.start();
  for (const expected of ["1", "2"]) {
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/"]]);
    h.responseHeaders(id, [[":status", "200"]]);
    assert.equal(get(h.maps.response_headers, "x-shared-counter"), expected);
  }
});

test("rs_metrics: counter and gauge read back", () => {
  const h = new Host(wasm("rs_metrics"));
  h.start();
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/"], ["x-metric-gauge", "5"], ["x-metric-gauge-delta", "-2"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-metric-counter"), "1");
  assert.equal(get(h.maps.response_headers, "x-metric-gauge"), "3");
});

test("rs_properties: strings and integers are decoded", () => {
  const port = Buffer.alloc(8);
  port.writeBigInt64LE(4242n);
  const h = new Host(wasm("rs_properties"), { properties: { "request.path": "/x", "source.port": port } });
  h.start();
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/x"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-prop-request-path"), "/x");
  assert.equal(get(h.maps.response_headers, "x-prop-source-port"), "4242");
  assert.equal(get(h.maps.response_headers, "x-prop-route-name"), "<none>");
  assert.equal(get(h.maps.response_headers, "x-prop-set-roundtrip"), "rs");
});

test("rs_abi_010: adds x-abi and resumes a paused request on tick", () => {
  const h = new Host(wasm("rs_abi_010"));
  assert.equal(h.abi, "proxy_abi_version_0_1_0");
  h.start();
  assert.equal(h.tickMs, 10);
  const id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-abi010-pause", "1"]]), PAUSE);
  assert.equal(get(h.maps.request_headers, "x-abi"), "0.1.0");
  h.at(h.root, () => h.x.proxy_on_tick(h.root));
  assert.deepEqual(h.continued, [[id, 0]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-abi010-resumed"), "0");
});

test("rs_hostile_oob: every bogus pointer is refused", () => {
  const h = new Host(wasm("rs_hostile_oob"), { properties: { "request.path": "/" } });
  h.start();
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  const results = get(h.maps.response_headers, "x-oob-results").split(",");
  assert.ok(results.length >= 10);
  for (const r of results) assert.match(r, /=6$/, r);
});

test("add_header: shorthand and rules", () => {
  const config = JSON.stringify({
    header: "x-hello", value: "world",
    request: [{ name: "x-req", value: "1" }, { name: "x-drop", action: "remove" }],
  });
  const h = new Host(wasm("add_header"), { pluginConfig: config });
  assert.equal(h.start().configOk, 1);
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/"], ["x-drop", "1"]]);
  assert.equal(get(h.maps.request_headers, "x-req"), "1");
  assert.equal(get(h.maps.request_headers, "x-drop"), undefined);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-hello"), "world");
  assert.equal(new Host(wasm("add_header"), { pluginConfig: '{"header": "x"}' }).start().configOk, 0);
});

test("api_key_auth: 401 without a key, consumer header with one", () => {
  const config = JSON.stringify({ keys: [{ name: "alice", key: "k1" }], skip_paths: ["/healthz"] });
  const h = new Host(wasm("api_key_auth"), { pluginConfig: config });
  assert.equal(h.start().configOk, 1);
  let id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-api-consumer", "mallory"]]), PAUSE);
  assert.equal(h.localResponse.status, 401);
  assert.ok(h.localResponse.headers.some(([k, v]) => k === "www-authenticate" && v.startsWith("ApiKey")));
  h.localResponse = null;
  id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["authorization", "Bearer k1"]]), CONTINUE);
  assert.equal(get(h.maps.request_headers, "x-api-consumer"), "alice");
  assert.equal(get(h.maps.request_headers, "authorization"), undefined);
  id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-api-key", "k1"], ["authorization", "Bearer upstream"]]), CONTINUE);
  assert.equal(get(h.maps.request_headers, "x-api-key"), undefined);
  assert.equal(get(h.maps.request_headers, "authorization"), "Bearer upstream");
  id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-api-key", "wrong"]]), PAUSE);
  assert.match(h.localResponse.body, /invalid_api_key/);
  h.localResponse = null;
  id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/healthz"]]), CONTINUE);
  assert.equal(h.localResponse, null);
});

test("deny_path: denied paths get 403, others pass", () => {
  const config = JSON.stringify({ deny: ["/admin/", "/secret", "/debug*"], methods: ["get"], body: "no\n" });
  const h = new Host(wasm("deny_path"), { pluginConfig: config, rootId: "deny_path" });
  assert.equal(h.start().configOk, 1);
  const cases = [["GET", "/admin/x", 403], ["GET", "/secret?q=1", 403], ["GET", "/debugz", 403],
    ["GET", "/secret/x", null], ["POST", "/admin/x", null], ["GET", "/", null]];
  for (const [method, p, status] of cases) {
    h.localResponse = null;
    const id = h.stream();
    h.requestHeaders(id, [[":method", method], [":path", p]]);
    assert.equal(h.localResponse ? h.localResponse.status : null, status, method + " " + p);
  }
  for (const bad of ['{"deny": []}', '{"deny": ["/a"], "status": 99}', '{"deny": "/a"}', '{"nope": 1}', "not json"]) {
    const rejected = new Host(wasm("deny_path"), { pluginConfig: bad });
    assert.equal(rejected.start().configOk, 0, bad);
  }
});

test("rs_timer: ticks are counted in shared data", () => {
  const h = new Host(wasm("rs_timer"), { pluginConfig: '{"tick_ms": 20}' });
  h.start();
  assert.equal(h.tickMs, 20);
  for (let i = 0; i < 3; i++) h.at(h.root, () => h.x.proxy_on_tick(h.root));
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-timer-ticks"), "3");
  assert.equal(get(h.maps.response_headers, "x-timer-local-ticks"), "3");
});

test("rs_log: every level is logged and the host level reported", () => {
  const h = new Host(wasm("rs_log"));
  h.start();
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/l"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-log-results"),
    "trace=Ok,debug=Ok,info=Ok,warn=Ok,error=Ok,critical=Ok");
  assert.equal(get(h.maps.response_headers, "x-log-level"), "debug");
  assert.deepEqual(h.logs.filter(([, m]) => m.startsWith("sluice-conformance")).map(([l]) => l), [0, 1, 2, 3, 4, 5]);
});

test("rs_foreign: ban_source gets the client IP", () => {
  const h = new Host(wasm("rs_foreign"), { properties: { "source.address": "192.0.2.7:5555" } });
  let seen = null;
  h.foreign = { "sluice.ban_source": (arg) => { seen = arg; return "banned"; } };
  h.start();
  let id = h.stream();
  h.requestHeaders(id, [[":path", "/"], ["x-ban-me", "1"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(seen, "192.0.2.7");
  assert.equal(get(h.maps.response_headers, "x-foreign-result"), "ok:banned");
  id = h.stream();
  h.requestHeaders(id, [[":path", "/"], ["x-ban-me", "1"], ["x-foreign-name", "nope"]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-foreign-result"), "error:NotFound");
});

test("rs_hostile_callouts: pauses until every callout answered", () => {
  const h = new Host(wasm("rs_hostile_callouts"), { pluginConfig: '{"count": 3}' });
  h.start();
  const id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"]]), PAUSE);
  assert.equal(h.httpCalls.length, 3);
  for (const token of [1, 2, 3]) h.httpCallResponse(token, [[":status", "200"]], "");
  assert.deepEqual(h.continued, [[id, 0]]);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-callouts-responses"), "3");
});

test("rs_hostile_trap: traps only in the configured callback", () => {
  for (const mode of ["panic", "unreachable", "memory"]) {
    const h = new Host(wasm("rs_hostile_trap"), { pluginConfig: JSON.stringify({ where: "response_headers", mode }) });
    h.start();
    const id = h.stream();
    assert.equal(h.requestHeaders(id, [[":path", "/"]]), CONTINUE);
    assert.throws(() => h.responseHeaders(id, [[":status", "200"]]), WebAssembly.RuntimeError, mode);
  }
  const h = new Host(wasm("rs_hostile_trap"));
  h.start();
  assert.throws(() => h.requestHeaders(h.stream(), [[":path", "/"], ["x-hostile-where", "request_headers"]]), WebAssembly.RuntimeError);
});

test("rs_hostile_alloc: bogus allocations are refused, huge reads clamped", () => {
  for (const mode of ["oob", "null", "edge"]) {
    const h = new Host(wasm("rs_hostile_alloc"), { pluginConfig: mode });
    h.start();
    const id = h.stream();
    h.requestHeaders(id, [[":path", "/"]]);
    h.responseHeaders(id, [[":status", "200"]]);
    assert.equal(get(h.maps.response_headers, "x-alloc-result"), mode + "=6");
  }
  const h = new Host(wasm("rs_hostile_alloc"));
  h.start();
  const id = h.stream();
  h.requestHeaders(id, [[":path", "/"], ["x-alloc-mode", "huge-read"]]);
  h.requestBody(id, "abc");
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-alloc-result"), "huge-read=0");
});

test("rs_grpc_call: unary health check and first stream message", () => {
  const h = new Host(wasm("rs_grpc_call"), { pluginConfig: '{"cluster": "grpc", "message_hex": "0a00"}' });
  assert.equal(h.start().configOk, 1);
  let id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-grpc", "unary"]]), PAUSE);
  assert.deepEqual(
    [h.grpcCalls[0].cluster, h.grpcCalls[0].service, h.grpcCalls[0].method, h.grpcCalls[0].message.toString("hex")],
    ["grpc", "grpc.health.v1.Health", "Check", "0a00"]);
  h.grpcReceive(101, Buffer.from([0x08, 0x01]));
  assert.equal(get(h.maps.request_headers, "x-grpc-status"), "0");
  assert.equal(get(h.maps.request_headers, "x-grpc-response-hex"), "0801");
  assert.deepEqual(h.continued, [[id, 0]]);
  id = h.stream();
  assert.equal(h.requestHeaders(id, [[":path", "/"], ["x-grpc", "stream"]]), PAUSE);
  assert.equal(h.grpcCalls[1].method, "Watch");
  assert.deepEqual(h.grpcCalls[1].sent.map(([m, end]) => [m.toString("hex"), end]), [["0a00", 1]]);
  h.grpcReceive(102, Buffer.from([0x08, 0x01]));
  assert.equal(h.grpcCalls[1].cancelled, true);
  h.responseHeaders(id, [[":status", "200"]]);
  assert.equal(get(h.maps.response_headers, "x-grpc-stream-first-hex"), "0801");
  assert.equal(get(h.maps.response_headers, "x-grpc-stream-cancel"), "Ok");
});
