// deny-path configuration: parsed and validated once per on_configure.
import { parseJson, JsonValue, KIND_ARRAY, KIND_STRING, KIND_NUMBER, KIND_OBJECT } from "./json";

export class DenyConfig {
  // Exact paths, or prefixes when they end with "/" or "*".
  deny: Array<string> = [];
  // Upper-case methods the rule applies to; empty means every method.
  methods: Array<string> = [];
  status: u32 = 403;
  body: string = "forbidden\n";
  contentType: string = "text/plain; charset=utf-8";
  error: string = "";

  // True when `path` (query string ignored) is denied for `method`.
  denies(method: string, path: string): bool {
    let end = path.indexOf("?");
    if (end < 0) {
      end = path.length;
    }
    const bare = path.substring(0, end);
    if (this.methods.length > 0 && !this.methods.includes(method)) {
      return false;
    }
    for (let i = 0; i < this.deny.length; i++) {
      const rule = this.deny[i];
      if (rule.endsWith("*")) {
        if (bare.startsWith(rule.substring(0, rule.length - 1))) return true;
      } else if (rule.endsWith("/")) {
        if (bare.startsWith(rule)) return true;
      } else if (bare == rule) {
        return true;
      }
    }
    return false;
  }
}

function stringList(value: JsonValue | null, field: string, out: Array<string>, config: DenyConfig): void {
  if (value === null) {
    return;
  }
  const list = value as JsonValue;
  if (list.kind != KIND_ARRAY) {
    config.error = "deny-path config: `" + field + "` must be a list of strings";
    return;
  }
  for (let i = 0; i < list.items.length; i++) {
    const item = list.items[i];
    if (item.kind != KIND_STRING || item.text == "") {
      config.error = "deny-path config: `" + field + "[" + i.toString() + "]` must be a non-empty string";
      return;
    }
    out.push(item.text);
  }
}

// Parses the configuration; on failure `error` says what to fix.
export function parseConfig(text: string): DenyConfig {
  const config = new DenyConfig();
  const parsed = parseJson(text);
  if (parsed.value === null) {
    config.error = "deny-path config is not JSON: " + parsed.error;
    return config;
  }
  const root = parsed.value as JsonValue;
  if (root.kind != KIND_OBJECT) {
    config.error = "deny-path config must be a mapping, e.g. { deny: [\"/admin/\"] }";
    return config;
  }
  for (let i = 0; i < root.keys.length; i++) {
    const key = root.keys[i];
    if (key != "deny" && key != "methods" && key != "status" && key != "body" && key != "content_type") {
      config.error = "deny-path config: unknown field `" + key + "` (known: deny, methods, status, body, content_type)";
      return config;
    }
  }
  stringList(root.get("deny"), "deny", config.deny, config);
  const methods: Array<string> = [];
  stringList(root.get("methods"), "methods", methods, config);
  for (let i = 0; i < methods.length; i++) {
    config.methods.push(methods[i].toUpperCase());
  }
  if (config.error != "") {
    return config;
  }
  if (config.deny.length == 0) {
    config.error = "deny-path config: `deny` is empty, so the plugin would do nothing; list at least one path";
    return config;
  }
  const status = root.get("status");
  if (status !== null) {
    const s = status as JsonValue;
    if (s.kind != KIND_NUMBER || s.number < 200 || s.number > 599 || s.number != Math.floor(s.number)) {
      config.error = "deny-path config: `status` must be an HTTP status between 200 and 599";
      return config;
    }
    config.status = <u32>s.number;
  }
  const body = root.get("body");
  if (body !== null) {
    const b = body as JsonValue;
    if (b.kind != KIND_STRING) {
      config.error = "deny-path config: `body` must be a string";
      return config;
    }
    config.body = b.text;
  }
  const contentType = root.get("content_type");
  if (contentType !== null) {
    const c = contentType as JsonValue;
    if (c.kind != KIND_STRING || c.text == "") {
      config.error = "deny-path config: `content_type` must be a non-empty string";
      return config;
    }
    config.contentType = c.text;
  }
  return config;
}
