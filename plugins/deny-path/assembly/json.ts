// A small, strict JSON reader: enough for plugin configurations (objects, arrays, strings with
// escapes, numbers, booleans, null). AssemblyScript 0.17 has no JSON in its standard library.

export const KIND_NULL: i32 = 0;
export const KIND_BOOL: i32 = 1;
export const KIND_NUMBER: i32 = 2;
export const KIND_STRING: i32 = 3;
export const KIND_ARRAY: i32 = 4;
export const KIND_OBJECT: i32 = 5;

export class JsonValue {
  kind: i32 = KIND_NULL;
  boolean: bool = false;
  number: f64 = 0;
  text: string = "";
  items: Array<JsonValue> = [];
  keys: Array<string> = [];
  values: Array<JsonValue> = [];

  get(key: string): JsonValue | null {
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) {
        return this.values[i];
      }
    }
    return null;
  }
}

// The parse result: a value, or an error message with the offset where parsing stopped.
export class JsonResult {
  value: JsonValue | null = null;
  error: string = "";
}

class Reader {
  text: string;
  at: i32 = 0;
  error: string = "";

  constructor(text: string) {
    this.text = text;
  }

  fail(message: string): JsonValue {
    if (this.error == "") {
      this.error = message + " at offset " + this.at.toString();
    }
    return new JsonValue();
  }

  skipSpace(): void {
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c != 32 && c != 9 && c != 10 && c != 13) {
        return;
      }
      this.at++;
    }
  }

  literal(word: string): bool {
    if (this.text.substr(this.at, word.length) == word) {
      this.at += word.length;
      return true;
    }
    return false;
  }

  value(depth: i32): JsonValue {
    if (depth > 64) {
      return this.fail("nesting too deep");
    }
    this.skipSpace();
    if (this.at >= this.text.length) {
      return this.fail("unexpected end");
    }
    const c = this.text.charCodeAt(this.at);
    const v = new JsonValue();
    if (c == 123) {
      return this.object(depth);
    } else if (c == 91) {
      return this.array(depth);
    } else if (c == 34) {
      v.kind = KIND_STRING;
      v.text = this.string();
    } else if (this.literal("true")) {
      v.kind = KIND_BOOL;
      v.boolean = true;
    } else if (this.literal("false")) {
      v.kind = KIND_BOOL;
    } else if (this.literal("null")) {
      v.kind = KIND_NULL;
    } else if (c == 45 || (c >= 48 && c <= 57)) {
      v.kind = KIND_NUMBER;
      v.number = this.numberValue();
    } else {
      return this.fail("unexpected character");
    }
    return v;
  }

  numberValue(): f64 {
    const start = this.at;
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if ((c >= 48 && c <= 57) || c == 45 || c == 43 || c == 46 || c == 101 || c == 69) {
        this.at++;
      } else {
        break;
      }
    }
    const n = parseFloat(this.text.substring(start, this.at));
    if (isNaN(n)) {
      this.fail("bad number");
    }
    return n;
  }

  string(): string {
    this.at++; // opening quote
    let out = "";
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c == 34) {
        this.at++;
        return out;
      }
      if (c < 32) {
        this.fail("control character in string");
        return out;
      }
      if (c != 92) {
        out += this.text.charAt(this.at);
        this.at++;
        continue;
      }
      this.at++;
      if (this.at >= this.text.length) {
        break;
      }
      const e = this.text.charCodeAt(this.at);
      this.at++;
      if (e == 110) out += "\n";
      else if (e == 116) out += "\t";
      else if (e == 114) out += "\r";
      else if (e == 98) out += "\b";
      else if (e == 102) out += "\f";
      else if (e == 34 || e == 92 || e == 47) out += String.fromCharCode(e);
      else if (e == 117) {
        const code = <i32>parseInt(this.text.substr(this.at, 4), 16);
        if (this.at + 4 > this.text.length || code < 0) {
          this.fail("bad \\u escape");
          return out;
        }
        out += String.fromCharCode(code);
        this.at += 4;
      } else {
        this.fail("bad escape");
        return out;
      }
    }
    this.fail("unterminated string");
    return out;
  }

  array(depth: i32): JsonValue {
    const v = new JsonValue();
    v.kind = KIND_ARRAY;
    this.at++;
    this.skipSpace();
    if (this.literal("]")) {
      return v;
    }
    while (this.error == "") {
      v.items.push(this.value(depth + 1));
      this.skipSpace();
      if (this.literal("]")) {
        return v;
      }
      if (!this.literal(",")) {
        return this.fail("expected , or ]");
      }
    }
    return v;
  }

  object(depth: i32): JsonValue {
    const v = new JsonValue();
    v.kind = KIND_OBJECT;
    this.at++;
    this.skipSpace();
    if (this.literal("}")) {
      return v;
    }
    while (this.error == "") {
      this.skipSpace();
      if (this.at >= this.text.length || this.text.charCodeAt(this.at) != 34) {
        return this.fail("expected a key");
      }
      const key = this.string();
      this.skipSpace();
      if (!this.literal(":")) {
        return this.fail("expected :");
      }
      v.keys.push(key);
      v.values.push(this.value(depth + 1));
      this.skipSpace();
      if (this.literal("}")) {
        return v;
      }
      if (!this.literal(",")) {
        return this.fail("expected , or }");
      }
    }
    return v;
  }
}

export function parseJson(text: string): JsonResult {
  const reader = new Reader(text);
  const value = reader.value(0);
  reader.skipSpace();
  if (reader.error == "" && reader.at != text.length) {
    reader.fail("trailing characters");
  }
  const result = new JsonResult();
  if (reader.error != "") {
    result.error = reader.error;
  } else {
    result.value = value;
  }
  return result;
}
