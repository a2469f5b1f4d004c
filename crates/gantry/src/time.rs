//! Moments as the CLI prints them. The API sends milliseconds since the epoch;
//! tables show RFC 3339 to the second, event logs a wall clock to the millisecond.

use gantry_core::Millis;
use std::time::Duration;

/// `ms` (since the epoch) as RFC 3339 UTC, or `-` when absent.
pub fn time(ms: impl Into<Option<Millis>>) -> String {
    ms.into()
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `ms` as RFC 3339 UTC to the millisecond, for logs.
pub fn time_ms(ms: Millis) -> String {
    time(ms).replace('Z', &format!(".{:03}Z", ms.rem_euclid(1000)))
}

/// `ms` as `HH:MM:SS.mmm` (UTC), for event logs.
pub fn clock(ms: Millis) -> String {
    let t = time(ms);
    // 2026-11-22T15:04:05Z → 15:04:05.123
    t.get(11..19)
        .map(|hms| format!("{hms}.{:03}", ms.rem_euclid(1000)))
        .unwrap_or(t)
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// `--since`: a duration ago (`15m`, `2h`) or an RFC 3339 time, in ms.
pub fn since(s: &str) -> Result<Millis, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as Millis;
        return Ok(now - d.as_millis() as Millis);
    }
    gantry_core::time::parse_rfc3339(s).map_err(|_| {
        format!("{s:?} is neither a duration (e.g. 15m) nor an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)")
    })
}
