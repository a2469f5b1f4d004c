//! One bad host in a fleet canary. The fleet's verdict judges the sum of
//! every host's counts, which hides a release that fails on one host only
//! (a host-specific dependency, a drifted config). Each host's canary error
//! rate is tested against what the rest of the fleet's canary allows: the
//! rest's anytime-valid upper bound, doubled and at least half a point
//! higher ("much worse", not "a little unlucky"). The budget is a tenth of
//! the rollout's, split across hosts, so naming hosts adds at most α/10 of
//! false rollbacks.

use super::e_values::{log_evidence, upper_confidence};
use super::Counts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A host whose canary is much worse than the rest of the fleet's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutlierHost {
    pub host: String,
    pub errors: u64,
    pub requests: u64,
    /// The error rate the host was tested against (from the other hosts).
    pub tested_against: f64,
}

impl OutlierHost {
    pub fn describe(&self) -> String {
        format!(
            "the canary on host {} is much worse than on the rest of the fleet: {} errors in {} requests ({:.1}%), where the other hosts' canary allows at most {:.2}%",
            self.host,
            self.errors,
            self.requests,
            100.0 * self.errors as f64 / self.requests.max(1) as f64,
            100.0 * self.tested_against
        )
    }
}

/// The share of the rollout's false-rollback budget spent on naming hosts.
pub const OUTLIER_BUDGET_SHARE: f64 = 0.1;

/// The host whose canary errors most clearly exceed what the rest of the
/// fleet allows, if any does beyond doubt. `hosts` are canary counts since
/// the canary began; fewer than two hosts, or a host with fewer than
/// `min_requests`, are never judged.
pub fn outlier_host(
    hosts: &BTreeMap<String, Counts>,
    alpha: f64,
    min_requests: u64,
) -> Option<OutlierHost> {
    if hosts.len() < 2 {
        return None;
    }
    let budget = alpha * OUTLIER_BUDGET_SHARE / hosts.len() as f64;
    let (all_errors, all_requests) = hosts
        .values()
        .fold((0, 0), |(e, r), c| (e + c.errors, r + c.requests));
    let mut worst: Option<(f64, OutlierHost)> = None;
    for (host, c) in hosts {
        if c.requests < min_requests.max(1) {
            continue;
        }
        let (rest_errors, rest_requests) = (all_errors - c.errors, all_requests - c.requests);
        if rest_requests == 0 {
            continue;
        }
        // Half the host's budget bounds the rest; half tests the host.
        let rest_bound = upper_confidence(rest_errors, rest_requests, budget / 2.0);
        let p0 = (2.0 * rest_bound).max(rest_bound + 0.005).min(0.999);
        let evidence = log_evidence(c.errors.min(c.requests), c.requests, p0);
        if evidence >= (2.0 / budget).ln() && worst.as_ref().is_none_or(|(e, _)| evidence > *e) {
            worst = Some((
                evidence,
                OutlierHost {
                    host: host.clone(),
                    errors: c.errors,
                    requests: c.requests,
                    tested_against: p0,
                },
            ));
        }
    }
    worst.map(|(_, o)| o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(errors: u64, requests: u64) -> Counts {
        Counts {
            requests,
            errors,
            ..Counts::default()
        }
    }

    fn fleet(list: &[(u64, u64)]) -> BTreeMap<String, Counts> {
        list.iter()
            .enumerate()
            .map(|(i, (e, r))| (format!("h{}", i + 1), counts(*e, *r)))
            .collect()
    }

    #[test]
    fn one_host_failing_a_fifth_of_its_requests_is_named() {
        let hosts = fleet(&[(0, 400), (1, 400), (80, 400), (0, 400), (1, 400)]);
        let o = outlier_host(&hosts, 0.01, 50).expect("h3 is named");
        assert_eq!(o.host, "h3");
        assert!(o.describe().contains("host h3"), "{}", o.describe());
    }

    #[test]
    fn a_fleet_that_fails_alike_everywhere_names_no_host() {
        let hosts = fleet(&[(20, 400), (22, 400), (19, 400), (25, 400)]);
        assert_eq!(outlier_host(&hosts, 0.01, 50), None);
    }

    #[test]
    fn too_few_requests_or_one_host_is_never_judged() {
        assert_eq!(outlier_host(&fleet(&[(30, 30)]), 0.01, 10), None);
        assert_eq!(outlier_host(&fleet(&[(0, 400), (9, 9)]), 0.01, 10), None);
    }

    /// Every host drawing from the same rate: hosts are named in at most
    /// the budget's share of fleets (seeded: the same draws every run).
    #[test]
    fn hosts_alike_are_named_within_the_budget() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(12);
        let fleets = 2000;
        let mut named = 0;
        for f in 0..fleets {
            let rate = [0.0005, 0.002, 0.01, 0.04][f % 4];
            let hosts: BTreeMap<String, Counts> = (0..8)
                .map(|i| {
                    let n = 300 + rng.random_range(0..400);
                    let e = (0..n).filter(|_| rng.random::<f64>() < rate).count() as u64;
                    (format!("h{i}"), counts(e, n))
                })
                .collect();
            if outlier_host(&hosts, 0.01, 50).is_some() {
                named += 1;
            }
        }
        // The budget share is 0.1% of fleets: 2 of 2000.
        assert!(named <= 2, "{named} of {fleets} fleets had a host named");
    }
}
