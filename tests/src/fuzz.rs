//! A differential fuzzer for convergence: seeded rounds of random file-system operations on a
//! small namespace, applied to a watched source while the real `syncd` replicates it with the
//! real rsync; after each round `syncctl wait-idle` must answer idle and the target must hold
//! exactly what the source holds (names, types, contents, symlink targets, permission bits),
//! names under the exclude pattern `*.tmp` left out on both sides.
//!
//! By role: `ops` (one operation: what it does, `Op::apply`, and how it reads, a shell-like
//! line that parses back), `model` (the source's namespace as the generator sees it),
//! `generate` (the `Round` generated from a seed and a round number on that model), `compare`
//! (every difference between two trees), `harness` (a target of each kind, a seed's rounds against the real daemon, the
//! failure report). Used by `tests/tests/fuzz.rs` (a few fixed seeds per target kind) and by
//! `tests/examples/fuzz.rs` (many seeds, `kill -9` at random moments, shrinking).
//!
//! Invariants: a round depends on the seed, its number and the namespace the earlier rounds
//! of that seed left, which depends on nothing but their operations; so every round replays
//! from the seed alone. The generator only emits operations that are valid on its model, and
//! the model is checked against the real source after every round, so an operation that fails
//! or a source that drifts from the model is a bug of the fuzzer, reported as such.

mod compare;
mod generate;
mod harness;
mod model;
mod ops;

pub use compare::*;
pub use generate::*;
pub use harness::*;
pub use model::*;
pub use ops::*;

/// A small deterministic generator (splitmix64): the same seed gives the same numbers on every
/// machine and every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of stream `stream` of `seed` (a round, a kill plan): streams of one seed
    /// are independent of each other.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_add(1).wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `xs`, None when it is empty.
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> Option<T> {
        if xs.is_empty() {
            None
        } else {
            Some(xs[self.below(xs.len())].clone())
        }
    }
}

/// `len` bytes of content drawn from `seed`: what a write of that seed puts in a file. Random
/// up to 64 KiB; a bigger file repeats that block with each block's number mixed into its first
/// bytes (so no two blocks are equal), which keeps 8 MiB cheap in a debug build.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    const BLOCK: usize = 64 << 10;
    let mut r = Rng::new(seed, 0);
    let mut block = Vec::with_capacity(BLOCK + 8);
    while block.len() < len.min(BLOCK) {
        block.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    block.truncate(len.min(BLOCK));
    let mut out = Vec::with_capacity(len);
    for n in 0u64.. {
        let start = out.len();
        if start == len {
            break;
        }
        out.extend_from_slice(&block[..(len - start).min(BLOCK)]);
        for (o, b) in out[start..].iter_mut().zip(n.to_le_bytes()) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_streams_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r1 = Rng::new(7, 1);
        let mut r2 = Rng::new(7, 2);
        assert_ne!(r1.next_u64(), r2.next_u64());
        assert_eq!(content(1000, 3), content(1000, 3));
        assert_ne!(content(1000, 3), content(1000, 4));
        assert_eq!(content(13, 3).len(), 13);
        let big = content(200_000, 9);
        assert_eq!(big.len(), 200_000);
        assert_eq!(big[..1000], content(1000, 9)[..]);
        assert_ne!(big[..65_536], big[65_536..131_072], "blocks differ");
    }
}
