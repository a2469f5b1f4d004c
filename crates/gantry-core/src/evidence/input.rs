//! Untrusted report bytes made safe to hand to a parser.
//!
//! The XML and JSON parsers recurse once per level of nesting, so a small
//! file nested a few thousand levels deep overflows the thread's stack and
//! aborts the whole controller. Before any parser sees a report, its size is
//! bounded, its bytes are decoded to UTF-8 text (byte-order marks and UTF-16
//! included, as CI tools write them), and a flat, non-recursive scan measures
//! how deep it nests. The depth limits sit far below what the parsers' stack
//! can take: real reports nest about ten levels deep.

use super::error::{err, ParseError};
use std::borrow::Cow;

/// The largest report accepted, in bytes (the API's body limit too).
pub const MAX_REPORT_BYTES: usize = 64 << 20;
/// The deepest element nesting accepted in an XML report (JUnit, Cobertura).
pub const MAX_XML_DEPTH: usize = 256;
/// The deepest array/object nesting accepted in a JSON report (SARIF);
/// below serde_json's own recursion limit of 128, so this check speaks first.
pub const MAX_JSON_DEPTH: usize = 64;
/// The most XML nodes (elements, text, comments) one report may hold. The
/// parsed tree takes about 70 bytes a node, 15 times the bytes of `<a/>`, so
/// the size limit alone would let a report take a gigabyte. A 64 MiB
/// Cobertura report of real lines holds about 3 million nodes.
pub const MAX_XML_NODES: u32 = 4_000_000;
/// The most attributes one XML report may hold (about 70 bytes each parsed).
pub const MAX_XML_ATTRIBUTES: usize = 4_000_000;
/// The most values (array items, object entries) one JSON report may hold:
/// about 35 bytes each parsed, 17 times the bytes of `0,`.
pub const MAX_JSON_VALUES: usize = 4_000_000;

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
        if !body.len().is_multiple_of(2) {
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

/// Where a tag that opened before `from` ends: at the first `>` outside a
/// quoted value, or, for a DOCTYPE, at a `[` before it, which opens an
/// internal subset. Counts the `=` on the way: the tag's attributes.
struct TagEnd {
    at: usize,
    internal_subset: bool,
    attributes: usize,
}

fn tag_end(text: &[u8], from: usize, doctype: bool) -> Option<TagEnd> {
    let mut quote = None;
    let mut attributes = 0;
    for (i, &b) in text.iter().enumerate().skip(from) {
        let end = |internal_subset| TagEnd {
            at: i,
            internal_subset,
            attributes,
        };
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'=') => attributes += 1,
            (None, b'[') if doctype => return Some(end(true)),
            (None, b'>') => return Some(end(false)),
            _ => {}
        }
    }
    None
}

fn too_many(format: &'static str, limit: usize, what: &str) -> ParseError {
    err(
        format,
        format!("the report has more than {limit} {what}; refused before parsing"),
    )
}

/// Checks an XML report before it is parsed: elements nest at most
/// [`MAX_XML_DEPTH`] deep, there are at most [`MAX_XML_NODES`] elements
/// and [`MAX_XML_ATTRIBUTES`] attributes, and a DOCTYPE names an external
/// DTD at most (the line Cobertura writes); an internal subset, where
/// entities are declared, is refused. The scan reads each byte once and
/// never recurses; it knows
/// comments, CDATA sections, processing instructions and quoted attribute
/// values, so markup inside them is not counted. Anything it cannot make
/// sense of is left for the parser to refuse.
pub(super) fn check_xml(format: &'static str, text: &str) -> Result<(), ParseError> {
    let b = text.as_bytes();
    let (mut depth, mut elements, mut attributes) = (0usize, 0usize, 0usize);
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
            let doctype = rest.starts_with(b"<!DOCTYPE");
            match tag_end(b, lt + 2, doctype) {
                Some(end) if end.internal_subset => {
                    return Err(err(
                        format,
                        format!(
                            "line {}: the DOCTYPE declares an internal subset ([…]); \
                             only a reference to an external DTD is accepted, and it is not fetched",
                            line_at(b, lt)
                        ),
                    ))
                }
                end => end.map(|end| end.at + 1),
            }
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            past(b, lt + 2, b">")
        } else {
            tag_end(b, lt + 1, false).map(|end| {
                elements += 1;
                attributes += end.attributes;
                let empty_element = b[end.at - 1] == b'/';
                depth += usize::from(!empty_element);
                end.at + 1
            })
        };
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
        if elements > MAX_XML_NODES as usize {
            return Err(too_many(format, MAX_XML_NODES as usize, "elements"));
        }
        if attributes > MAX_XML_ATTRIBUTES {
            return Err(too_many(format, MAX_XML_ATTRIBUTES, "attributes"));
        }
        // Unterminated markup: everything before it was counted, and the
        // parser stops there with its own error.
        let Some(next) = next else { break };
        i = next;
    }
    Ok(())
}

/// Checks a JSON report before it is parsed: arrays and objects nest at
/// most [`MAX_JSON_DEPTH`] deep and hold at most [`MAX_JSON_VALUES`] values
/// in all. One pass over the bytes, skipping strings.
pub(super) fn check_json(format: &'static str, text: &str) -> Result<(), ParseError> {
    let b = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    // Each value but the first in a container follows a comma, and each
    // container opens with a bracket: together they count every value.
    let mut values = 0usize;
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
            b',' => values += 1,
            b'[' | b'{' => {
                values += 1;
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
        if values > MAX_JSON_VALUES {
            return Err(too_many(format, MAX_JSON_VALUES, "values"));
        }
    }
    Ok(())
}
