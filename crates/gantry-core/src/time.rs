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
