// deny-path: a first-party Sluice plugin in AssemblyScript. Requests whose path matches the
// configured list get a local response (403 by default) and never reach the upstream.
// See README.md for the configuration.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, GrpcStatusValues, HeaderPair, Headers, log, LogLevelValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";
import { DenyConfig, parseConfig } from "./config";

class DenyPathRoot extends RootContext {
  config: DenyConfig = new DenyConfig();

  // proxy-runtime 0.1.8's default onConfigure passes the size where the host expects a
  // pointer, so the configuration is read here directly.
  onConfigure(configuration_size: u32): bool {
    const text = configuration_size == 0
      ? ""
      : String.UTF8.decode(get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size));
    const config = parseConfig(text);
    if (config.error != "") {
      log(LogLevelValues.error, config.error);
      return false;
    }
    this.config = config;
    return true;
  }

  createContext(context_id: u32): Context {
    return new DenyPathStream(context_id, this);
  }
}

class DenyPathStream extends Context {
  root: DenyPathRoot;

  constructor(context_id: u32, root_context: DenyPathRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const config = this.root.config;
    if (config.deny.length == 0) {
      // Never configured successfully: the host refused the configuration; let requests pass
      // rather than guess a list.
      return FilterHeadersStatusValues.Continue;
    }
    const method = stream_context.headers.request.get(":method");
    const path = stream_context.headers.request.get(":path");
    if (!config.denies(method, path)) {
      return FilterHeadersStatusValues.Continue;
    }
    const headers: Headers = [
      new HeaderPair(String.UTF8.encode("content-type"), String.UTF8.encode(config.contentType)),
      new HeaderPair(String.UTF8.encode("cache-control"), String.UTF8.encode("no-store")),
    ];
    send_local_response(config.status, "denied_by_path", String.UTF8.encode(config.body), headers, GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new DenyPathRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "deny_path");
