//! The plugin configuration: which headers to change, in which direction, and how.

use serde::Deserialize;

/// What to do with one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace any existing values with this one (the default).
    #[default]
    Set,
    /// Add a value, keeping existing ones.
    Add,
    /// Remove the header; `value` must be absent.
    Remove,
    /// Set the header only when the message does not already have it.
    Default,
}

/// One header change as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Header name; stored lowercase, as HTTP/2 and proxy-wasm hosts expect.
    pub name: String,
    /// Header value (required except for `remove`).
    #[serde(default)]
    pub value: Option<String>,
    /// What to do (default `set`).
    #[serde(default)]
    pub action: Action,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    header: Option<String>,
    value: Option<String>,
    #[serde(default)]
    request: Vec<Rule>,
    #[serde(default)]
    response: Vec<Rule>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Changes applied to request headers before the upstream sees them.
    pub request: Vec<Rule>,
    /// Changes applied to response headers before the client sees them.
    pub response: Vec<Rule>,
}

/// Why a configuration was rejected; the text is logged by the plugin and shown by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// RFC 9110 token characters (a header name), excluding uppercase which HTTP/2 forbids.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// Visible ASCII, space and tab, no leading/trailing whitespace: what every HTTP version accepts.
fn valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && value.trim() == value
}

fn check(rule: &mut Rule, place: &str, index: usize) -> Result<(), ConfigError> {
    rule.name = rule.name.to_ascii_lowercase();
    let at = format!("{place}[{index}] ({})", rule.name);
    if !valid_name(&rule.name) || rule.name.starts_with(':') {
        return Err(ConfigError(format!(
            "{at}: `name` must be a header name (letters, digits, -), not a pseudo-header"
        )));
    }
    match (&rule.value, rule.action) {
        (Some(_), Action::Remove) => Err(ConfigError(format!(
            "{at}: `remove` takes no `value`; delete it"
        ))),
        (None, Action::Set | Action::Add | Action::Default) => Err(ConfigError(format!(
            "{at}: `value` is required unless `action: remove`"
        ))),
        (Some(v), _) if !valid_value(v) => Err(ConfigError(format!(
            "{at}: `value` must be printable ASCII without leading or trailing spaces"
        ))),
        _ => Ok(()),
    }
}

impl Config {
    /// Parses and validates the JSON configuration. An empty configuration is valid and does
    /// nothing.
    ///
    /// # Errors
    /// A [`ConfigError`] saying what is wrong and how to fix it.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError(format!("add-header config: {e}")))?;
        let mut response = Vec::new();
        match (raw.header, raw.value) {
            (Some(name), Some(value)) => response.push(Rule {
                name,
                value: Some(value),
                action: Action::Set,
            }),
            (None, None) => {}
            _ => {
                return Err(ConfigError(
                    "add-header config: `header` and `value` go together; give both or neither"
                        .into(),
                ))
            }
        }
        response.extend(raw.response);
        let mut config = Config {
            request: raw.request,
            response,
        };
        for (i, rule) in config.request.iter_mut().enumerate() {
            check(rule, "request", i)?;
        }
        for (i, rule) in config.response.iter_mut().enumerate() {
            check(rule, "response", i)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_sets_a_response_header() {
        let config = Config::parse(br#"{"header": "X-Hello", "value": "world"}"#).unwrap();
        assert_eq!(
            config.response,
            vec![Rule {
                name: "x-hello".into(),
                value: Some("world".into()),
                action: Action::Set
            }]
        );
        assert!(config.request.is_empty());
    }

    #[test]
    fn lists_keep_their_order_and_actions() {
        let config = Config::parse(
            br#"{"request": [{"name": "x-a", "value": "1", "action": "add"},
                             {"name": "x-b", "action": "remove"}],
                 "response": [{"name": "server", "value": "sluice", "action": "default"}]}"#,
        )
        .unwrap();
        assert_eq!(config.request.len(), 2);
        assert_eq!(config.request[0].action, Action::Add);
        assert_eq!(config.request[1].action, Action::Remove);
        assert_eq!(config.response[0].action, Action::Default);
    }

    #[test]
    fn empty_config_is_a_no_op() {
        assert_eq!(Config::parse(b"  ").unwrap(), Config::default());
    }

    #[test]
    fn rejects_bad_configs_with_a_fix() {
        for (bad, needle) in [
            (r#"{"header": "x"}"#, "go together"),
            (
                r#"{"request": [{"name": "x", "value": "1", "action": "remove"}]}"#,
                "takes no",
            ),
            (r#"{"request": [{"name": "x"}]}"#, "required"),
            (
                r#"{"request": [{"name": ":path", "value": "/"}]}"#,
                "pseudo-header",
            ),
            (
                r#"{"request": [{"name": "bad name", "value": "1"}]}"#,
                "header name",
            ),
            (
                r#"{"response": [{"name": "x", "value": "a\nb"}]}"#,
                "printable",
            ),
            (r#"{"unknown": 1}"#, "unknown field"),
        ] {
            let err = Config::parse(bad.as_bytes()).unwrap_err();
            assert!(err.0.contains(needle), "{bad}: {err}");
        }
    }
}
