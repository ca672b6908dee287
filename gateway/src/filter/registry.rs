//! Filter factories registered by name. A factory validates its config when a snapshot is built
//! (so `sluice check` reports a bad filter config with its place in the file) and returns a ready
//! filter shared by every worker.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::HttpFilter;
use crate::services::Services;

/// What a factory may use while it builds a filter.
pub struct BuildContext<'a> {
    /// Directory of the config file: relative paths in filter config are relative to it.
    pub base_dir: &'a Path,
    /// State that outlives a snapshot (rate-limit buckets, the ban list, metrics).
    pub services: &'a Arc<Services>,
    /// A stable key for this use of the filter (`listener/public/filters/1`), for state that must
    /// survive reloads (token buckets keep their level when the config is unchanged).
    pub key: &'a str,
}

/// Builds a filter from its config (`None` when the chain entry has no `config:`).
pub trait FilterFactory: Send + Sync {
    /// # Errors
    /// A message saying what is wrong with the config and how to fix it.
    fn create(
        &self,
        config: Option<&serde_json::Value>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, String>;
}

impl<F> FilterFactory for F
where
    F: Fn(Option<&serde_json::Value>, &BuildContext<'_>) -> Result<Arc<dyn HttpFilter>, String>
        + Send
        + Sync,
{
    fn create(
        &self,
        config: Option<&serde_json::Value>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn HttpFilter>, String> {
        self(config, cx)
    }
}

/// Native filters by name.
#[derive(Clone, Default)]
pub struct FilterRegistry {
    factories: HashMap<String, Arc<dyn FilterFactory>>,
}

impl FilterRegistry {
    pub fn new() -> Self {
        FilterRegistry::default()
    }

    /// The registry with every built-in filter.
    pub fn builtin() -> Self {
        let mut r = FilterRegistry::new();
        crate::filter::builtin::register_all(&mut r);
        r
    }

    /// Register (or replace) a factory under `name`.
    pub fn register(&mut self, name: &str, factory: impl FilterFactory + 'static) {
        self.factories.insert(name.to_string(), Arc::new(factory));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn FilterFactory>> {
        self.factories.get(name)
    }

    /// Names, sorted (for error messages: "known filters are ...").
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// Deserialize a filter's config (absent = `{}`) into its typed form, with the serde path of the
/// problem in the message.
///
/// # Errors
/// The serde error, prefixed with the key path inside `config`.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    config: Option<&serde_json::Value>,
) -> Result<T, String> {
    let empty = serde_json::Value::Object(Default::default());
    let v = config.unwrap_or(&empty);
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}
