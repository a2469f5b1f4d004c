//! What one look of the analysis costs with 20 metric query rules beside
//! the built-in rules: `queries::judge` on 20 readings plus `analyse_windows`
//! on the router counts, as the canary does at every look. The figure must
//! stay far below the look interval (1 s by default, 250 ms at the least).
//!
//! Then the same with 20 count rules (errors and totals from queries, for
//! both releases): each adds an error-ratio test and a comparison to the
//! analysis, the costlier part.
//!
//! Run: `cargo bench -p gantry-core --bench query_rules` (figures in docs/benchmarks.md).

use gantry_core::analysis::queries::{
    self, Condition, CountCondition, NoData, QueryReading, QueryRule, QueryState, Reading, Tally,
};
use gantry_core::analysis::{
    analyse_windows, analyse_with_counts, AnalysisPolicy, Baseline, Counts, Window,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let rules: Vec<QueryRule> = (0..20)
        .map(|i| QueryRule {
            name: format!("rule {i}"),
            query: format!("max(metric_{i}{{release=\"{{release}}\"}})"),
            condition: match i % 4 {
                0 => Condition::Above(100.0),
                1 => Condition::Below(1.0),
                2 => Condition::AboveBaseline(10.0),
                _ => Condition::BelowBaseline(0.8),
            },
            consecutive: 3,
            no_data: NoData::Wait,
            no_data_ms: 120_000,
        })
        .collect();
    let baseline_values: BTreeMap<String, f64> =
        rules.iter().map(|r| (r.name.clone(), 10.0)).collect();
    let readings: Vec<QueryReading> = rules
        .iter()
        .map(|r| QueryReading {
            rule: r.name.clone(),
            resolved: r.query.replace("{release}", "1.2.0"),
            reading: Reading::Value { value: 9.5 },
        })
        .collect();
    let policy = AnalysisPolicy {
        queries: rules.clone(),
        ..AnalysisPolicy::default()
    };
    let baseline = Baseline {
        requests: 100_000,
        errors: 100,
        p50_ms: 8.0,
        p99_ms: 20.0,
        queries: baseline_values.clone(),
    };
    let counts = |requests: u64, errors: u64| Counts {
        requests,
        errors,
        ..Counts::default()
    };
    let windows = [
        Window {
            canary: counts(2_000, 2),
            stable: counts(18_000, 18),
        },
        Window {
            canary: counts(10_000, 11),
            stable: counts(10_000, 9),
        },
    ];

    let looks = 20_000u32;
    let mut state = QueryState::default();
    let start = Instant::now();
    for n in 0..looks {
        let v = queries::judge(
            black_box(&rules),
            black_box(&baseline_values),
            black_box(&readings),
            &mut state,
            i64::from(n) * 1000,
        );
        black_box(v);
        black_box(analyse_windows(&policy, &baseline, black_box(&windows)));
    }
    let per_look = start.elapsed() / looks;
    let rules_only = {
        let start = Instant::now();
        for n in 0..looks {
            black_box(queries::judge(
                black_box(&rules),
                &baseline_values,
                &readings,
                &mut state,
                i64::from(n) * 1000,
            ));
        }
        start.elapsed() / looks
    };
    println!("20 query rules + the built-in rules, one look: {per_look:?} (the 20 query rules alone: {rules_only:?})");
    println!(
        "against a 250 ms look interval: {:.5}% of it; against 1 s: {:.5}%",
        100.0 * per_look.as_secs_f64() / 0.25,
        100.0 * per_look.as_secs_f64()
    );

    // 20 count rules, their counters rising by 1,000 events a look.
    let count_rules: Vec<QueryRule> = (0..20)
        .map(|i| QueryRule {
            name: format!("count {i}"),
            query: format!("sum(failed_{i}_total{{release=\"{{release}}\"}})"),
            condition: Condition::Counts(CountCondition {
                total: format!("sum(all_{i}_total{{release=\"{{release}}\"}})"),
                successes: false,
                max_ratio: Some(0.02),
                compare: true,
            }),
            consecutive: 1,
            no_data: NoData::Wait,
            no_data_ms: 120_000,
        })
        .collect();
    let policy = AnalysisPolicy {
        queries: count_rules.clone(),
        ..AnalysisPolicy::default()
    };
    let mut state = QueryState::default();
    let counters = |n: u32| -> Vec<QueryReading> {
        let t = f64::from(n) * 1_000.0;
        count_rules
            .iter()
            .map(|r| QueryReading {
                rule: r.name.clone(),
                resolved: r.query.clone(),
                reading: Reading::Counts {
                    new: Tally {
                        errors: t * 0.01,
                        total: t,
                    },
                    old: Tally {
                        errors: t * 0.09,
                        total: t * 9.0,
                    },
                },
            })
            .collect()
    };
    let looks = 5_000u32;
    let start = Instant::now();
    for n in 0..looks {
        if n == looks / 2 {
            state.close_count_windows();
        }
        let readings = counters(n + 1);
        black_box(queries::judge(
            &count_rules,
            &BTreeMap::new(),
            black_box(&readings),
            &mut state,
            i64::from(n) * 1000,
        ));
        let series = state.count_series(&count_rules);
        black_box(analyse_with_counts(
            &policy,
            &baseline,
            black_box(&windows),
            &series,
        ));
    }
    let per_look = start.elapsed() / looks;
    println!(
        "20 count rules + the built-in rules, one look: {per_look:?} ({:.4}% of a 250 ms look interval)",
        100.0 * per_look.as_secs_f64() / 0.25
    );
}
