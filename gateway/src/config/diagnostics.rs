//! Problems found in a config file, each with its place (key path, line, column) and a fix, rendered
//! the way a compiler reports errors.

use std::fmt;

use super::source_map::SourceMap;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Key path of the offending value, like `listeners[0].routes[2].cluster`; empty for the whole file.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub fix: Option<String>,
}

impl Diagnostic {
    /// A problem at a key path; the line is filled in later by [`Diagnostics::locate_all`].
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
            fix: None,
        }
    }

    /// Attach a suggested fix.
    #[must_use]
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Attach a known position (1-based line and column).
    #[must_use]
    pub fn with_position(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Write this problem as one block: `error:` line, `-->` place line, optional `= fix:` line.
    fn render_into(&self, out: &mut String, file_label: &str) {
        use fmt::Write as _;
        // Writing into a String cannot fail; the results are ignored for that reason.
        let _ = writeln!(out, "error: {}", self.message);
        let _ = write!(out, "  --> {file_label}");
        if let Some(line) = self.line {
            let _ = write!(out, ":{line}");
            if let Some(col) = self.column {
                let _ = write!(out, ":{col}");
            }
        }
        if !self.path.is_empty() {
            let _ = write!(out, " ({})", self.path);
        }
        out.push('\n');
        if let Some(fix) = &self.fix {
            let _ = writeln!(out, "  = fix: {fix}");
        }
    }
}

/// Every problem found in one config; a config with any problem is rejected whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// One block per problem, in file order, then a summary line naming `file_label`.
    pub fn render(&self, file_label: &str) -> String {
        let mut out = String::new();
        for d in &self.0 {
            d.render_into(&mut out, file_label);
            out.push('\n');
        }
        let n = self.0.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        out.push_str(&format!("{n} {noun} found in {file_label}\n"));
        out
    }

    /// Fill the line and column of every problem that has none from its key path, then sort the
    /// problems by position so that they read top to bottom like the file.
    #[must_use]
    pub fn locate_all(mut self, map: &SourceMap) -> Self {
        for d in &mut self.0 {
            if d.line.is_none() {
                if let Some((line, col)) = map.locate(&d.path) {
                    d.line = Some(line);
                    d.column = Some(col);
                }
            }
        }
        // Stable sort: problems without a position keep their order and go first (they concern
        // the file as a whole).
        self.0
            .sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
        self
    }

    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Add a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Iterate over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render("config").trim_end())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
pub(crate) fn closest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c.as_ref()), c.as_ref()))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_only() {
        let names = ["api", "web", "backend"];
        assert_eq!(closest("apx", &names).as_deref(), Some("api"));
        assert_eq!(closest("backedn", &names).as_deref(), Some("backend"));
        assert_eq!(closest("zzzzzz", &names), None);
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostics(vec![Diagnostic::at(
            "listeners[0].routes[1].cluster",
            "cluster `apx` is not defined",
        )
        .with_position(14, 18)
        .fix("define it under `clusters:`, or use one of: api, web")]);
        assert_eq!(
            d.render("sluice.yaml"),
            "error: cluster `apx` is not defined\n  \
             --> sluice.yaml:14:18 (listeners[0].routes[1].cluster)\n  \
             = fix: define it under `clusters:`, or use one of: api, web\n\n\
             1 problem found in sluice.yaml\n"
        );
    }

    #[test]
    fn renders_without_position_or_fix() {
        let d = Diagnostics(vec![
            Diagnostic::at("", "the file is empty"),
            Diagnostic::at("workers", "bad").with_position(3, 10),
        ]);
        let text = d.render("a.yaml");
        assert!(text.contains("error: the file is empty\n  --> a.yaml\n\n"));
        assert!(text.contains("  --> a.yaml:3:10 (workers)\n"));
        assert!(!text.contains("fix"));
        assert!(text.ends_with("2 problems found in a.yaml\n"));
    }
}
