//! Plugins: names, where the code comes from (a local file, or a URL pinned by sha256), limits.

use super::{http_url_problem, Checker};
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{PluginConfig, PluginLimits};
use crate::config::units::Size;

/// Less memory than this cannot hold even a minimal wasm module plus its stack.
const MIN_PLUGIN_MEMORY: Size = Size::mib(1);
/// wasm32 addresses 4 GiB at most.
const MAX_PLUGIN_MEMORY: Size = Size::mib(4096);

impl Checker<'_> {
    pub(super) fn plugins(&mut self) {
        let file = self.file;
        self.unique_names(
            "plugins",
            "plugin",
            file.plugins.iter().map(|p| p.name.as_str()),
        );
        for (i, p) in file.plugins.iter().enumerate() {
            self.plugin(&format!("plugins[{i}]"), p);
        }
    }

    fn plugin(&mut self, path: &str, p: &PluginConfig) {
        match (&p.wasm, &p.url) {
            (Some(_), Some(_)) => self.push(
                Diagnostic::at(
                    path,
                    format!("plugin `{}` has both `wasm` and `url`", p.name),
                )
                .fix("keep `wasm:` for a local file, or `url:` + `sha256:` for remote code"),
            ),
            (None, None) => self.push(
                Diagnostic::at(path, format!("plugin `{}` has no code", p.name))
                    .fix("add `wasm: path/to/plugin.wasm`, or `url:` + `sha256:` for remote code"),
            ),
            (Some(w), None) => self.file_exists(format!("{path}.wasm"), w, "wasm file"),
            (None, Some(u)) => {
                if let Some(problem) = http_url_problem(u) {
                    self.push(
                        Diagnostic::at(format!("{path}.url"), problem)
                            .fix("write an http(s) URL to the .wasm file"),
                    );
                }
                if p.sha256.is_none() {
                    self.push(
                        Diagnostic::at(path, "remote plugin code needs `sha256:` to be checked against")
                            .fix("add `sha256:` with the 64 hex characters printed by `sha256sum plugin.wasm`"),
                    );
                }
            }
        }
        if let Some(h) = &p.sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.sha256"),
                        format!("sha256 `{h}` is not 64 hex characters"),
                    )
                    .fix("paste the digest printed by `sha256sum plugin.wasm`"),
                );
            }
        }
        self.plugin_limits(&format!("{path}.limits"), &p.limits);
        for (i, var) in p.allowed_env.iter().enumerate() {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                self.push(
                    Diagnostic::at(
                        format!("{path}.allowed_env[{i}]"),
                        format!("`{var}` is not an environment variable name"),
                    )
                    .fix("list variable names only, like `HOME`, without `=value`"),
                );
            }
        }
    }

    fn plugin_limits(&mut self, path: &str, l: &PluginLimits) {
        if l.memory < MIN_PLUGIN_MEMORY || l.memory > MAX_PLUGIN_MEMORY {
            self.push(
                Diagnostic::at(
                    format!("{path}.memory"),
                    format!("plugin memory limit {} is outside 1MiB..4GiB", l.memory),
                )
                .fix(
                    "set a size like `64MiB` (a wasm page is 64KiB; wasm32 addresses at most 4GiB)",
                ),
            );
        }
        if l.callback_timeout.get().is_zero() {
            self.push(
                Diagnostic::at(
                    format!("{path}.callback_timeout"),
                    "callback_timeout is 0, so every callback would time out",
                )
                .fix("set a duration like `100ms`"),
            );
        }
        if l.fuel == Some(0) {
            self.push(
                Diagnostic::at(
                    format!("{path}.fuel"),
                    "fuel is 0, so every callback would trap",
                )
                .fix("remove `fuel` for no instruction budget, or set a number of instructions"),
            );
        }
        if l.max_buffered_body.is_some_and(|s| s.bytes() == 0) {
            self.push(
                Diagnostic::at(
                    format!("{path}.max_buffered_body"),
                    "max_buffered_body is 0",
                )
                .fix("remove it for the default, or set a size like `1MiB`"),
            );
        }
    }
}
