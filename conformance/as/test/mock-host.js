// A minimal in-process proxy-wasm host (Node's WebAssembly) used to smoke-test the plugins'
// own logic before the real gateway runs them: it implements the host calls the plugins here
// use, with Envoy's semantics, and answers Unimplemented (12) to anything else. It is not the
// conformance runner — that drives the real gateway over HTTP.
"use strict";
const fs = require("fs");

const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, INVALID_MEMORY = 6, CAS_MISMATCH = 8, UNIMPLEMENTED = 12;
const MAPS = ["request_headers", "request_trailers", "response_headers", "response_trailers",
  "grpc_initial", "grpc_trailing", "call_headers", "call_trailers"];
const BUFFERS = ["request_body", "response_body", "downstream", "upstream", "call_body",
  "grpc_body", "vm_config", "plugin_config", "call_data"];

class ProcExit extends Error {
  constructor(code) { super("proc_exit(" + code + ")"); this.code = code; }
}

function encodeMap(pairs) {
  const enc = pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  let size = 4 + 8 * enc.length;
  for (const [k, v] of enc) size += k.length + v.length + 2;
  const out = Buffer.alloc(size);
  out.writeUInt32LE(enc.length, 0);
  let data = 4 + 8 * enc.length;
  enc.forEach(([k, v], i) => {
    out.writeUInt32LE(k.length, 4 + 8 * i);
    out.writeUInt32LE(v.length, 8 + 8 * i);
    k.copy(out, data); data += k.length + 1;
    v.copy(out, data); data += v.length + 1;
  });
  return out;
}

