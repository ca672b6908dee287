//! Property values and their encoding as Envoy gives them to plugins: strings as their bytes,
//! integers as 8-byte little-endian int64, booleans as one byte, timestamps and durations as int64
//! nanoseconds, maps as serialized pairs.

use bytes::Bytes;

/// A property value.
#[derive(Clone, Debug, PartialEq)]
pub enum Prop {
    Str(String),
    Bytes(Bytes),
    Int(i64),
    Bool(bool),
    /// Header-like maps (`request.headers`).
    Map(Vec<(String, String)>),
}

impl Prop {
    /// The bytes handed to the plugin.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Prop::Str(s) => s.as_bytes().to_vec(),
            Prop::Bytes(b) => b.to_vec(),
            Prop::Int(i) => i.to_le_bytes().to_vec(),
            Prop::Bool(b) => vec![u8::from(*b)],
            Prop::Map(m) => {
                let list: Vec<(&[u8], &[u8])> = m
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                    .collect();
                crate::pairs::encode(&list)
            }
        }
    }

    /// Run `f` with the bytes handed to the plugin, without building them for the scalar kinds.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Prop::Str(s) => f(s.as_bytes()),
            Prop::Bytes(b) => f(b),
            Prop::Int(i) => f(&i.to_le_bytes()),
            Prop::Bool(b) => f(&[u8::from(*b)]),
            Prop::Map(_) => f(&self.encode()),
        }
    }

    /// Index a map property by key (`request.headers` + `x-foo`), case-insensitively.
    pub fn index(&self, key: &str) -> Option<Prop> {
        match self {
            Prop::Map(m) => m
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| Prop::Str(v.clone())),
            _ => None,
        }
    }
}

/// Most segments a path read in place has (Envoy's attributes have at most three).
const MAX_SEGMENTS: usize = 8;

/// A property path read in place from the plugin's bytes (see [`split_path`] for the rules).
pub struct Path<'a> {
    segments: [&'a str; MAX_SEGMENTS],
    len: usize,
}

impl<'a> Path<'a> {
    /// The path in `raw`, when it is UTF-8 with at most eight segments; `None`
    /// otherwise (use [`split_path`]).
    pub fn parse(raw: &'a [u8]) -> Option<Path<'a>> {
        let s = std::str::from_utf8(raw).ok()?.trim_end_matches('\0');
        let mut path = Path {
            segments: [""; MAX_SEGMENTS],
            len: 0,
        };
        if s.contains('\0') {
            for seg in s.split('\0') {
                *path.segments.get_mut(path.len)? = seg;
                path.len += 1;
            }
            return Some(path);
        }
        match s.split_once('.') {
            Some((a, b)) if KNOWN_ROOTS.contains(&a) => {
                path.segments[0] = a;
                path.segments[1] = b;
                path.len = 2;
            }
            _ => {
                path.segments[0] = s;
                path.len = 1;
            }
        }
        Some(path)
    }

    /// The segments.
    pub fn segments(&self) -> &[&'a str] {
        &self.segments[..self.len]
    }
}

/// Split a property path as plugins send it: segments separated by NUL; a single segment with
/// dots (`request.path`, accepted for convenience) is split on the first dot.
pub fn split_path(raw: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(raw);
    let s = s.trim_end_matches('\0');
    if s.contains('\0') {
        return s.split('\0').map(str::to_string).collect();
    }
    match s.split_once('.') {
        Some((a, b)) if KNOWN_ROOTS.contains(&a) => vec![a.to_string(), b.to_string()],
        _ => vec![s.to_string()],
    }
}

const KNOWN_ROOTS: &[&str] = &[
    "request",
    "response",
    "source",
    "destination",
    "connection",
    "upstream",
    "node",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_in_place_split_like_split_path() {
        for raw in [
            &b"request\0path"[..],
            b"request\0headers\0x-a\0",
            b"request.path",
            b"plugin_name",
            b"node.id",
            b"my.own.name",
            b"",
            b"a\0b\0c\0d\0e\0f\0g\0h",
        ] {
            let want = split_path(raw);
            let got = Path::parse(raw).map(|p| {
                p.segments()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            });
            assert_eq!(got.as_ref(), Some(&want), "{raw:?}");
        }
        // Too many segments or not UTF-8: the caller falls back to split_path.
        assert!(Path::parse(b"a\0b\0c\0d\0e\0f\0g\0h\0i").is_none());
        assert!(Path::parse(b"request\0\xff").is_none());
    }
}
