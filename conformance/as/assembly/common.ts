// Helpers shared by the AssemblyScript conformance plugins.
import {
  RootContext, HeaderPair, Headers, stream_context, WasmResultValues,
} from "@solo-io/proxy-runtime";
import {
  get_buffer_bytes, BufferTypeValues, get_property, HeaderMapTypeValues,
} from "@solo-io/proxy-runtime/runtime";
import * as imports from "@solo-io/proxy-runtime/imports";

// proxy-runtime 0.1.8's RootContext.onConfigure passes the configuration size where the host
// expects a pointer for the returned size; every plugin here reads its configuration itself.
export class ConfiguredRoot extends RootContext {
  pluginConfig: string = "";
  vmConfig: string = "";
  configureCount: u32 = 0;

  onStart(vm_configuration_size: usize): bool {
    this.vmConfig = readBuffer(BufferTypeValues.VmConfiguration, <u32>vm_configuration_size);
    return true;
  }

  onConfigure(configuration_size: u32): bool {
    this.pluginConfig = readBuffer(BufferTypeValues.PluginConfiguration, configuration_size);
    this.configureCount += 1;
    return this.configured();
  }

  // Hook for subclasses: parse pluginConfig; false rejects the configuration.
  configured(): bool {
    return true;
  }
}

export function readBuffer(typ: BufferTypeValues, size: u32): string {
  if (size == 0) {
    return "";
  }
  return String.UTF8.decode(get_buffer_bytes(typ, 0, size));
}

export function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

export function requestHeader(name: string): string {
  return stream_context.headers.request.get(name);
}

export function setResponseHeader(name: string, value: string): void {
  // replace adds the header when it is missing, as proxy_replace_header_map_value specifies.
  stream_context.headers.response.replace(name, value);
}

export function headersText(headers: Headers): string {
  let out = "";
  for (let i = 0; i < headers.length; i++) {
    if (i > 0) {
      out += ";";
    }
    out += String.UTF8.decode(headers[i].key) + "=" + String.UTF8.decode(headers[i].value);
  }
  return out;
}

// Parses a non-negative decimal; -1 when the text is not one.
export function parseNumber(text: string): i64 {
  if (text.length == 0) {
    return -1;
  }
  let value: i64 = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) {
      return -1;
    }
    value = value * 10 + (c - 48);
  }
  return value;
}

// Header values may not contain control characters; configurations are shown on one line.
export function printable(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out += c < 32 || c == 127 ? " " : text.charAt(i);
  }
  return out;
}

// The value of a top-level string field in a flat JSON object, or "" when absent. The
// conformance configurations are tiny and written by the runner, so a scanner is enough.
export function jsonString(json: string, field: string): string {
  const key = "\"" + field + "\"";
  let at = json.indexOf(key);
  if (at < 0) {
    return "";
  }
  at = json.indexOf(":", at + key.length);
  if (at < 0) {
    return "";
  }
  const open = json.indexOf("\"", at + 1);
  if (open < 0) {
    return "";
  }
  const close = json.indexOf("\"", open + 1);
  return close < 0 ? "" : json.substring(open + 1, close);
}

// The value of a top-level number field in a flat JSON object, or -1 when absent.
export function jsonNumber(json: string, field: string): i64 {
  const key = "\"" + field + "\"";
  let at = json.indexOf(key);
  if (at < 0) {
    return -1;
  }
  at = json.indexOf(":", at + key.length);
  if (at < 0) {
    return -1;
  }
  let start = at + 1;
  while (start < json.length && json.charCodeAt(start) == 32) {
    start++;
  }
  let end = start;
  while (end < json.length && json.charCodeAt(end) >= 48 && json.charCodeAt(end) <= 57) {
    end++;
  }
  return parseNumber(json.substring(start, end));
}

export function hasProperty(path: string): bool {
  return get_property(path).byteLength > 0;
}

export function resultName(result: WasmResultValues): string {
  switch (result) {
    case WasmResultValues.Ok: return "Ok";
    case WasmResultValues.NotFound: return "NotFound";
    case WasmResultValues.BadArgument: return "BadArgument";
    case WasmResultValues.InternalFailure: return "InternalFailure";
    case WasmResultValues.Unimplemented: return "Unimplemented";
    default: return "Status" + (<u32>result).toString();
  }
}

// proxy_set_header_map_pairs with the proxy-wasm map encoding: u32 count, count x (u32 key
// length, u32 value length), then each key and value followed by a NUL. proxy-runtime 0.1.8's
// own set_headers does not compile with AssemblyScript 0.17.
export function setHeaderMapPairs(typ: HeaderMapTypeValues, headers: Headers): WasmResultValues {
  let size = 4 + 8 * headers.length;
  for (let i = 0; i < headers.length; i++) {
    size += headers[i].key.byteLength + headers[i].value.byteLength + 2;
  }
  const buffer = new ArrayBuffer(size);
  const view = new DataView(buffer);
  view.setUint32(0, headers.length, true);
  let data = 4 + 8 * headers.length;
  const bytes = Uint8Array.wrap(buffer);
  for (let i = 0; i < headers.length; i++) {
    const key = Uint8Array.wrap(headers[i].key);
    const value = Uint8Array.wrap(headers[i].value);
    view.setUint32(4 + 8 * i, key.length, true);
    view.setUint32(8 + 8 * i, value.length, true);
    bytes.set(key, data);
    data += key.length + 1;
    bytes.set(value, data);
    data += value.length + 1;
  }
  return imports.proxy_set_header_map_pairs(typ, changetype<usize>(buffer), buffer.byteLength);
}
