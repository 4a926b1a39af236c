//! Stable hashing and the deterministic random source the strategies use.
//!
//! Everything here gives the same output for the same input in every process, build and
//! machine (no per-process keys, no `std` hasher whose algorithm may change), so a `hash` group
//! sends a Call-ID to the same member on both nodes of a pair and after a restart. It must not
//! read a clock or the OS random source: randomness comes in as the call's `entropy`.

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: a bijection with full avalanche, so nearby inputs (FNV of
/// similar Call-IDs, sequential entropy) give unrelated outputs.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: a small deterministic generator seeded from a call's entropy.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// A value in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for any weight sum).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A uniform value in the open interval (0, 1) from 64 random bits.
pub fn unit_open(bits: u64) -> f64 {
    ((bits >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn unit_open_never_reaches_zero_or_one() {
        for bits in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            let u = unit_open(bits);
            assert!(u > 0.0 && u < 1.0, "{bits}: {u}");
        }
    }
}
