//! A pool's latency histogram across process lines: the router encodes its
//! HDR histogram as bounded buckets ([`encode`]), and whoever holds several
//! routers' buckets (the controller, over a fleet) merges them into one
//! histogram to read percentiles from ([`merge`]). Both ends live here so
//! the encoding and its reading cannot drift apart.

use crate::{LatencyHistogram, MAX_LATENCY_BUCKETS, MAX_LATENCY_US};

/// 1 µs to 1 h at `digits` significant digits (1 to 3); longer answers are
/// clamped to 1 h. (An auto-resizing histogram would clamp everything:
/// saturating_record does not resize.)
pub fn latency_histogram(digits: u8) -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, MAX_LATENCY_US, digits.clamp(1, 3))
        .expect("static bounds are valid")
}

/// `h` as its non-empty buckets, at the most significant digits (3, 2, 1)
/// that fit [`MAX_LATENCY_BUCKETS`]: at 1 digit the whole range has fewer
/// buckets than that, so the answer is always bounded.
pub fn encode(h: &hdrhistogram::Histogram<u64>) -> LatencyHistogram {
    let buckets = |h: &hdrhistogram::Histogram<u64>| -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    };
    let mut encoded = LatencyHistogram {
        significant_digits: 3,
        buckets: buckets(h),
    };
    for digits in [2, 1] {
        if encoded.buckets.len() <= MAX_LATENCY_BUCKETS {
            break;
        }
        let mut coarse = latency_histogram(digits);
        for &(value, count) in &encoded.buckets {
            // Values are within the same bounds, so recording cannot fail.
            let _ = coarse.record_n(value, count);
        }
        encoded = LatencyHistogram {
            significant_digits: digits,
            buckets: buckets(&coarse),
        };
    }
    encoded
}

/// Several routers' histograms as one (3 significant digits; a coarser
/// input keeps its own precision). Each is checked first
/// ([`LatencyHistogram::check`]); the error names what was wrong.
pub fn merge<'a>(
    histograms: impl IntoIterator<Item = &'a LatencyHistogram>,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut merged = latency_histogram(3);
    for h in histograms {
        h.check()?;
        for &(value, count) in &h.buckets {
            merged
                .record_n(value, count)
                .map_err(|e| format!("latency_histogram.buckets: {value} µs: {e:?}"))?;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_sent_whole_when_small_and_coarsened_within_the_bound_when_not() {
        let mut h = latency_histogram(3);
        h.record_n(10_000, 1000).unwrap();
        h.record_n(500_000, 10).unwrap();
        let small = encode(&h);
        assert_eq!(small.significant_digits, 3);
        assert_eq!(small.buckets.len(), 2);
        assert_eq!(small.total(), 1010);
        // Read back, the percentiles are the router's own.
        let back = merge([&small]).unwrap();
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));

        // Every 7th microsecond from 1 µs to 200 ms: far more buckets than the bound.
        let mut wide = latency_histogram(3);
        for us in (1..200_000).step_by(7) {
            wide.record(us).unwrap();
        }
        let coarse = encode(&wide);
        assert!(
            coarse.significant_digits < 3,
            "{}",
            coarse.significant_digits
        );
        assert!(coarse.buckets.len() <= MAX_LATENCY_BUCKETS);
        assert_eq!(coarse.total(), wide.len());
        // The percentiles stay within the coarser precision.
        let back = merge([&coarse]).unwrap();
        let (want, got) = (
            wide.value_at_quantile(0.99) as f64,
            back.value_at_quantile(0.99) as f64,
        );
        assert!((got - want).abs() / want < 0.07, "{got} vs {want}");
    }

    #[test]
    fn even_the_widest_histogram_fits_the_bound_at_one_digit() {
        let mut every = latency_histogram(3);
        let mut v = 1u64;
        while v <= MAX_LATENCY_US {
            every.record(v).unwrap();
            v = v + v / 2000 + 1;
        }
        let encoded = encode(&every);
        assert!(
            encoded.buckets.len() <= MAX_LATENCY_BUCKETS,
            "{}",
            encoded.buckets.len()
        );
        assert_eq!(encoded.total(), every.len());
    }

    #[test]
    fn bad_histograms_are_refused_naming_the_field() {
        let bad = |buckets: Vec<(u64, u64)>, digits| {
            merge([&LatencyHistogram {
                significant_digits: digits,
                buckets,
            }])
            .unwrap_err()
        };
        assert!(bad(vec![(0, 1)], 3).contains("not within 1..="));
        assert!(bad(vec![(MAX_LATENCY_US + 1, 1)], 3).contains("not within 1..="));
        assert!(bad(vec![(5, 1), (5, 1)], 3).contains("ascending"));
        assert!(bad(vec![(5, u64::MAX), (6, 1)], 3).contains("overflow"));
        assert!(bad(vec![(1, 1)], 9).contains("significant_digits"));
        let too_many = (1..=MAX_LATENCY_BUCKETS as u64 + 1)
            .map(|v| (v, 1))
            .collect();
        assert!(bad(too_many, 3).contains("at most 512"));
    }
}