function decodeMap(buf) {
  const n = buf.readUInt32LE(0);
  let data = 4 + 8 * n;
  const pairs = [];
  for (let i = 0; i < n; i++) {
    const kl = buf.readUInt32LE(4 + 8 * i), vl = buf.readUInt32LE(8 + 8 * i);
    const k = buf.subarray(data, data + kl).toString(); data += kl + 1;
    const v = buf.subarray(data, data + vl).toString(); data += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}

class Host {
  constructor(file, { pluginConfig = "", vmConfig = "", rootId = "", properties = {} } = {}) {
    this.module = new WebAssembly.Module(fs.readFileSync(file));
    this.maps = {};
    for (const m of MAPS) this.maps[m] = [];
    this.buffers = {};
    for (const b of BUFFERS) this.buffers[b] = Buffer.alloc(0);
    this.buffers.plugin_config = Buffer.from(pluginConfig);
    this.buffers.vm_config = Buffer.from(vmConfig);
    this.properties = Object.assign({ plugin_root_id: rootId, plugin_name: "test", plugin_vm_id: "" }, properties);
    this.logs = [];
    this.localResponse = null;
    this.continued = [];
    this.closed = [];
    this.httpCalls = [];
    this.shared = new Map();
    this.metrics = [];
    this.tickMs = 0;
    this.effective = 0;
    this.nextContext = 1;
    const imports = {};
    for (const imp of WebAssembly.Module.imports(this.module)) {
      imports[imp.module] = imports[imp.module] || {};
      imports[imp.module][imp.name] = this.hostFunction(imp.module, imp.name);
    }
    this.instance = new WebAssembly.Instance(this.module, imports);
    this.x = this.instance.exports;
    if (this.x._initialize) this.x._initialize();
    if (this.x._start) this.x._start();
    this.abi = Object.keys(this.x).find((n) => n.startsWith("proxy_abi_version_"));
  }

  // ---- memory helpers (memory.buffer changes when memory grows: always re-read it) ----
  mem() { return Buffer.from(this.x.memory.buffer); }
  read(ptr, len) {
    const m = this.mem();
    if (ptr + len > m.length || ptr < 0 || len < 0) throw new RangeError("oob");
    return Buffer.from(m.subarray(ptr, ptr + len));
  }
  u32(ptr, value) { new DataView(this.x.memory.buffer).setUint32(ptr, value, true); }
  alloc(bytes) {
    const malloc = this.x.proxy_on_memory_allocate || this.x.malloc;
    const ptr = malloc(bytes.length) >>> 0;
    const m = new Uint8Array(this.x.memory.buffer);
    if (ptr === 0 || ptr + bytes.length > m.length) throw new RangeError("bad allocation");
    m.set(bytes, ptr);
    return ptr;
  }
  // Returns bytes to the plugin through (ret_ptr, ret_size) out-pointers.
  give(bytes, retPtr, retSize) {
    try {
      const ptr = this.alloc(bytes);
      this.u32(retPtr, ptr);
      this.u32(retSize, bytes.length);
      return OK;
    } catch (e) {
      return INVALID_MEMORY;
    }
  }
  str(ptr, len) { return this.read(ptr, len).toString(); }

  header(map, name) {
    const hit = this.maps[map].find(([k]) => k === name);
    return hit ? hit[1] : undefined;
  }

  hostFunction(module, name) {
    if (module.startsWith("wasi")) {
      if (name === "proc_exit") return (code) => { throw new ProcExit(code); };
      if (name === "fd_write") return (fd, iovs, n, written) => { this.u32(written, 0); return 0; };
      if (name === "environ_sizes_get" || name === "args_sizes_get") return (a, b) => { this.u32(a, 0); this.u32(b, 0); return 0; };
      if (name === "environ_get" || name === "args_get") return () => 0;
      if (name === "clock_time_get") return () => 0;
      return () => 52; // ENOSYS
    }
    const f = this.calls()[name];
    if (f) {
      return (...args) => {
        try {
          return f(...args.map((a) => (typeof a === "bigint" ? a : a >>> 0)));
        } catch (e) {
          if (e instanceof RangeError) return INVALID_MEMORY;
          throw e;
        }
      };
    }
    return () => UNIMPLEMENTED;
  }

  calls() {
    const h = this;
    return {
      proxy_log(level, ptr, len) { h.logs.push([level, h.str(ptr, len)]); return OK; },
      proxy_get_log_level(ptr) { h.u32(ptr, 1); return OK; },
      proxy_get_current_time_nanoseconds(ptr) {
        new DataView(h.x.memory.buffer).setBigUint64(ptr, 1700000000000000000n, true); return OK;
      },
      proxy_set_tick_period_milliseconds(ms) { h.tickMs = ms; return OK; },
      proxy_get_property(pathPtr, pathLen, retPtr, retSize) {
        const path = h.str(pathPtr, pathLen).split("\0").filter((s) => s).join(".");
        const value = h.properties[path];
        if (value === undefined) return NOT_FOUND;
        return h.give(Buffer.isBuffer(value) ? value : Buffer.from(String(value)), retPtr, retSize);
      },
      proxy_set_property(pathPtr, pathLen, valuePtr, valueLen) {
        const path = h.str(pathPtr, pathLen).split("\0").filter((s) => s).join(".");
        h.properties[path] = h.read(valuePtr, valueLen);
        return OK;
      },
      proxy_get_buffer_bytes(type, start, max, retPtr, retSize) {
        const buf = h.buffers[BUFFERS[type]];
        if (!buf) return BAD_ARGUMENT;
        const slice = buf.subarray(Math.min(start, buf.length), Math.min(buf.length, start + max));
        if (slice.length === 0) return OK; // as Envoy: nothing is written
        return h.give(slice, retPtr, retSize);
      },
      proxy_set_buffer_bytes(type, start, size, dataPtr, dataLen) {
        const name = BUFFERS[type];
        const buf = h.buffers[name];
        if (!buf) return BAD_ARGUMENT;
        const data = h.read(dataPtr, dataLen);
        if (start === 0 && size === 0) h.buffers[name] = Buffer.concat([data, buf]);
        else if (start >= buf.length) h.buffers[name] = Buffer.concat([buf, data]);
        else if (start === 0 && size >= buf.length) h.buffers[name] = data;
        else return BAD_ARGUMENT;
        return OK;
      },
      proxy_get_header_map_pairs(type, retPtr, retSize) {
        return h.give(encodeMap(h.maps[MAPS[type]]), retPtr, retSize);
      },
      proxy_set_header_map_pairs(type, ptr, len) { h.maps[MAPS[type]] = decodeMap(h.read(ptr, len)); return OK; },
      proxy_get_header_map_size(type, ptr) { h.u32(ptr, encodeMap(h.maps[MAPS[type]]).length); return OK; },
      proxy_get_header_map_value(type, kPtr, kLen, retPtr, retSize) {
        const value = h.header(MAPS[type], h.str(kPtr, kLen).toLowerCase());
        if (value === undefined) return NOT_FOUND;
        return h.give(Buffer.from(value), retPtr, retSize);
      },
      proxy_add_header_map_value(type, kPtr, kLen, vPtr, vLen) {
        h.maps[MAPS[type]].push([h.str(kPtr, kLen).toLowerCase(), h.str(vPtr, vLen)]); return OK;
      },
      proxy_replace_header_map_value(type, kPtr, kLen, vPtr, vLen) {
        const key = h.str(kPtr, kLen).toLowerCase(), value = h.str(vPtr, vLen);
        const map = MAPS[type];
        h.maps[map] = h.maps[map].filter(([k]) => k !== key);
        h.maps[map].push([key, value]);
        return OK;
      },
      proxy_remove_header_map_value(type, kPtr, kLen) {
        const key = h.str(kPtr, kLen).toLowerCase();
        h.maps[MAPS[type]] = h.maps[MAPS[type]].filter(([k]) => k !== key);
        return OK;
      },
      proxy_send_local_response(status, dPtr, dLen, bPtr, bLen, hPtr, hLen, grpc) {
        h.localResponse = {
          status, details: h.str(dPtr, dLen), body: h.str(bPtr, bLen),
          headers: hLen ? decodeMap(h.read(hPtr, hLen)) : [], grpc: grpc | 0,
        };
        return OK;
      },
      proxy_continue_stream(type) { h.continued.push([h.effective, type]); return OK; },
      proxy_continue_request() { h.continued.push([h.effective, 0]); return OK; },
      proxy_close_stream(type) { h.closed.push([h.effective, type]); return OK; },
      proxy_set_effective_context(id) { h.effective = id; return OK; },
      proxy_http_call(cPtr, cLen, hPtr, hLen, bPtr, bLen, tPtr, tLen, timeout, tokenPtr) {
        const cluster = h.str(cPtr, cLen);
        if (cluster === "missing") return BAD_ARGUMENT;
        h.httpCalls.push({ cluster, headers: decodeMap(h.read(hPtr, hLen)), timeout, context: h.effective });
        h.u32(tokenPtr, h.httpCalls.length);
        return OK;
      },
      proxy_get_shared_data(kPtr, kLen, retPtr, retSize, casPtr) {
        const entry = h.shared.get(h.str(kPtr, kLen));
        if (!entry) return NOT_FOUND;
        h.u32(casPtr, entry.cas);
        return h.give(entry.value, retPtr, retSize);
      },
      proxy_set_shared_data(kPtr, kLen, vPtr, vLen, cas) {
        const key = h.str(kPtr, kLen);
        const entry = h.shared.get(key);
        if (cas !== 0 && entry && entry.cas !== cas) return CAS_MISMATCH;
        h.shared.set(key, { value: h.read(vPtr, vLen), cas: (entry ? entry.cas : 0) + 1 });
        return OK;
      },
      proxy_define_metric(type, nPtr, nLen, idPtr) {
        h.metrics.push({ type, name: h.str(nPtr, nLen), value: 0n });
        h.u32(idPtr, h.metrics.length);
        return OK;
      },
      proxy_increment_metric(id, offset) {
        const m = h.metrics[id - 1]; if (!m) return NOT_FOUND;
        m.value += BigInt(offset); return OK;
      },
      proxy_record_metric(id, value) {
        const m = h.metrics[id - 1]; if (!m) return NOT_FOUND;
        m.value = BigInt(value); return OK;
      },
      proxy_get_metric(id, ptr) {
        const m = h.metrics[id - 1]; if (!m) return NOT_FOUND;
        if (m.type === 2) return BAD_ARGUMENT;
        new DataView(h.x.memory.buffer).setBigUint64(ptr, m.value, true); return OK;
      },
      proxy_register_shared_queue(nPtr, nLen, idPtr) {
        const name = h.str(nPtr, nLen);
        h.queues = h.queues || new Map();
        if (!h.queues.has(name)) h.queues.set(name, { id: h.queues.size + 1, items: [] });
        h.u32(idPtr, h.queues.get(name).id);
        return OK;
      },
      proxy_resolve_shared_queue(vPtr, vLen, nPtr, nLen, idPtr) {
        const q = (h.queues || new Map()).get(h.str(nPtr, nLen));
        if (!q) return NOT_FOUND;
        h.u32(idPtr, q.id);
        return OK;
      },
      proxy_enqueue_shared_queue(id, ptr, len) {
        const q = [...(h.queues || new Map()).values()].find((x) => x.id === id);
        if (!q) return NOT_FOUND;
        q.items.push(h.read(ptr, len));
        return OK;
      },
      proxy_dequeue_shared_queue(id, retPtr, retSize) {
        const q = [...(h.queues || new Map()).values()].find((x) => x.id === id);
        if (!q) return NOT_FOUND;
        if (q.items.length === 0) return 7; // Empty
        return h.give(q.items.shift(), retPtr, retSize);
      },
      proxy_call_foreign_function(nPtr, nLen, aPtr, aLen, retPtr, retSize) {
        const name = h.str(nPtr, nLen);
        const f = h.foreign && h.foreign[name];
        if (!f) return NOT_FOUND;
        return h.give(Buffer.from(f(h.str(aPtr, aLen))), retPtr, retSize);
      },
      proxy_grpc_call(cPtr, cLen, sPtr, sLen, mPtr, mLen, hPtr, hLen, bPtr, bLen, timeout, tokenPtr) {
        h.grpcCalls = h.grpcCalls || [];
        h.grpcCalls.push({ cluster: h.str(cPtr, cLen), service: h.str(sPtr, sLen), method: h.str(mPtr, mLen),
          message: h.read(bPtr, bLen), timeout, context: h.effective });
        h.u32(tokenPtr, 100 + h.grpcCalls.length);
        return OK;
      },
      proxy_grpc_stream(cPtr, cLen, sPtr, sLen, mPtr, mLen, hPtr, hLen, tokenPtr) {
        h.grpcCalls = h.grpcCalls || [];
        h.grpcCalls.push({ cluster: h.str(cPtr, cLen), service: h.str(sPtr, sLen), method: h.str(mPtr, mLen),
          stream: true, sent: [], context: h.effective });
        h.u32(tokenPtr, 100 + h.grpcCalls.length);
        return OK;
      },
      proxy_grpc_send(token, ptr, len, end) {
        const call = (h.grpcCalls || [])[token - 101];
        if (!call) return NOT_FOUND;
        call.sent.push([h.read(ptr, len), end]);
        return OK;
      },
      proxy_grpc_cancel(token) {
        const call = (h.grpcCalls || [])[token - 101];
        if (!call) return NOT_FOUND;
        call.cancelled = true;
        return OK;
      },
      proxy_get_status(codePtr, msgPtr, msgSize) {
        h.u32(codePtr, h.grpcStatus || 0);
        return h.give(Buffer.from(h.grpcMessage || ""), msgPtr, msgSize);
      },
      proxy_done() { return OK; },
    };
  }

  // ---- driving the plugin like a proxy would ----
  at(id, fn) { this.effective = id; return fn(); }

  start() {
    this.root = this.nextContext++;
    this.at(this.root, () => this.x.proxy_on_context_create(this.root, 0));
    const vmOk = this.at(this.root, () => this.x.proxy_on_vm_start(this.root, this.buffers.vm_config.length));
    const configOk = this.at(this.root, () => this.x.proxy_on_configure(this.root, this.buffers.plugin_config.length));
    return { vmOk, configOk };
  }

  stream() {
    const id = this.nextContext++;
    this.at(id, () => this.x.proxy_on_context_create(id, this.root));
    return id;
  }

  requestHeaders(id, headers, endOfStream = false) {
    this.maps.request_headers = headers.map(([k, v]) => [k, v]);
    return this.at(id, () => this.x.proxy_on_request_headers(id, headers.length, endOfStream ? 1 : 0));
  }

  requestBody(id, body, endOfStream = true) {
    this.buffers.request_body = Buffer.from(body);
    return this.at(id, () => this.x.proxy_on_request_body(id, this.buffers.request_body.length, endOfStream ? 1 : 0));
  }

  responseHeaders(id, headers, endOfStream = false) {
    this.maps.response_headers = headers.map(([k, v]) => [k, v]);
    return this.at(id, () => this.x.proxy_on_response_headers(id, headers.length, endOfStream ? 1 : 0));
  }

  responseBody(id, body, endOfStream = true) {
    this.buffers.response_body = Buffer.from(body);
    return this.at(id, () => this.x.proxy_on_response_body(id, this.buffers.response_body.length, endOfStream ? 1 : 0));
  }

  // A gRPC message (unary answer or stream message) delivered to the root, as Envoy does.
  grpcReceive(token, message) {
    this.buffers.grpc_body = Buffer.from(message);
    return this.at(this.root, () => this.x.proxy_on_grpc_receive(this.root, token, this.buffers.grpc_body.length));
  }

  // Envoy delivers callout answers to the root context; the SDKs switch to the stream.
  httpCallResponse(token, headers, body) {
    this.maps.call_headers = headers;
    this.buffers.call_body = Buffer.from(body);
    return this.at(this.root, () =>
      this.x.proxy_on_http_call_response(this.root, token, headers.length, this.buffers.call_body.length, 0));
  }
}

module.exports = { Host, ProcExit, encodeMap, decodeMap };
