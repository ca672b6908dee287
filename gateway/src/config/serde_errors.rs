//! serde_yaml and serde_path_to_error errors turned into problems a user can act on: the key path,
//! the line, plain words for Rust types, the valid keys or values, and the closest one to a typo.

use super::diagnostics::{closest, Diagnostic};
use super::source_map::SourceMap;

/// Turn a YAML syntax error or a serde shape error into a problem with a place and a fix.
pub(super) fn shape_problem(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    map: &SourceMap,
) -> Diagnostic {
    let path = match err.path().to_string() {
        p if p == "." => String::new(),
        p => p,
    };
    let inner = err.inner();
    let loc = inner.location().map(|l| (l.line(), l.column()));
    let raw = bare_message(&inner.to_string(), loc);

    let (path, message, fix, key_pos) = explain(&path, &raw);
    let position = key_pos
        .and_then(|p| map.locate_key(p.as_str()))
        .or_else(|| map.locate_exact(&path))
        .or(loc)
        .or_else(|| map.locate(&path));
    let mut d = Diagnostic::at(path, message);
    if let Some((line, col)) = position {
        d = d.with_position(line, col);
    }
    match fix {
        Some(f) => d.fix(f),
        None => d,
    }
}

/// Every key written twice in one mapping, each at its second occurrence.
pub(super) fn duplicate_problems(source: &SourceMap) -> Vec<Diagnostic> {
    source
        .duplicate_keys()
        .iter()
        .map(|d| {
            let key = d.path.rsplit('.').next().unwrap_or(&d.path);
            let fix = format!("remove one of them (the first is on line {})", d.first_line);
            Diagnostic::at(
                d.path.clone(),
                format!("key `{key}` is written twice in one mapping"),
            )
            .with_position(d.line, d.column)
            .fix(fix)
        })
        .collect()
}

/// A YAML syntax error (or several documents in one file), placed where serde_yaml found it.
pub(super) fn syntax_problem(err: &serde_yaml::Error) -> Diagnostic {
    let loc = err.location().map(|l| (l.line(), l.column()));
    let raw = bare_message(&err.to_string(), loc);
    let (message, fix) = if raw.contains("more than one document") {
        (
            "the file holds more than one YAML document".to_string(),
            "keep one document: remove the extra `---` lines",
        )
    } else {
        (
            format!("YAML syntax error: {raw}"),
            "check the indentation, the `:` after each key and the quoting on this line",
        )
    };
    let d = Diagnostic::at("", message).fix(fix);
    match loc {
        Some((line, col)) => d.with_position(line, col),
        None => d,
    }
}

/// serde_yaml's message without the `path: ` prefix and the ` at line L column C` it adds itself.
fn bare_message(display: &str, loc: Option<(usize, usize)>) -> String {
    let mut msg = display.to_string();
    if let Some((line, col)) = loc {
        let at = format!(" at line {line} column {col}");
        if let Some(i) = msg.find(&at) {
            msg.replace_range(i..i + at.len(), "");
        }
    }
    if let Some((prefix, rest)) = msg.split_once(": ") {
        let looks_like_path = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c));
        if looks_like_path {
            return rest.to_string();
        }
    }
    msg
}

