// Conformance plugin as_local_response: the same directives and effects as rs_local_response,
// with "as" where rs_local_response writes "rs" (header x-local: as / as-grpc / as-response).
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, Headers,
  send_local_response, GrpcStatusValues,
} from "@solo-io/proxy-runtime";
import * as imports from "@solo-io/proxy-runtime/imports";
import { StreamTypeValues } from "@solo-io/proxy-runtime/runtime";
import { pair, requestHeader, parseNumber, ConfiguredRoot } from "./common";

class LocalRoot extends ConfiguredRoot {
  createContext(context_id: u32): Context {
    return new LocalStream(context_id, this);
  }
}

class LocalStream extends Context {
  onResponse: i64 = -1;

  constructor(context_id: u32, root_context: LocalRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const status = parseNumber(requestHeader("x-local-status"));
    if (status >= 0) {
      let body = requestHeader("x-local-body");
      if (body == "") {
        body = "local response from as\n";
      }
      const headers: Headers = [pair("x-local", "as")];
      const extra = requestHeader("x-local-header");
      const eq = extra.indexOf("=");
      if (eq > 0) {
        headers.push(pair(extra.substring(0, eq), extra.substring(eq + 1)));
      }
      send_local_response(<u32>status, "", String.UTF8.encode(body), headers, GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    const grpc = parseNumber(requestHeader("x-local-grpc-status"));
    if (grpc >= 0) {
      const headers: Headers = [pair("x-local", "as-grpc")];
      const message = requestHeader("x-local-grpc-message");
      // As the Rust SDK does: with a gRPC status, the body argument is the grpc-message.
      send_local_response(200, "", String.UTF8.encode(message), headers, <GrpcStatusValues>(<i32>grpc));
      return FilterHeadersStatusValues.StopIteration;
    }
    const close = requestHeader("x-local-close");
    if (close == "request") {
      imports.proxy_close_stream(StreamTypeValues.Request);
      return FilterHeadersStatusValues.StopIteration;
    }
    if (close == "response") {
      imports.proxy_close_stream(StreamTypeValues.Response);
      return FilterHeadersStatusValues.StopIteration;
    }
    this.onResponse = parseNumber(requestHeader("x-local-on-response"));
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (this.onResponse < 0) {
      return FilterHeadersStatusValues.Continue;
    }
    const headers: Headers = [pair("x-local", "as-response")];
    send_local_response(<u32>this.onResponse, "", String.UTF8.encode("replaced by as\n"), headers, GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new LocalRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "as_local_response");
