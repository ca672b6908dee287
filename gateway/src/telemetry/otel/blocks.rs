//! Encoded blocks of constant span attributes ([`Constant`]), kept by the exporter's encoder.
//! A server span's method, scheme, protocol, port, route and cluster, and an upstream span's
//! method, cluster and endpoint, are the same on most spans: copying their ~150 encoded bytes
//! costs a tenth of encoding the seven (or four) attributes again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use super::record::Constant;

/// Blocks kept at most; past this the cache starts over. A gateway with more distinct routes ×
/// methods × listener ports (or clusters × endpoints) in its traffic gains little from it.
pub const MAX_BLOCKS: usize = 1024;

/// What a block is made of. Route and cluster names are told apart by their `Arc`'s address
/// (a word to hash, not a string): the block holds a clone, so that an address cannot come
/// back for another name while the block is kept. Equal names behind two `Arc`s (after a
/// reload) are two keys with the same bytes, which is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Server {
        method: u8,
        /// The scheme's address and length (a `&'static str`: never freed, never reused).
        scheme: (usize, usize),
        version: u8,
        local_port: u16,
        route: Option<usize>,
        cluster: Option<usize>,
    },
    Upstream {
        method: u8,
        cluster: usize,
        endpoint: Option<SocketAddr>,
    },
}

/// All fields folded into one word: one multiplication with FxHash instead of one per field
/// (hashing was half the cost of a lookup). Equal keys fold equally.
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let word = match *self {
            Key::Server {
                method,
                scheme,
                version,
                local_port,
                route,
                cluster,
            } => {
                let small =
                    (u64::from(method) << 24) | (u64::from(version) << 16) | u64::from(local_port);
                let names =
                    route.unwrap_or(1) as u64 ^ (cluster.unwrap_or(3) as u64).rotate_left(29);
                small ^ names.rotate_left(7) ^ (scheme.0 as u64).rotate_left(43)
            }
            Key::Upstream {
                method,
                cluster,
                endpoint,
            } => {
                let ep = match endpoint {
                    Some(SocketAddr::V4(a)) => {
                        (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port())
                    }
                    Some(SocketAddr::V6(a)) => {
                        let ip = a.ip().to_bits();
                        (ip as u64) ^ ((ip >> 64) as u64) ^ u64::from(a.port())
                    }
                    None => 0,
                };
                (ep ^ (cluster as u64).rotate_left(23) ^ (u64::from(method) << 56)) | (1 << 63)
            }
        };
        h.write_u64(word);
    }
}

struct Block {
    bytes: Vec<u8>,
    /// The route and cluster names whose addresses are in the key.
    _names: [Option<Arc<str>>; 2],
}

/// The blocks of one encoder.
#[derive(Default)]
pub struct Blocks {
    /// Where each key's block is in `blocks`.
    map: HashMap<Key, usize, FxBuildHasher>,
    blocks: Vec<Block>,
    /// The block found last for a server span and for an upstream span: consecutive requests
    /// of a route find theirs with a comparison, without hashing and probing.
    last: [Option<(Key, usize)>; 2],
}

impl Blocks {
    /// The encoded attributes of `c`, if kept.
    pub fn get(&mut self, c: &Constant<'_>) -> Option<&[u8]> {
        let (key, _) = key(c)?;
        let slot = usize::from(matches!(key, Key::Upstream { .. }));
        let at = match self.last[slot] {
            Some((k, at)) if k == key => at,
            _ => {
                let at = *self.map.get(&key)?;
                self.last[slot] = Some((key, at));
                at
            }
        };
        self.blocks.get(at).map(|b| b.bytes.as_slice())
    }

    /// Keep `bytes`, the encoded attributes of `c` (not kept for an extension method).
    pub fn insert(&mut self, c: &Constant<'_>, bytes: &[u8]) {
        let Some((key, names)) = key(c) else {
            return;
        };
        if self.map.len() >= MAX_BLOCKS {
            self.map.clear();
            self.blocks.clear();
            self.last = [None, None];
        }
        let block = Block {
            bytes: bytes.to_vec(),
            _names: names.map(|n| n.cloned()),
        };
        match self.map.get(&key) {
            Some(&at) => self.blocks[at] = block,
            None => {
                self.map.insert(key, self.blocks.len());
                self.blocks.push(block);
            }
        }
    }

