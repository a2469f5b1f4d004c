//! How Gantry writes a moment and a duration for people: one place, so the
//! state machine, governance, reports and notices all read the same way.

use crate::domain::Millis;

/// `at` as an RFC 3339 UTC timestamp, to the second.
pub fn rfc3339(at: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in seconds: whole seconds as `5s`, anything else to a tenth (`2.5s`).
pub fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_and_durations() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(seconds(5000), "5s");
        assert_eq!(seconds(2500), "2.5s");
    }
}

/// An RFC 3339 UTC moment as people write it: `2026-12-01T10:00:00Z`, or
/// without its seconds (`2026-12-01T10:00Z`).
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    let full;
    let text = match s.strip_suffix('Z') {
        Some(head) if head.len() == 16 => {
            full = format!("{head}:00Z");
            full.as_str()
        }
        _ => s,
    };
    let at = humantime::parse_rfc3339(text).map_err(|_| {
        format!("{s:?} is not a UTC time; expected RFC 3339 such as \"2026-12-01T10:00Z\" or \"2026-12-01T10:00:00Z\"")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    Millis::try_from(ms).map_err(|_| format!("{s:?} is too far ahead"))
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn a_utc_moment_parses_with_or_without_seconds_and_anything_else_is_named() {
        assert_eq!(parse_rfc3339("1970-01-01T01:00Z"), Ok(3_600_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01Z"), Ok(3_601_000));
        let err = parse_rfc3339("tomorrow").unwrap_err();
        assert!(
            err.starts_with("\"tomorrow\" is not a UTC time; expected RFC 3339"),
            "{err}"
        );
        assert!(parse_rfc3339("2026-12-01T10:00+01:00").is_err());
    }
}
