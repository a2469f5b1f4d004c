//! The audit trail beyond appending: the checkpoint key (`audit.key`) and
//! the rate limit on recording refused, unauthenticated requests. Signing
//! checkpoints of the chain's head is the controller's
//! (`controller/audit.rs`).
//!
//! The key lives beside `admin.token`, outside the database, so a copy of
//! the database alone cannot forge checkpoints. Whoever can read the data
//! directory can read the key too: what protects the trail against them is
//! the checkpoints an auditor kept elsewhere (`gantry audit checkpoint`).

use gantry_core::audit::{AuditEntry, SigningKey};
use gantry_core::Millis;
use gantry_store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The checkpoint key's file in the data directory (0600, created on first start).
pub const KEY_FILE: &str = "audit.key";

/// How often the head is signed when it moved (also after each prune, and
/// whenever `GET /api/v1/audit/checkpoint` asks).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// Reads the Ed25519 key at `path` (32 bytes as hex), creating it first.
pub fn load_or_create_key(path: &Path) -> std::io::Result<SigningKey> {
    let text = crate::secret_file::load_or_create_token(path)?;
    let seed: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: expected an Ed25519 key as 64 hex characters",
                    path.display()
                ),
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// How many refusals of one peer are recorded one by one before the rest
/// are only counted, and how fast that allowance comes back.
#[derive(Debug, Clone, Copy)]
pub struct RefusalLimits {
    /// Records one peer may add at once.
    pub burst: u32,
    /// The allowance refills fully over this long; one summary record per
    /// peer per `window` says how many more were refused.
    pub window: Duration,
    /// Peers tracked at once; past this, new peers share one allowance.
    pub max_peers: usize,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        RefusalLimits {
            burst: 20,
            window: Duration::from_secs(60),
            max_peers: 10_000,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Refusals counted but not recorded since the last summary.
    suppressed: u64,
    since: Millis,
}

/// A token bucket per peer address for refused, unauthenticated requests:
/// a client without credentials cannot grow the audit trail faster than
/// `burst` records per `window` plus one summary record per `window`.
#[derive(Debug)]
pub struct RefusalLimiter {
    limits: RefusalLimits,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum RefusalVerdict {
    /// Record it.
    Record,
    /// Count it; `first` when it is the first counted since the last summary
    /// (the caller then schedules [`RefusalLimiter::flush`] after a window).
    Count { first: bool },
}

/// Stands for every peer once `max_peers` are tracked.
const OTHER_PEERS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

impl RefusalLimiter {
    pub fn new(limits: RefusalLimits) -> RefusalLimiter {
        RefusalLimiter {
            limits,
            peers: Mutex::default(),
        }
    }

    pub fn limits(&self) -> RefusalLimits {
        self.limits
    }

    /// The key `peer` is counted under.
    fn key(&self, peers: &mut HashMap<IpAddr, Bucket>, peer: IpAddr, now: Instant) -> IpAddr {
        if peers.contains_key(&peer) || peers.len() < self.limits.max_peers {
            return peer;
        }
        // Forget peers whose allowance has come back whole and owe no summary.
        let window = self.limits.window;
        peers.retain(|_, b| b.suppressed > 0 || now.duration_since(b.refilled) < window);
        if peers.len() < self.limits.max_peers {
            peer
        } else {
            OTHER_PEERS
        }
    }

    pub fn admit(&self, peer: IpAddr, now: Instant, at: Millis) -> RefusalVerdict {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.key(&mut peers, peer, now);
        let burst = f64::from(self.limits.burst);
        let bucket = peers.entry(key).or_insert(Bucket {
            tokens: burst,
            refilled: now,
            suppressed: 0,
            since: at,
        });
        let per_sec = burst / self.limits.window.as_secs_f64().max(0.001);
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return RefusalVerdict::Record;
        }
        bucket.suppressed += 1;
        if bucket.suppressed == 1 {
            bucket.since = at;
        }
        RefusalVerdict::Count {
            first: bucket.suppressed == 1,
        }
    }