    /// How many blocks are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn addr(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}

/// The standard methods by number; none for an extension method (its text would have to be
/// part of the key).
fn method_code(m: &http::Method) -> Option<u8> {
    use http::Method as M;
    let code = if *m == M::GET {
        0
    } else if *m == M::POST {
        1
    } else if *m == M::PUT {
        2
    } else if *m == M::DELETE {
        3
    } else if *m == M::HEAD {
        4
    } else if *m == M::OPTIONS {
        5
    } else if *m == M::PATCH {
        6
    } else if *m == M::CONNECT {
        7
    } else if *m == M::TRACE {
        8
    } else {
        return None;
    };
    Some(code)
}

fn version_code(v: http::Version) -> u8 {
    match v {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_11 => 2,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 5,
    }
}

/// The key of `c` and the names it refers to by address.
fn key<'c>(c: &Constant<'c>) -> Option<(Key, [Option<&'c Arc<str>>; 2])> {
    Some(match *c {
        Constant::Server {
            method,
            scheme,
            version,
            local_port,
            route,
            cluster,
        } => (
            Key::Server {
                method: method_code(method)?,
                scheme: (scheme.as_ptr() as usize, scheme.len()),
                version: version_code(version),
                local_port,
                route: route.map(addr),
                cluster: cluster.map(addr),
            },
            [route, cluster],
        ),
        Constant::Upstream {
            method,
            cluster,
            endpoint,
        } => (
            Key::Upstream {
                method: method_code(method)?,
                cluster: addr(cluster),
                endpoint,
            },
            [Some(cluster), None],
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream<'a>(method: &'a http::Method, cluster: &'a Arc<str>, port: u16) -> Constant<'a> {
        Constant::Upstream {
            method,
            cluster,
            endpoint: Some(SocketAddr::from(([10, 0, 0, 1], port))),
        }
    }

    #[test]
    fn kept_by_what_they_are_made_of() {
        let (get, post) = (http::Method::GET, http::Method::POST);
        let app: Arc<str> = Arc::from("app");
        let mut b = Blocks::default();
        b.insert(&upstream(&get, &app, 80), b"one");
        assert_eq!(b.get(&upstream(&get, &app, 80)), Some(&b"one"[..]));
        // Found again through the last lookup, and after another key's.
        assert_eq!(b.get(&upstream(&get, &app, 80)), Some(&b"one"[..]));
        b.insert(&upstream(&get, &app, 90), b"ninety");
        assert_eq!(b.get(&upstream(&get, &app, 90)), Some(&b"ninety"[..]));
        assert_eq!(b.get(&upstream(&get, &app, 80)), Some(&b"one"[..]));
        // Replaced in place.
        b.insert(&upstream(&get, &app, 90), b"ninety again");
        assert_eq!(b.get(&upstream(&get, &app, 90)), Some(&b"ninety again"[..]));
        assert_eq!(b.get(&upstream(&post, &app, 80)), None);
        assert_eq!(b.get(&upstream(&get, &app, 81)), None);
        // Another Arc is another key, even with the same name.
        let again: Arc<str> = Arc::from("app");
        assert_eq!(b.get(&upstream(&get, &again, 80)), None);
        // The blocks keep their name alive: the address is not reused while one is kept (two
        // blocks; the replaced one let go of its clone).
        assert_eq!(Arc::strong_count(&app), 3);
        // Extension methods are not kept.
        let ext = http::Method::from_bytes(b"PURGE").expect("method");
        b.insert(&upstream(&ext, &app, 80), b"two");
        assert_eq!(b.get(&upstream(&ext, &app, 80)), None);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn bounded() {
        let get = http::Method::GET;
        let app: Arc<str> = Arc::from("app");
        let mut b = Blocks::default();
        for port in 0..=MAX_BLOCKS as u16 {
            b.insert(&upstream(&get, &app, port), b"x");
            assert_eq!(b.get(&upstream(&get, &app, port)), Some(&b"x"[..]));
            assert!(b.len() <= MAX_BLOCKS);
        }
        assert_eq!(b.len(), 1, "started over");
        assert_eq!(
            b.get(&upstream(&get, &app, 0)),
            None,
            "the last lookup went too"
        );
        drop(b);
        assert_eq!(Arc::strong_count(&app), 1, "names let go");
    }
}
