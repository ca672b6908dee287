// Conformance plugin as_body: the same directives and effects as rs_body (default text "[as]").
// Bodies are held with StopIterationAndBuffer until end of stream, then edited with one
// proxy_set_buffer_bytes whose (start, size) selects the operation as in Envoy.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  FilterDataStatusValues, stream_context,
} from "@solo-io/proxy-runtime";
import { BufferTypeValues } from "@solo-io/proxy-runtime/runtime";
import { requestHeader, setResponseHeader, ConfiguredRoot } from "./common";

// proxy-runtime 0.1.8 imports the setter under the wrong host name (proxy_get_buffer_status).
// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: u32, start: u32, length: u32, data: usize, size: usize): u32;

const OP_NONE: i32 = 0;
const OP_REPLACE: i32 = 1;
const OP_PREPEND: i32 = 2;
const OP_APPEND: i32 = 3;

function parseOp(text: string): i32 {
  if (text == "replace") return OP_REPLACE;
  if (text == "prepend") return OP_PREPEND;
  if (text == "append") return OP_APPEND;
  return OP_NONE;
}

function apply(typ: BufferTypeValues, op: i32, length: usize, text: string): void {
  const data = String.UTF8.encode(text);
  let start: u32 = 0;
  let size: u32 = 0;
  if (op == OP_REPLACE) {
    size = <u32>length;
  } else if (op == OP_APPEND) {
    start = <u32>length;
  }
  proxy_set_buffer_bytes(typ, start, size, changetype<usize>(data), data.byteLength);
}

class BodyRoot extends ConfiguredRoot {
  createContext(context_id: u32): Context {
    return new BodyStream(context_id, this);
  }
}

class BodyStream extends Context {
  requestOp: i32 = OP_NONE;
  responseOp: i32 = OP_NONE;
  text: string = "[as]";
  requestSize: i64 = -1;
  requestCalls: u32 = 0;

  constructor(context_id: u32, root_context: BodyRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.requestOp = parseOp(requestHeader("x-body-op"));
    this.responseOp = parseOp(requestHeader("x-response-body-op"));
    const text = requestHeader("x-body-text");
    if (text != "") {
      this.text = text;
    }
    if (this.requestOp != OP_NONE) {
      stream_context.headers.request.remove("content-length");
    }
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    this.requestCalls += 1;
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    this.requestSize = <i64>body_buffer_length;
    if (this.requestOp != OP_NONE) {
      apply(BufferTypeValues.HttpRequestBody, this.requestOp, body_buffer_length, this.text);
    }
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (this.responseOp != OP_NONE) {
      stream_context.headers.response.remove("content-length");
    }
    setResponseHeader("x-body-request-size", this.requestSize < 0 ? "none" : this.requestSize.toString());
    setResponseHeader("x-body-request-calls", this.requestCalls.toString());
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    if (this.responseOp != OP_NONE) {
      apply(BufferTypeValues.HttpResponseBody, this.responseOp, body_buffer_length, this.text);
    }
    return FilterDataStatusValues.Continue;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new BodyRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "as_body");
