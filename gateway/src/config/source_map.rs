//! Where every key path of a YAML document sits in the text, so that problems found long after
//! parsing (validation, plugin loading, snapshot building) can still point at a line.
//!
//! serde_yaml gives a position only for its own errors, so the document is read a second time with
//! yaml-rust2's event parser, which marks every node. Paths are written the way
//! `serde_path_to_error` writes them: `listeners[0].routes[2].cluster`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based (line, column) position.
type Pos = (usize, usize);

#[derive(Clone, Debug, Default)]
struct Entry {
    /// Position of the mapping key naming this node, when it has one.
    key: Option<Pos>,
    /// Position of the node itself.
    value: Option<Pos>,
    /// Mapping or sequence (as opposed to a scalar or alias).
    container: bool,
}

/// A key that appears twice in one mapping (YAML forbids it; serde may silently keep the last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Key path of the second occurrence.
    pub path: String,
    /// Position of the second occurrence.
    pub line: usize,
    /// Column of the second occurrence.
    pub column: usize,
    /// Line of the first occurrence.
    pub first_line: usize,
}

/// Key path → position, for one YAML document.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
    duplicates: Vec<DuplicateKey>,
}

impl SourceMap {
    /// Map every node of `text`. Text that does not parse gives a map of what came before the
    /// error: the syntax error itself is reported from serde_yaml, which the config is parsed with.
    pub fn new(text: &str) -> SourceMap {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error is reported by serde_yaml; the partial map is still useful.
        let _ = parser.load(&mut builder, false);
        SourceMap {
            entries: builder.entries,
            duplicates: builder.duplicates,
        }
    }

    /// Position (1-based line, 1-based column) of `key_path`: the value for a scalar, the key for a
    /// mapping or list written under a key. A path absent from the file (a defaulted field) is
    /// located at its nearest written ancestor. The root (`""`) has no position.
    pub fn locate(&self, key_path: &str) -> Option<(usize, usize)> {
        let mut path = key_path;
        loop {
            if path.is_empty() {
                return None;
            }
            if let Some(pos) = self.locate_exact(path) {
                return Some(pos);
            }
            path = parent(path)?;
        }
    }

    /// Position of `key_path` only if that exact path is written in the file.
    pub fn locate_exact(&self, key_path: &str) -> Option<(usize, usize)> {
        let e = self.entries.get(key_path)?;
        if e.container {
            e.key.or(e.value)
        } else {
            e.value.or(e.key)
        }
    }

    /// Position of the key naming `key_path` (for "unknown key" problems, where the key is wrong).
    pub fn locate_key(&self, key_path: &str) -> Option<(usize, usize)> {
        let e = self.entries.get(key_path)?;
        e.key.or(e.value)
    }

