//! Untrusted report bytes made safe to hand to a parser.
//!
//! The XML and JSON parsers recurse once per level of nesting, so a small
//! file nested a few thousand levels deep overflows the thread's stack and
//! aborts the whole controller. Before any parser sees a report, its size is
//! bounded, its bytes are decoded to UTF-8 text (byte-order marks and UTF-16
//! included, as CI tools write them), and a flat, non-recursive scan measures
//! how deep it nests. The depth limits sit far below what the parsers' stack
//! can take: real reports nest about ten levels deep.

use super::parse::{err, ParseError};
use std::borrow::Cow;

/// The largest report accepted, in bytes (the API's body limit too).
pub const MAX_REPORT_BYTES: usize = 64 << 20;
/// The deepest element nesting accepted in an XML report (JUnit, Cobertura).
pub const MAX_XML_DEPTH: usize = 256;
/// The deepest array/object nesting accepted in a JSON report (SARIF);
/// below serde_json's own recursion limit of 128, so this check speaks first.
pub const MAX_JSON_DEPTH: usize = 64;
/// The most XML nodes (elements, text, comments) one report may hold: bounds
/// the parsed tree's memory, which is about 100 bytes a node.
pub const MAX_XML_NODES: u32 = 4_000_000;

/// Refuses a report larger than [`MAX_REPORT_BYTES`].
pub(super) fn check_size(format: &'static str, len: usize) -> Result<(), ParseError> {
    if len > MAX_REPORT_BYTES {
        return Err(err(
            format,
            format!(
                "the report is {len} bytes, larger than the limit of {} MiB",
                MAX_REPORT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// The report's text: UTF-8 with or without a byte-order mark, or UTF-16
/// (little- or big-endian) announced by its byte-order mark.
pub(super) fn decode<'a>(
    format: &'static str,
    bytes: &'a [u8],
) -> Result<Cow<'a, str>, ParseError> {
    check_size(format, bytes.len())?;
    let utf16 = |big_endian: bool| -> Result<Cow<'a, str>, ParseError> {
        let body = &bytes[2..];
        if body.len() % 2 != 0 {
            return Err(err(
                format,
                "not UTF-16 text: it starts with a UTF-16 byte-order mark but has an odd number of bytes",
            ));
        }
        let units = body.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|e| {
                err(
                    format,
                    format!(
                        "not UTF-16 text: unpaired surrogate {:#06x}",
                        e.unpaired_surrogate()
                    ),
                )
            })
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(false),
        [0xFE, 0xFF, ..] => utf16(true),
        _ => {
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|e| err(format, format!("not UTF-8 text: {e}")))
        }
    }
}

/// 1-based line of byte `at` in `text`, for error messages.
fn line_at(text: &[u8], at: usize) -> usize {
    1 + text[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The index just past the first `end` at or after `from`, if any.
fn past(text: &[u8], from: usize, end: &[u8]) -> Option<usize> {
    text.get(from..)?
        .windows(end.len())
        .position(|w| w == end)
        .map(|i| from + i + end.len())
}

/// The index of the first `>` at or after `from` outside a quoted value,
/// and whether a `[` (an internal DTD subset) came before it.
fn tag_end(text: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut quote = None;
    for (i, &b) in text.iter().enumerate().skip(from) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[') => return Some((i, true)),
            (None, b'>') => return Some((i, false)),
            _ => {}
        }
    }
    None
}

/// Checks an XML report before it is parsed: elements nest at most
/// [`MAX_XML_DEPTH`] deep, and a DOCTYPE names an external DTD at most (the
/// line Cobertura writes). An internal subset, where entities are declared,
/// is refused. The scan reads each byte once and never recurses; it knows
/// comments, CDATA sections, processing instructions and quoted attribute
/// values, so markup inside them is not counted. Anything it cannot make
/// sense of is left for the parser to refuse.
pub(super) fn check_xml(format: &'static str, text: &str) -> Result<(), ParseError> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(lt) = b[i..].iter().position(|&c| c == b'<').map(|p| i + p) {
        let rest = &b[lt..];
        let next = if rest.starts_with(b"<!--") {
            past(b, lt + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            past(b, lt + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            past(b, lt + 2, b"?>")
        } else if rest.starts_with(b"<!") {
            match tag_end(b, lt + 2) {
                Some((_, true)) if rest.starts_with(b"<!DOCTYPE") => {
                    return Err(err(
                        format,
                        format!(
                            "line {}: the DOCTYPE declares an internal subset ([…]); \
                             only a reference to an external DTD is accepted, and it is not fetched",
                            line_at(b, lt)
                        ),
                    ))
                }
                Some((gt, _)) => Some(gt + 1),
                None => None,
            }
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            past(b, lt + 2, b">")
        } else {
            // A start tag; `[` inside one is no DTD, so only `>` ends it.
            let mut end = tag_end(b, lt + 1);
            while let Some((at, true)) = end {
                end = tag_end(b, at + 1);
            }
            match end {
                Some((gt, _)) => {
                    if b[gt - 1] != b'/' {
                        depth += 1;
                        if depth > MAX_XML_DEPTH {
                            return Err(err(
                                format,
                                format!(
                                    "line {}: elements are nested more than {MAX_XML_DEPTH} levels deep; \
                                     refused before parsing",
                                    line_at(b, lt)
                                ),
                            ));
                        }
                    }
                    Some(gt + 1)
                }
                None => None,
            }
        };
        // Unterminated markup: everything before it was counted, and the
        // parser stops there with its own error.
        let Some(next) = next else { break };
        i = next;
    }
    Ok(())
}

/// Checks a JSON report before it is parsed: arrays and objects nest at
/// most [`MAX_JSON_DEPTH`] deep. One pass over the bytes, skipping strings.
pub(super) fn check_json(format: &'static str, text: &str) -> Result<(), ParseError> {
    let b = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in b.iter().enumerate() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(err(
                        format,
                        format!(
                            "line {}: arrays and objects are nested more than {MAX_JSON_DEPTH} levels deep; \
                             refused before parsing",
                            line_at(b, i)
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
