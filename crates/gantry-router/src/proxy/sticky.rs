//! Sticky assignment: a user's cookie or header, hashed stably, picks the
//! same pool while that pool's share of the traffic does not shrink.

use super::live::Live;
use crate::Affinity;
use hyper::header::COOKIE;

/// FNV-1a with a final mix: a stable hash (the same in every router process
/// and version), so a user's key maps to the same point after a restart.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The value of cookie `name` in a request's Cookie headers.
fn cookie_value<'h>(headers: &'h hyper::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// A new random session id for a sticky cookie.
fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// The sticky key of a request, and the cookie to set when the router made one up.
pub(super) fn sticky_key(live: &Live, headers: &hyper::HeaderMap) -> (Option<u64>, Option<String>) {
    match &live.routing.affinity {
        None => (None, None),
        Some(Affinity::Header(name)) => (
            headers
                .get(name.as_str())
                .map(|v| stable_hash(v.as_bytes())),
            None,
        ),
        Some(Affinity::Cookie(name)) => match cookie_value(headers, name) {
            Some(v) => (Some(stable_hash(v.as_bytes())), None),
            None => {
                let id = new_session_id();
                (
                    Some(stable_hash(id.as_bytes())),
                    Some(format!("{name}={id}; Path=/; HttpOnly; SameSite=Lax")),
                )
            }
        },
    }
}
