//! Diagnostics shown as `cargo` shows them: the message, where it is, and
//! the source line with a caret under the offending span.
//!
//! The source line is echoed to a terminal, so whatever in it could drive the
//! terminal (control characters such as CR or ESC, bidirectional overrides)
//! is shown escaped; tabs become spaces so the caret lines up; a long line is
//! cut around the span.

use crate::{ConfigError, Diagnostic, Severity};
use std::fmt::Write as _;
use unicode_width::UnicodeWidthChar;

/// A tab is shown as this many spaces (as cargo does).
const TAB_WIDTH: usize = 4;
/// The most terminal columns of a source line shown; longer lines are cut.
const MAX_SHOWN: usize = 100;
/// Columns kept before the span when a long line is cut.
const CONTEXT_BEFORE: usize = 30;
/// Marks where a long line was cut.
const ELLIPSIS: &str = "...";

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl Diagnostic {
    /// The message, its location, and the source line with a caret under the
    /// span; several lines, without a final newline:
    ///
    /// ```text
    /// error: health.failure_threshold: expected an integer from 1 to 100
    ///   --> gantry.toml:10:21
    ///    |
    /// 10 | failure_threshold = 0
    ///    |                     ^
    /// ```
    ///
    /// `Display` keeps the one-line `file:line:column: error: …` form.
    pub fn render(&self) -> String {
        let mut out = format!("{}: ", self.severity.label());
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        let (shown, caret_at, carets) = self.shown_line();
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "\n{pad}--> {}:{}:{}\n{pad} |\n{} | {shown}\n{pad} | {}{}",
            self.file,
            self.line,
            self.column,
            self.line,
            " ".repeat(caret_at),
            "^".repeat(carets),
        );
        out
    }

    /// The source line as shown (escaped, tabs expanded, cut to
    /// [`MAX_SHOWN`]), the column the caret starts at in it and how many
    /// carets cover the span (at least one).
    fn shown_line(&self) -> (String, usize, usize) {
        let cells: Vec<(String, usize)> = self.source_line.chars().map(cell).collect();
        let width = |r: std::ops::Range<usize>| cells[r].iter().map(|c| c.1).sum::<usize>();
        let start = self.column.saturating_sub(1).min(cells.len());
        let end = (start + self.span_chars).min(cells.len());

        let (mut lo, mut hi) = (0, cells.len());
        if width(0..cells.len()) > MAX_SHOWN {
            lo = start;
            while lo > 0 && width(lo - 1..start) <= CONTEXT_BEFORE {
                lo -= 1;
            }
            hi = lo;
            while hi < cells.len() && width(lo..hi + 1) <= MAX_SHOWN {
                hi += 1;
            }
        }
        let mut shown = String::new();
        if lo > 0 {
            shown.push_str(ELLIPSIS);
        }
        for (text, _) in &cells[lo..hi] {
            shown.push_str(text);
        }
        if hi < cells.len() {
            shown.push_str(ELLIPSIS);
        }
        let prefix = if lo > 0 { ELLIPSIS.len() } else { 0 };
        let caret_at = prefix + width(lo..start);
        let carets = width(start..end.min(hi).max(start)).max(1);
        (shown, caret_at, carets)
    }
}

/// How one character of a source line is shown, and how many columns it takes.
fn cell(c: char) -> (String, usize) {
    if c == '\t' {
        (" ".repeat(TAB_WIDTH), TAB_WIDTH)
    } else if c.is_control() || drives_layout(c) {
        // As the CLI escapes what it prints (`\x1b`, `\u{202e}`).
        let escaped = if (c as u32) < 0x100 {
            format!("\\x{:02x}", c as u32)
        } else {
            format!("\\u{{{:x}}}", c as u32)
        };
        let width = escaped.len();
        (escaped, width)
    } else {
        (c.to_string(), c.width().unwrap_or(0))
    }
}

/// Invisible characters that reorder or break the line a terminal shows
/// (bidirectional controls, as in "Trojan Source", and the Unicode line and
/// paragraph separators), so an echoed line could look unlike the file.
fn drives_layout(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

impl ConfigError {
    /// Every diagnostic in the form of [`Diagnostic::render`], errors first,
    /// separated by blank lines, then a count; an unreadable file in one line.
    pub fn render(&self) -> String {
        match self {
            ConfigError::Unreadable { .. } => format!("error: {self}"),
            ConfigError::Invalid {
                file,
                errors,
                warnings,
            } => {
                let mut out = String::new();
                for d in errors.iter().chain(warnings) {
                    out.push_str(&d.render());
                    out.push_str("\n\n");
                }
                let _ = write!(
                    out,
                    "{file}: {} error(s), {} warning(s)",
                    errors.len(),
                    warnings.len()
                );
                out
            }
        }
    }
}

#[cfg(test)]
mod tests;
