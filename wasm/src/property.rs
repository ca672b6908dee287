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
