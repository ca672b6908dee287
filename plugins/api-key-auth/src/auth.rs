//! Configuration and the access decision, independent of the proxy-wasm host so it can be
//! unit-tested natively.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Default request header carrying the key.
pub const DEFAULT_HEADER: &str = "x-api-key";
/// Default header that tells the upstream which key (consumer) was used.
pub const DEFAULT_CONSUMER_HEADER: &str = "x-api-consumer";
/// Default realm in `WWW-Authenticate`.
pub const DEFAULT_REALM: &str = "sluice";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    key: Option<String>,
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    keys: Vec<RawKey>,
    header: Option<String>,
    bearer: Option<bool>,
    strip: Option<bool>,
    consumer_header: Option<String>,
    realm: Option<String>,
    #[serde(default)]
    skip_paths: Vec<String>,
}

/// One accepted key: only its SHA-256 is kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Consumer name reported upstream.
    pub name: String,
    digest: [u8; 32],
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Accepted keys.
    pub keys: Vec<Key>,
    /// Lowercase request header carrying the key.
    pub header: String,
    /// Whether `Authorization: Bearer <key>` is accepted too.
    pub bearer: bool,
    /// Whether the credential headers are removed before the request goes upstream.
    pub strip: bool,
    /// Header set to the consumer name on success (None: not set).
    pub consumer_header: Option<String>,
    /// Realm shown in `WWW-Authenticate`.
    pub realm: String,
    /// Paths that need no key: an exact path, or a prefix when it ends with `/` or `*`.
    pub skip_paths: Vec<String>,
}

/// Why a configuration was rejected, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn header_name(value: Option<String>, default: &str, field: &str) -> Result<String, ConfigError> {
    let name = value
        .unwrap_or_else(|| default.to_owned())
        .to_ascii_lowercase();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ConfigError(format!(
            "api-key-auth config: `{field}` must be a header name (letters, digits, -)"
        )))
    }
}

impl Config {
    /// Parses and validates the JSON configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and the fix.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError(format!("api-key-auth config: {e}")))?;
        if raw.keys.is_empty() {
            return Err(ConfigError(
                "api-key-auth config: `keys` is empty, so every request would be refused; add at least one key".into(),
            ));
        }
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (i, key) in raw.keys.into_iter().enumerate() {
            let digest = match (key.key, key.sha256) {
                (Some(plain), None) if !plain.is_empty() => digest(plain.as_bytes()),
                (None, Some(hex)) => parse_hex_digest(&hex).ok_or_else(|| {
                    ConfigError(format!(
                        "api-key-auth config: keys[{i}].sha256 must be 64 hex digits (sha256sum of the key)"
                    ))
                })?,
                _ => {
                    return Err(ConfigError(format!(
                        "api-key-auth config: keys[{i}] needs exactly one of a non-empty `key` or `sha256`"
                    )))
                }
            };
            keys.push(Key {
                name: key.name,
                digest,
            });
        }
        let consumer_header = match raw.consumer_header.as_deref() {
            Some("") => None,
            _ => Some(header_name(
                raw.consumer_header,
                DEFAULT_CONSUMER_HEADER,
                "consumer_header",
            )?),
        };
        let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
        if realm.contains(['"', '\\']) || !realm.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ConfigError(
                "api-key-auth config: `realm` must be printable ASCII without quotes or backslashes".into(),
            ));
        }
        Ok(Config {
            keys,
            header: header_name(raw.header, DEFAULT_HEADER, "header")?,
            bearer: raw.bearer.unwrap_or(true),
            strip: raw.strip.unwrap_or(true),
            consumer_header,
            realm,
            skip_paths: raw.skip_paths,
        })
    }

    /// Whether `path` (query string included or not) needs no key.
    pub fn skipped(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.skip_paths.iter().any(|p| {
            if let Some(prefix) = p.strip_suffix('*') {
                path.starts_with(prefix)
            } else if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            }
        })
    }

    /// The consumer whose key this is, comparing digests in constant time over every key so
    /// that timing reveals neither which key nor how much of it matched.
    pub fn consumer(&self, presented: &[u8]) -> Option<&str> {
        let candidate = digest(presented);
        let mut found = None;
        for key in &self.keys {
            let diff = key
                .digest
                .iter()
                .zip(candidate.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(key.name.as_str());
            }
        }
        found
    }

    /// The `WWW-Authenticate` challenges of a 401.
    pub fn challenges(&self) -> Vec<String> {
        let mut out = vec![format!(
            "ApiKey realm=\"{}\", header=\"{}\"",
            self.realm, self.header
        )];
        if self.bearer {
            out.push(format!("Bearer realm=\"{}\"", self.realm));
        }
        out
    }
}

/// The key in an `Authorization` value, when it uses the Bearer scheme (case-insensitive).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"keys": [{{"name": "alice", "key": "s3cret"}},
                          {{"name": "ci", "sha256": "{}"}}]{extra}}}"#,
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        Config::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn plain_and_hashed_keys_match_their_consumer() {
        let c = config("");
        assert_eq!(c.consumer(b"s3cret"), Some("alice"));
        // sha256("secret") is the configured digest for `ci`.
        assert_eq!(c.consumer(b"secret"), Some("ci"));
        assert_eq!(c.consumer(b"s3cre"), None);
        assert_eq!(c.consumer(b""), None);
    }

    #[test]
    fn defaults() {
        let c = config("");
        assert_eq!(c.header, "x-api-key");
        assert!(c.bearer && c.strip);
        assert_eq!(c.consumer_header.as_deref(), Some("x-api-consumer"));
        assert_eq!(
            c.challenges(),
            vec![
                "ApiKey realm=\"sluice\", header=\"x-api-key\"".to_owned(),
                "Bearer realm=\"sluice\"".to_owned()
            ]
        );
    }

    #[test]
    fn skip_paths_are_exact_or_prefix() {
        let c = config(r#", "skip_paths": ["/healthz", "/public/", "/docs*"]"#);
        assert!(c.skipped("/healthz"));
        assert!(c.skipped("/healthz?verbose=1"));
        assert!(!c.skipped("/healthz/x"));
        assert!(c.skipped("/public/a/b"));
        assert!(c.skipped("/docs-v2"));
        assert!(!c.skipped("/api"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn rejects_bad_configs_with_a_fix() {
        for (bad, needle) in [
            (r#"{"keys": []}"#, "add at least one key"),
            (r#"{"keys": [{"name": "a"}]}"#, "exactly one"),
            (
                r#"{"keys": [{"name": "a", "key": "k", "sha256": "00"}]}"#,
                "exactly one",
            ),
            (r#"{"keys": [{"name": "a", "sha256": "zz"}]}"#, "64 hex"),
            (
                r#"{"keys": [{"name": "a", "key": "k"}], "header": "x y"}"#,
                "header name",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k"}], "realm": "a\"b"}"#,
                "realm",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k"}], "nope": 1}"#,
                "unknown field",
            ),
        ] {
            let err = Config::parse(bad.as_bytes()).unwrap_err();
            assert!(err.0.contains(needle), "{bad}: {err}");
        }
    }
}
