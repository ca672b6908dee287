// Conformance plugin as_headers: the same directives and effects as rs_headers, with the value
// "as" where rs_headers writes "rs". See conformance/README.md.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
  FilterTrailersStatusValues, stream_context, Headers,
} from "@solo-io/proxy-runtime";
import { HeaderMapTypeValues } from "@solo-io/proxy-runtime/runtime";
import { pair, requestHeader, setResponseHeader, headersText, setHeaderMapPairs, ConfiguredRoot } from "./common";

class HeadersRoot extends ConfiguredRoot {
  createContext(context_id: u32): Context {
    return new HeadersStream(context_id, this);
  }
}

class HeadersStream extends Context {
  requestHeaderCount: i32 = 0;
  requestNumHeaders: u32 = 0;
  requestPath: string = "";
  requestTrailers: string = "none";

  constructor(context_id: u32, root_context: HeadersRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request = stream_context.headers.request;
    const pairs: Headers = request.get_headers();
    this.requestHeaderCount = pairs.length;
    this.requestNumHeaders = num_headers;
    this.requestPath = request.get(":path");
    if (requestHeader("x-conf-set-map") == "1") {
      pairs.push(pair("x-conf-map-replaced", "1"));
      setHeaderMapPairs(HeaderMapTypeValues.RequestHeaders, pairs);
    }
    if (requestHeader("x-conf-replace") != "") {
      request.replace("x-conf-replace", "replaced");
    }
    request.remove("x-conf-remove");
    request.add("x-conf-added", "as");
    request.add("x-conf-request-header-count", this.requestHeaderCount.toString());
    return FilterHeadersStatusValues.Continue;
  }

  onRequestTrailers(num_trailers: u32): FilterTrailersStatusValues {
    const trailers = stream_context.trailers.request;
    this.requestTrailers = headersText(trailers.get_headers());
    trailers.add("x-conf-trailer-added", "as");
    return FilterTrailersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const response = stream_context.headers.response;
    const count = response.get_headers().length;
    if (response.get("x-conf-upstream-replace") != "") {
      response.replace("x-conf-upstream-replace", "replaced");
    }
    response.remove("x-conf-upstream-remove");
    response.add("x-conf-response-added", "as");
    setResponseHeader("x-conf-response-header-count", count.toString());
    setResponseHeader("x-conf-response-num-headers", num_headers.toString());
    setResponseHeader("x-conf-request-header-count", this.requestHeaderCount.toString());
    setResponseHeader("x-conf-request-num-headers", this.requestNumHeaders.toString());
    setResponseHeader("x-conf-request-path", this.requestPath == "" ? "<none>" : this.requestPath);
    setResponseHeader("x-conf-request-trailers", this.requestTrailers);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseTrailers(num_trailers: u32): FilterTrailersStatusValues {
    const trailers = stream_context.trailers.response;
    trailers.remove("x-conf-upstream-trailer-remove");
    trailers.add("x-conf-response-trailer-added", "as");
    trailers.add("x-conf-response-trailer-count", trailers.get_headers().length.toString());
    return FilterTrailersStatusValues.Continue;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new HeadersRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "as_headers");