    /// True when the document has any content at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys written twice in the same mapping.
    pub fn duplicate_keys(&self) -> &[DuplicateKey] {
        &self.duplicates
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `""`.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn pos(m: Marker) -> Pos {
    // yaml-rust2 lines are 1-based and columns 0-based; serde_yaml reports both 1-based.
    (m.line(), m.col() + 1)
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read, waiting for its value; None while a key is expected.
        key: Option<(String, Pos)>,
        seen: HashMap<String, usize>,
    },
    Sequence {
        path: String,
        next: usize,
    },
    /// A mapping or sequence used as a mapping key: not addressable by a key path, skipped.
    ComplexKey,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    entries: HashMap<String, Entry>,
    duplicates: Vec<DuplicateKey>,
    done: bool,
}

/// Where the next node goes: a key of the current mapping, a value at a path, or nowhere.
enum Slot {
    Key,
    Value { path: String, key: Option<Pos> },
    Ignored,
}

impl Builder {
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value {
                path: String::new(),
                key: None,
            },
            Some(Frame::ComplexKey) => Slot::Ignored,
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Slot::Value { path: p, key: None }
            }
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                None => Slot::Key,
                Some((k, kpos)) => Slot::Value {
                    path: join(path, &k),
                    key: Some(kpos),
                },
            },
        }
    }

    fn record(&mut self, path: String, key: Option<Pos>, value: Pos, container: bool) {
        self.entries.insert(
            path,
            Entry {
                key,
                value: Some(value),
                container,
            },
        );
    }

    fn on_key(&mut self, name: String, at: Pos) {
        if let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() {
            let full = join(path, &name);
            if let Some(&first_line) = seen.get(&name) {
                self.duplicates.push(DuplicateKey {
                    path: full,
                    line: at.0,
                    column: at.1,
                    first_line,
                });
            } else {
                // A block mapping's start is marked after its first key; point at the key.
                if seen.is_empty() {
                    if let Some(e) = self.entries.get_mut(path.as_str()) {
                        if e.value.is_some_and(|v| v > at) {
                            e.value = Some(at);
                        }
                    }
                }
                seen.insert(name.clone(), at.0);
            }
            *key = Some((name, at));
        }
    }

    fn start_container(&mut self, frame_of: impl FnOnce(String) -> Frame, at: Pos) {
        match self.slot() {
            Slot::Value { path, key } => {
                self.record(path.clone(), key, at, true);
                self.stack.push(frame_of(path));
            }
            // A complex key: its value will be attributed to a key nobody can name.
            Slot::Key | Slot::Ignored => self.stack.push(Frame::ComplexKey),
        }
    }

    fn end_container(&mut self) {
        let ended = self.stack.pop();
        if matches!(ended, Some(Frame::ComplexKey)) {
            if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                if key.is_none() {
                    *key = Some(("?".to_string(), (0, 0)));
                }
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let at = pos(mark);
        match ev {
            Event::Scalar(text, ..) => match self.slot() {
                Slot::Key => self.on_key(text, at),
                Slot::Value { path, key } => self.record(path, key, at, false),
                Slot::Ignored => {}
            },
            Event::Alias(_) => match self.slot() {
                Slot::Key => self.on_key("*alias".to_string(), at),
                Slot::Value { path, key } => self.record(path, key, at, false),
                Slot::Ignored => {}
            },
            Event::MappingStart(..) => self.start_container(
                |path| Frame::Mapping {
                    path,
                    key: None,
                    seen: HashMap::new(),
                },
                at,
            ),
            Event::SequenceStart(..) => {
                self.start_container(|path| Frame::Sequence { path, next: 0 }, at)
            }
            Event::MappingEnd | Event::SequenceEnd => self.end_container(),
            // Only the first document is the config (serde_yaml rejects more than one).
            Event::DocumentEnd => self.done = true,
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: public
    address: \"0.0.0.0:8080\"
    routes:
      - match: { path_prefix: /v1/ }
        cluster: api
clusters:
  - name: api
    endpoints: [\"127.0.0.1:9000\", \"b:1\"]
";

    #[test]
    fn scalars_point_at_their_value() {
        let m = SourceMap::new(DOC);
        assert_eq!(m.locate("listeners[0].name"), Some((2, 11)));
        assert_eq!(m.locate("listeners[0].routes[0].cluster"), Some((6, 18)));
        assert_eq!(
            m.locate("listeners[0].routes[0].match.path_prefix"),
            Some((5, 31))
        );
        assert_eq!(m.locate("clusters[0].endpoints[1]"), Some((9, 35)));
    }

    #[test]
    fn containers_point_at_their_key() {
        let m = SourceMap::new(DOC);
        assert_eq!(m.locate("listeners[0].routes"), Some((4, 5)));
        assert_eq!(m.locate("clusters"), Some((7, 1)));
        assert_eq!(m.locate("listeners[0].routes[0]").map(|p| p.0), Some(5));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let m = SourceMap::new(DOC);
        assert_eq!(
            m.locate("clusters[0].pool.idle_timeout"),
            m.locate("clusters[0]")
        );
        assert_eq!(m.locate_exact("clusters[0].pool"), None);
        assert_eq!(m.locate("nothing"), None);
        assert_eq!(m.locate(""), None);
    }

    #[test]
    fn duplicate_keys_are_found() {
        let m = SourceMap::new("a: 1\nb:\n  c: 1\n  c: 2\n");
        assert_eq!(
            m.duplicate_keys(),
            &[DuplicateKey {
                path: "b.c".into(),
                line: 4,
                column: 3,
                first_line: 3
            }]
        );
    }

    #[test]
    fn broken_yaml_gives_a_partial_map() {
        let m = SourceMap::new("a: 1\nb: [\n");
        assert_eq!(m.locate("a"), Some((1, 4)));
    }

    #[test]
    fn empty_document_is_empty() {
        assert!(SourceMap::new("").is_empty());
        assert!(SourceMap::new("# only a comment\n").is_empty());
    }
}
