// A minimal Sluice plugin: adds `x-plugin: <configuration>` to every response and refuses
// requests that carry `x-block: 1` with a 403. Rename the classes, keep the structure.

// The host calls these exports (proxy_on_*); every plugin's entry file re-exports them.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, GrpcStatusValues, HeaderPair, Headers, log, LogLevelValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

// One root context per plugin instance: it holds the configuration shared by all requests.
class MyRoot extends RootContext {
  headerValue: string = "hello";

  // Read the configuration here rather than through the base class: proxy-runtime 0.1.8's
  // default onConfigure passes the wrong pointer for the returned size.
  onConfigure(configuration_size: u32): bool {
    if (configuration_size > 0) {
      const bytes = get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size);
      this.headerValue = String.UTF8.decode(bytes);
    }
    if (this.headerValue.includes("\n")) {
      log(LogLevelValues.error, "my-plugin: the configuration must be one line");
      return false; // the gateway rejects the configuration and keeps the previous one
    }
    return true;
  }

  createContext(context_id: u32): Context {
    return new MyStream(context_id, this);
  }
}

// One context per HTTP request.
class MyStream extends Context {
  root: MyRoot;

  constructor(context_id: u32, root_context: MyRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get("x-block") == "1") {
      const headers: Headers = [
        new HeaderPair(String.UTF8.encode("content-type"), String.UTF8.encode("text/plain")),
      ];
      send_local_response(403, "blocked_by_my_plugin", String.UTF8.encode("blocked\n"), headers, GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-plugin", this.root.headerValue);
    return FilterHeadersStatusValues.Continue;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new MyRoot(context_id);
}

// The runtime picks the factory by the plugin's root_id ("" when the config sets none).
registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "my_plugin");
