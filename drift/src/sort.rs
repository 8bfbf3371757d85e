//! Sorting columns of floats fast: an LSD radix sort on the IEEE-754 bits.
//!
//! A drift report sorts every column of both datasets (the two-sample tests
//! compare empirical CDFs); for a million values a radix sort is several
//! times faster than a comparison sort, and passes whose digit is the same
//! for every value (common: the exponent bits of a feature) are skipped.

/// The finite values of `values`, sorted ascending (NaN and ±∞ dropped).
pub fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let keys: Vec<u64> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| key(v))
        .collect();
    radix_sort(keys).into_iter().map(value).collect()
}

const DIGIT_BITS: u32 = 11;
const BUCKETS: usize = 1 << DIGIT_BITS;
const PASSES: usize = 64_usize.div_ceil(DIGIT_BITS as usize);

/// An order-preserving map from floats to unsigned integers: flip every bit
/// of a negative number, only the sign bit of a positive one.
fn key(v: f64) -> u64 {
    // -0.0 and 0.0 compare equal; give them one key.
    let bits = if v == 0.0 { 0 } else { v.to_bits() };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn value(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

fn radix_sort(mut keys: Vec<u64>) -> Vec<u64> {
    if keys.len() < 256 {
        keys.sort_unstable();
        return keys;
    }
    // Every pass's histogram from one read of the data.
    let mut counts = vec![[0usize; BUCKETS]; PASSES];
    for &k in &keys {
        for (pass, count) in counts.iter_mut().enumerate() {
            count[digit(k, pass)] += 1;
        }
    }
    let mut scratch = vec![0u64; keys.len()];
    for (pass, count) in counts.iter().enumerate() {
        if count.contains(&keys.len()) {
            continue;
        }
        let mut offsets = [0usize; BUCKETS];
        let mut total = 0;
        for (offset, &c) in offsets.iter_mut().zip(count.iter()) {
            *offset = total;
            total += c;
        }
        for &k in &keys {
            let d = digit(k, pass);
            scratch[offsets[d]] = k;
            offsets[d] += 1;
        }
        std::mem::swap(&mut keys, &mut scratch);
    }
    keys
}

fn digit(k: u64, pass: usize) -> usize {
    ((k >> (pass as u32 * DIGIT_BITS)) & (BUCKETS as u64 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn sorts_like_a_comparison_sort(values in prop::collection::vec(prop::num::f64::ANY, 0..2_000)) {
            let mut expected: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            expected.sort_by(f64::total_cmp);
            let got = sorted_finite(&values);
            prop_assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                // -0.0 comes back as 0.0; they are equal.
                prop_assert!(g == e, "{} != {}", g, e);
            }
        }
    }

    #[test]
    fn large_inputs_sort() {
        let values: Vec<f64> = (0..100_000)
            .map(|i| ((i * 7919) % 100_003) as f64 * if i % 3 == 0 { -1.5 } else { 0.25 })
            .collect();
        let got = sorted_finite(&values);
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(got.len(), values.len());
    }
}
