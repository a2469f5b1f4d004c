//! The routing in force: swapped whole on each change (written to disk
//! first), read by every request, which picks its pool and upstream from it.

use super::counters::PoolCounters;
use super::RouterOptions;

/// Sticky hashes are spread over this many points.
pub(super) const STICKY_SCALE: u64 = 1 << 32;
use crate::{write_atomic, Routing, CONFIG_FILE};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub(super) struct State {
    /// The routing in force with each pool's counters, swapped whole.
    pub(super) live: RwLock<Arc<Live>>,
    /// Counters by pool name, kept across routings so figures keep adding up.
    pub(super) counters: Mutex<Vec<(String, Arc<PoolCounters>)>>,
    pub(super) next: AtomicU64,
    pub(super) options: RouterOptions,
    pub(super) access_log: Option<crate::access_log::AccessLog>,
}

/// A routing ready to serve: pools with their counters and the total weight.
pub(super) struct Live {
    pub(super) routing: Routing,
    pub(super) counters: Vec<Arc<PoolCounters>>,
    /// Each pool's upstreams as URI authorities, made once per routing.
    pub(super) authorities: Vec<Vec<hyper::http::uri::Authority>>,
    /// Each pool's name (its release) and role, for the access log.
    pub(super) names: Vec<(Arc<str>, &'static str)>,
    pub(super) total_weight: u64,
}

impl State {
    fn counters(&self, pool: &str) -> Arc<PoolCounters> {
        let mut all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = all.iter().find(|(n, _)| n == pool) {
            return c.clone();
        }
        let c = Arc::new(PoolCounters::new());
        all.push((pool.to_owned(), c.clone()));
        c
    }

    pub(super) fn make_live(&self, routing: Routing) -> Live {
        let counters = routing
            .pools
            .iter()
            .map(|p| self.counters(&p.name))
            .collect();
        let total_weight = routing.pools.iter().map(|p| p.weight as u64).sum();
        let authorities = routing
            .pools
            .iter()
            .map(|p| {
                p.upstreams
                    .iter()
                    .map(|u| {
                        u.to_string()
                            .parse()
                            .expect("a socket address is a valid authority")
                    })
                    .collect()
            })
            .collect();
        let names = routing
            .pools
            .iter()
            .map(|p| (Arc::from(p.name.as_str()), role(&routing.pools, &p.name)))
            .collect();
        Live {
            routing,
            counters,
            authorities,
            names,
            total_weight,
        }
    }

    pub(super) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Picks a pool by weight and an upstream in it, round robin: indexes
    /// into the given snapshot, which the request keeps to its end. With a
    /// sticky key the pool follows from the key's hash instead of the turn.
    pub(super) fn pick(
        &self,
        live: Arc<Live>,
        sticky: Option<u64>,
    ) -> Option<(Arc<Live>, usize, usize)> {
        if live.total_weight == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut slot = match sticky {
            // A point on a fixed scale, so it lands in the same pool while
            // that pool's share of the total does not shrink.
            Some(h) => {
                ((h % STICKY_SCALE) as u128 * live.total_weight as u128 / STICKY_SCALE as u128)
                    as u64
            }
            None => n % live.total_weight,
        };
        let mut found = None;
        for (i, pool) in live.routing.pools.iter().enumerate() {
            if slot < pool.weight as u64 {
                found = Some((i, (n / live.total_weight) as usize % pool.upstreams.len()));
                break;
            }
            slot -= pool.weight as u64;
        }
        let (pool, upstream) = found?;
        Some((live, pool, upstream))
    }

    pub(super) fn apply(&self, routing: Routing) -> Result<(), String> {
        routing.validate().map_err(|e| e.to_string())?;
        let bytes = serde_json::to_vec_pretty(&routing).map_err(|e| e.to_string())?;
        // On disk first: a router restarted after this answer serves the same.
        write_atomic(&self.options.state_dir.join(CONFIG_FILE), &bytes)
            .map_err(|e| e.to_string())?;
        let live = Arc::new(self.make_live(routing));
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        Ok(())
    }
}

/// What a pool is in the routing in force: the only one, or of two or
/// more the oldest ("stable") and the newest ("canary"); "retired" when
/// no longer routed (its counts stay, as in `/stats`).
pub(super) fn role(routed: &[crate::Pool], name: &str) -> &'static str {
    match routed.iter().position(|p| p.name == name) {
        None => "retired",
        Some(i) if routed.len() > 1 && i + 1 == routed.len() => "canary",
        Some(_) => "stable",
    }
}
