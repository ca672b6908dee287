// Conformance plugin as_http_call: the same configuration, directives and effects as
// rs_http_call (callout header x-callout-from: as). The callout is made on the root context, as
// proxy-runtime requires; the host delivers the answer to the root, which makes the stream the
// effective context again before the callback runs.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, Headers,
  stream_context, send_local_response, GrpcStatusValues, WasmResultValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";
import {
  ConfiguredRoot, pair, requestHeader, setResponseHeader, parseNumber, jsonString, jsonNumber,
  resultName,
} from "./common";

const MODE_NONE: i32 = 0;
const MODE_LOCAL: i32 = 1;
const MODE_RESUME: i32 = 2;

class CalloutRoot extends ConfiguredRoot {
  cluster: string = "echo";
  path: string = "/callout";
  authority: string = "callout";
  timeoutMs: u32 = 5000;

  configured(): bool {
    const config = this.pluginConfig;
    if (jsonString(config, "cluster") != "") this.cluster = jsonString(config, "cluster");
    if (jsonString(config, "path") != "") this.path = jsonString(config, "path");
    if (jsonString(config, "authority") != "") this.authority = jsonString(config, "authority");
    const timeout = jsonNumber(config, "timeout_ms");
    if (timeout >= 0) this.timeoutMs = <u32>timeout;
    return true;
  }

  createContext(context_id: u32): Context {
    return new CalloutStream(context_id, this);
  }
}

class CalloutStream extends Context {
  root: CalloutRoot;
  mode: i32 = MODE_NONE;
  reportStatus: string = "";
  reportSize: string = "";

  constructor(context_id: u32, root_context: CalloutRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const directive = requestHeader("x-callout");
    if (directive == "local") {
      this.mode = MODE_LOCAL;
    } else if (directive == "resume") {
      this.mode = MODE_RESUME;
    } else {
      return FilterHeadersStatusValues.Continue;
    }
    let cluster = requestHeader("x-callout-cluster");
    if (cluster == "") cluster = this.root.cluster;
    let path = requestHeader("x-callout-path");
    if (path == "") path = this.root.path;
    let timeout = parseNumber(requestHeader("x-callout-timeout-ms"));
    if (timeout < 0) timeout = this.root.timeoutMs;
    const headers: Headers = [
      pair(":method", "GET"),
      pair(":path", path),
      pair(":authority", this.root.authority),
      pair(":scheme", "http"),
      pair("x-callout-from", "as"),
    ];
    const result = this.root.httpCall(cluster, headers, new ArrayBuffer(0), [], <u32>timeout, this, onCalloutResponse);
    if (result != WasmResultValues.Ok) {
      send_local_response(500, "", new ArrayBuffer(0), [pair("x-callout-dispatch-error", resultName(result))], GrpcStatusValues.InvalidCode);
    }
    return FilterHeadersStatusValues.StopIteration;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (this.reportStatus != "") {
      setResponseHeader("x-callout-status", this.reportStatus);
      setResponseHeader("x-callout-body-size", this.reportSize);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

function onCalloutResponse(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const stream = changetype<CalloutStream>(origin);
  const calloutHeaders: Headers = headers == 0 ? [] : stream_context.headers.http_callback.get_headers();
  let status = "failed";
  const copied: Headers = [];
  for (let i = 0; i < calloutHeaders.length; i++) {
    const key = String.UTF8.decode(calloutHeaders[i].key);
    if (key == ":status") {
      status = String.UTF8.decode(calloutHeaders[i].value);
    } else if (key.startsWith("x-")) {
      copied.push(calloutHeaders[i]);
    }
  }
  const body = body_size == 0 ? new ArrayBuffer(0) : get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, <u32>body_size);
  const size = body.byteLength.toString();
  if (stream.mode == MODE_LOCAL) {
    let code = parseNumber(status);
    if (code < 0) code = 502;
    copied.push(pair("x-callout-status", status));
    copied.push(pair("x-callout-body-size", size));
    send_local_response(<u32>code, "", body, copied, GrpcStatusValues.InvalidCode);
    return;
  }
  stream_context.headers.request.add("x-callout-status", status);
  stream_context.headers.request.add("x-callout-body-size", size);
  stream.reportStatus = status;
  stream.reportSize = size;
  stream.continueRequest();
}

function makeRoot(context_id: u32): RootContext {
  return new CalloutRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "as_http_call");
