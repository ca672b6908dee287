// Conformance plugin as_config: the same headers as rs_config. on_configure returns false when
// the plugin configuration contains "fail": true.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues,
} from "@solo-io/proxy-runtime";
import { ConfiguredRoot, setResponseHeader, printable } from "./common";

class ConfigRoot extends ConfiguredRoot {
  json: string = "none";

  configured(): bool {
    const text = this.pluginConfig.trim();
    if (text == "") {
      this.json = "none";
    } else if (text.startsWith("{") && text.endsWith("}")) {
      this.json = "object";
    } else {
      this.json = "other";
    }
    const compact = text.replaceAll(" ", "");
    return !compact.includes("\"fail\":true");
  }

  createContext(context_id: u32): Context {
    return new ConfigStream(context_id, this);
  }
}

class ConfigStream extends Context {
  root: ConfigRoot;

  constructor(context_id: u32, root_context: ConfigRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const plugin = this.root.pluginConfig;
    const vm = this.root.vmConfig;
    setResponseHeader("x-config-plugin", plugin == "" ? "<none>" : printable(plugin));
    setResponseHeader("x-config-vm", vm == "" ? "<none>" : printable(vm));
    setResponseHeader("x-config-plugin-json", this.root.json);
    setResponseHeader("x-config-configure-count", this.root.configureCount.toString());
    return FilterHeadersStatusValues.Continue;
  }
}

function makeRoot(context_id: u32): RootContext {
  return new ConfigRoot(context_id);
}

registerRootContext(makeRoot, "");
registerRootContext(makeRoot, "as_config");
