//! Filter chains (listener and route): each entry names a registered native filter or a defined
//! wasm plugin, never both.

use super::{missing_ref_fix, Checker};
use crate::config::diagnostics::closest;
use crate::config::diagnostics::Diagnostic;
use crate::config::model::FilterRef;

impl Checker<'_> {
    pub(super) fn chain(&mut self, path: &str, chain: &[FilterRef]) {
        for (i, f) in chain.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match (&f.name, &f.plugin) {
                (Some(_), Some(_)) => self.push(
                    Diagnostic::at(p, "a chain entry has both `name` and `plugin`")
                        .fix("keep `name:` for a native filter or `plugin:` for a wasm plugin, not both"),
                ),
                (None, None) => self.push(
                    Diagnostic::at(p, "a chain entry has neither `name` nor `plugin`")
                        .fix("write `name: FILTER` for a native filter or `plugin: NAME` for a plugin defined under `plugins:`"),
                ),
                (Some(name), None) => self.native_ref(&format!("{p}.name"), name),
                (None, Some(plugin)) => self.plugin_ref(&format!("{p}.plugin"), plugin),
            }
        }
    }

    fn native_ref(&mut self, path: &str, name: &str) {
        if self.native_filters.contains(&name) {
            return;
        }
        let fix = if self.plugin_names.contains(&name) {
            format!("`{name}` is a plugin: write `plugin: {name}`")
        } else if self.native_filters.is_empty() {
            "this build registers no native filters; use a wasm plugin with `plugin:`".to_string()
        } else {
            let guess = match closest(name, self.native_filters) {
                Some(c) => format!("did you mean `{c}`? "),
                None => String::new(),
            };
            format!(
                "{guess}known native filters: {}",
                self.native_filters.join(", ")
            )
        };
        self.push(Diagnostic::at(path, format!("unknown native filter `{name}`")).fix(fix));
    }

    fn plugin_ref(&mut self, path: &str, plugin: &str) {
        if self.plugin_names.contains(&plugin) {
            return;
        }
        let fix = if self.native_filters.contains(&plugin) {
            format!("`{plugin}` is a native filter: write `name: {plugin}`")
        } else {
            missing_ref_fix(plugin, &self.plugin_names, "plugins")
        };
        self.push(Diagnostic::at(path, format!("plugin `{plugin}` is not defined")).fix(fix));
    }
}