/// (key path, message, fix, path of an offending key) for a serde message.
fn explain(path: &str, raw: &str) -> (String, String, Option<String>, Option<String>) {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = split_backticked(rest);
        let key_path = path_with_key(path, &key);
        let valid = backticked_list(&expected);
        let mut fix = if valid.is_empty() {
            "remove it: this mapping takes no keys".to_string()
        } else {
            format!("remove it; valid keys here are: {}", valid.join(", "))
        };
        if let Some(close) = closest(&key, &valid) {
            fix = format!("did you mean `{close}`? {fix}");
        }
        let msg = format!("unknown key `{key}`");
        return (key_path.clone(), msg, Some(fix), Some(key_path));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = split_backticked(rest);
        let valid = backticked_list(&expected);
        let mut fix = format!("use one of: {}", valid.join(", "));
        if let Some(close) = closest(&value, &valid) {
            fix = format!("did you mean `{close}`? {fix}");
        }
        let msg = format!("unknown value `{value}`");
        return (path.to_string(), msg, Some(fix), None);
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let (key, _) = split_backticked(rest);
        let msg = format!("missing required key `{key}`");
        let fix = format!("add `{key}:` here");
        return (path.to_string(), msg, Some(fix), None);
    }
    if let Some(rest) = raw.strip_prefix("duplicate field `") {
        let (key, _) = split_backticked(rest);
        let msg = format!("key `{key}` is written twice in one mapping");
        let fix = Some("remove one of them".to_string());
        return (path_with_key(path, &key), msg, fix, None);
    }
    if let Some(rest) = raw
        .strip_prefix("invalid type: ")
        .or_else(|| raw.strip_prefix("invalid value: "))
    {
        let msg = match rest.split_once(", expected ") {
            Some((found, expected)) => format!(
                "wrong type: expected {}, found {}",
                plain_type(expected),
                plain_type(found)
            ),
            None => format!("wrong value: {rest}"),
        };
        return (path.to_string(), msg, None, None);
    }
    // Custom messages (units, ...) carry their own fix after a `; `.
    match raw.split_once("; ") {
        Some((m, f)) => (path.to_string(), m.to_string(), Some(f.to_string()), None),
        None => (path.to_string(), raw.to_string(), None, None),
    }
}

/// serde_path_to_error usually ends the path with the offending key already; add it if not.
fn path_with_key(path: &str, key: &str) -> String {
    if path == key || path.ends_with(&format!(".{key}")) {
        path.to_string()
    } else {
        join(path, key)
    }
}

/// serde's and Rust's type words as a YAML user knows them.
fn plain_type(t: &str) -> String {
    let plain = match t {
        "usize" | "u64" | "u32" | "u8" => "a whole number",
        "u16" => "a whole number from 0 to 65535",
        "f64" | "f32" => "a number",
        "a sequence" | "sequence" => "a list",
        "map" | "a map" => "a mapping",
        "unit value" => "nothing (null)",
        "a boolean" | "boolean" => "true or false",
        _ => {
            return match t.strip_prefix("struct ") {
                Some(name) => format!("a mapping ({name})"),
                None => t.to_string(),
            }
        }
    };
    plain.to_string()
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `foo`, rest` → ("foo", "rest"), given the text after an opening backtick.
fn split_backticked(after_open: &str) -> (String, String) {
    match after_open.split_once('`') {
        Some((name, rest)) => (name.to_string(), rest.to_string()),
        None => (after_open.to_string(), String::new()),
    }
}

/// Every `name` between backticks in `s`.
fn backticked_list(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_message_strips_path_and_position() {
        let m = bare_message(
            "listeners[0]: unknown field `adress`, expected one of `name` at line 3 column 5",
            Some((3, 5)),
        );
        assert_eq!(m, "unknown field `adress`, expected one of `name`");
        let m = bare_message("invalid type: string \"x\", expected usize", None);
        assert_eq!(m, "invalid type: string \"x\", expected usize");
    }

    #[test]
    fn unknown_field_lists_valid_keys() {
        let (path, msg, fix, key) = explain(
            "listeners[0].adress",
            "unknown field `adress`, expected one of `name`, `address`",
        );
        assert_eq!(path, "listeners[0].adress");
        assert_eq!(msg, "unknown key `adress`");
        assert_eq!(
            fix.as_deref(),
            Some("did you mean `address`? remove it; valid keys here are: name, address")
        );
        assert_eq!(key.as_deref(), Some("listeners[0].adress"));
    }

    #[test]
    fn rust_types_in_plain_words() {
        let (_, msg, _, _) = explain("workers", "invalid type: string \"x\", expected usize");
        assert_eq!(
            msg,
            "wrong type: expected a whole number, found string \"x\""
        );
    }
}
