//! Configuration errors and their positions.
//!
//! Every error names the file, a 1-based line and column, and the key it concerns, in the
//! `FILE:LINE:COLUMN: KEY: MESSAGE` shape that editors and `grep -n` users already read, so an
//! administrator can jump to each problem. Positions come from byte spans that the TOML parser
//! records; this module turns them into lines and columns against the text that was parsed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::locate;

/// The key of an error that concerns no particular key, such as an unreadable file.
pub(super) const NO_KEY: &str = "-";

/// One problem in a configuration file.
///
/// `key` is the dotted path of the offending key: tables by name, array-of-tables entries by
/// their 0-based position in the file, e.g. `cluster.name`, `timing.deadtime`, `link[0].baud`,
/// `node[1].links.lan0.address`; `-` when no key applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {}: {}", .file.display(), .line, .column, .key, .message)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based column in characters; 0 when the file could not be read at all.
    pub column: usize,
    /// Dotted key path, see the type documentation.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in a configuration file, sorted by position. Never empty.
///
/// `Display` prints one [`ConfigError`] per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The errors, sorted by line and column.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// Sorts by position so that the report reads top-down like the file; the sort is stable so
    /// errors found at one position keep the order in which they were checked.
    pub(super) fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line, e.column));
        Self { errors }
    }

    /// The file could not be read; there is no position to give.
    pub(super) fn unreadable(file: &Path, source: &std::io::Error) -> Self {
        Self::new(vec![ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key: NO_KEY.to_owned(),
            message: format!("cannot read the configuration file: {source}"),
        }])
    }

    /// A TOML syntax error or a serde shape error (unknown key, wrong type, missing key).
    pub(super) fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> Self {
        let span = error.span().unwrap_or(0..0);
        // toml's messages put what was expected on a second line; one line per error keeps the
        // report greppable.
        let message = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let key = locate::key_for(text, span.clone(), &message);
        Self::new(vec![at(file, text, span, key, message)])
    }
}

/// Builds an error located at the start of `span` in `text`.
pub(super) fn at(
    file: &Path,
    text: &str,
    span: Range<usize>,
    key: String,
    message: String,
) -> ConfigError {
    let (line, column) = line_column(text, span.start);
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset`. Offsets past the end or inside a
/// multi-byte character are clamped, since a position slightly off beats a panic on a report.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one_and_in_characters() {
        let text = "a = 1\nb = \"é\" x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes but one column.
        let x = text.find('x').unwrap_or_default();
        assert_eq!(line_column(text, x), (2, 9));
        assert_eq!(line_column(text, text.len()), (3, 1));
        assert_eq!(line_column(text, text.len() + 10), (3, 1));
        // Inside "é": clamped back to its start.
        let e = text.find('é').unwrap_or_default();
        assert_eq!(line_column(text, e + 1), (2, 6));
    }

    #[test]
    fn display_is_one_error_per_line_sorted_by_position() {
        let e = |line, column, key: &str| ConfigError {
            file: PathBuf::from("/etc/wk.toml"),
            line,
            column,
            key: key.to_owned(),
            message: "bad".to_owned(),
        };
        let errors = ConfigErrors::new(vec![e(9, 1, "b"), e(2, 7, "a")]);
        assert_eq!(
            errors.to_string(),
            "/etc/wk.toml:2:7: a: bad\n/etc/wk.toml:9:1: b: bad"
        );
    }
}