    /// Records how many refusals from `peer` were counted and not recorded,
    /// in one record, and starts counting afresh.
    pub fn flush(&self, store: &dyn Store, peer: IpAddr, at: Millis) {
        let (count, since, key) = {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            let key = if peers.contains_key(&peer) {
                peer
            } else {
                OTHER_PEERS
            };
            match peers.get_mut(&key) {
                Some(b) if b.suppressed > 0 => (std::mem::take(&mut b.suppressed), b.since, key),
                _ => return,
            }
        };
        let from = if key == OTHER_PEERS {
            "other peers".to_owned()
        } else {
            peer.to_string()
        };
        let entry = AuditEntry {
            at,
            actor: "anonymous".to_owned(),
            action: "refused requests".to_owned(),
            subject: format!("{count} more refused from {from}"),
            outcome: "refused 401".to_owned(),
            detail: serde_json::json!({
                "peer": from,
                "count": count,
                "since": since,
                "until": at,
                "why": "refusals past the per-peer allowance are counted, not recorded one by one",
            })
            .to_string(),
        };
        if let Err(e) = store.append_audit(entry) {
            tracing::error!(error = %e, "cannot write the audit record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, max_peers: usize) -> RefusalLimiter {
        RefusalLimiter::new(RefusalLimits {
            burst,
            window: Duration::from_secs(60),
            max_peers,
        })
    }

    #[test]
    fn a_peer_gets_its_burst_then_is_counted_and_refills_over_the_window() {
        let l = limiter(3, 10);
        let (p, t0) = ("10.0.0.1".parse().unwrap(), Instant::now());
        let verdicts: Vec<_> = (0..6).map(|_| l.admit(p, t0, 0)).collect();
        assert_eq!(
            verdicts,
            [
                RefusalVerdict::Record,
                RefusalVerdict::Record,
                RefusalVerdict::Record,
                RefusalVerdict::Count { first: true },
                RefusalVerdict::Count { first: false },
                RefusalVerdict::Count { first: false },
            ]
        );
        // Another peer has its own allowance; a third of the window brings one back.
        assert_eq!(
            l.admit("10.0.0.2".parse().unwrap(), t0, 0),
            RefusalVerdict::Record
        );
        assert_eq!(
            l.admit(p, t0 + Duration::from_secs(20), 0),
            RefusalVerdict::Record
        );
        assert_eq!(
            l.admit(p, t0 + Duration::from_secs(20), 0),
            RefusalVerdict::Count { first: false }
        );
    }

    #[test]
    fn the_summary_says_how_many_and_from_whom_once() {
        let store = gantry_store::SqliteStore::in_memory().unwrap();
        let l = limiter(1, 10);
        let (p, t0): (IpAddr, _) = ("10.0.0.1".parse().unwrap(), Instant::now());
        for _ in 0..5 {
            l.admit(p, t0, 7);
        }
        l.flush(&store, p, 9);
        l.flush(&store, p, 10);
        let records = store.audit_records(0, 10).unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].entry.subject, "4 more refused from 10.0.0.1");
        // Counting starts afresh: the next one past the allowance is a first again.
        assert_eq!(l.admit(p, t0, 11), RefusalVerdict::Count { first: true });
    }

    #[test]
    fn past_the_peer_limit_new_peers_share_one_allowance() {
        let l = limiter(1, 2);
        let t0 = Instant::now();
        for last in 1..=2u8 {
            let p = IpAddr::from([10, 0, 0, last]);
            assert_eq!(l.admit(p, t0, 0), RefusalVerdict::Record);
        }
        assert_eq!(
            l.admit(IpAddr::from([10, 0, 0, 3]), t0, 0),
            RefusalVerdict::Record
        );
        assert_eq!(
            l.admit(IpAddr::from([10, 0, 0, 4]), t0, 0),
            RefusalVerdict::Count { first: true }
        );
        assert!(l.peers.lock().unwrap().len() <= 3);
    }
}
