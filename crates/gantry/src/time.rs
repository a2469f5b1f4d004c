//! Moments as the CLI prints them. The API sends milliseconds since the epoch;
//! tables show RFC 3339 to the second, event logs a wall clock to the millisecond.

use serde_json::Value;
use std::time::Duration;

/// `v` (milliseconds since the epoch) as RFC 3339 UTC, or `-` when absent.
pub fn time(v: &Value) -> String {
    v.as_i64()
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `v` as `HH:MM:SS.mmm` (UTC), for event logs.
pub fn clock(v: &Value) -> String {
    let t = time(v);
    let ms = v.as_i64().unwrap_or(0) % 1000;
    // 2026-11-22T15:04:05Z → 15:04:05.123
    t.get(11..19)
        .map(|hms| format!("{hms}.{ms:03}"))
        .unwrap_or(t)
}
