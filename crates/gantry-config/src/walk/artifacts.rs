//! Decoding `[artifacts]`: how large a release archive may unpack.

use super::{describe, join, Val, Walker};
use crate::ArtifactLimits;
use toml::de::DeValue;

/// Units a size may be written in, with their factors. Binary and decimal
/// both, since people write either.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

pub(super) fn decode_artifacts(w: &mut Walker<'_>, v: &Val<'_>) -> Option<ArtifactLimits> {
    let t = w.table(v, "artifacts")?;
    w.check_keys::<crate::schema::ArtifactsSection>(t, "artifacts");
    let standard = ArtifactLimits::standard();
    let size = match t.get("max_unpacked_size") {
        Some(v) => size(w, v, &join("artifacts", "max_unpacked_size")),
        None => Some(standard.max_unpacked_bytes),
    };
    let entries = match t.get("max_entries") {
        Some(v) => w
            .count::<crate::schema::ArtifactsSection>(v, "artifacts", "max_entries")
            .map(u64::from),
        None => Some(standard.max_entries),
    };
    Some(ArtifactLimits {
        max_unpacked_bytes: size?,
        max_entries: entries?,
    })
}

/// A size in bytes: an integer, or a string such as "512MiB" or "2 GB".
pub(super) fn size(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<u64> {
    let expected = "expected a size such as \"512MiB\" or \"2GiB\" (units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), or a number of bytes";
    let bytes = match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .and_then(|n| u64::try_from(n).ok()),
        DeValue::String(s) => parse_size(s),
        other => {
            w.error(
                v.span(),
                path,
                format!("{expected}, found {}", describe(other)),
            );
            return None;
        }
    };
    match bytes {
        Some(0) => {
            w.error(v.span(), path, "must be more than zero bytes");
            None
        }
        Some(n) => Some(n),
        None => {
            w.error(v.span(), path, expected);
            None
        }
    }
}

/// `"2GiB"`, `"512 MiB"`, `"100MB"`, `"4096"` → bytes; `None` if malformed or too large.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Some(number);
    }
    let factor = SIZE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))?
        .1;
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1kib"), Some(1024));
        assert_eq!(parse_size("1.5GiB"), None);
        assert_eq!(parse_size("GiB"), None);
        assert_eq!(parse_size("2 parsecs"), None);
        assert_eq!(parse_size("99999999999TiB"), None);
    }
}
