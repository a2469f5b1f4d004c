//! Where a diagnostic points in the source: line, column, the line's text,
//! and the allowed key a mistyped one was probably meant to be.

use super::*;

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, source[line_start..offset].chars().count() + 1)
}

/// The text of the line `span` starts on (without its line ending) and how
/// many of its characters the span covers there (a span running onto later
/// lines is cut at the end of its first).
pub(super) fn span_on_line(source: &str, span: &Range<usize>) -> (String, usize) {
    let start = floor_char_boundary(source, span.start.min(source.len()));
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = &source[line_start..line_end];
    let line = line.strip_suffix('\r').unwrap_or(line);
    let end = floor_char_boundary(source, span.end.min(line_start + line.len()).max(start));
    (line.to_owned(), source[start..end].chars().count())
}

/// The nearest char boundary at or before `at` (spans from the parser may
/// point inside a multi-byte character of invalid input).
fn floor_char_boundary(source: &str, mut at: usize) -> usize {
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The allowed key closest to a mistyped one, if it is plausibly a typo.
pub(super) fn closest<'a>(key: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(key, a), a.as_str()))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}
