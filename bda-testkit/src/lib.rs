//! Test support for the bda crates: a dev-dependency only, never shipped.
//!
//! | module | holds |
//! |---|---|
//! | [`fd`] | central finite differences, and the one check of every method's hypergradient through the engine |
//! | [`idx`] | MNIST-format data of any size, written at test time |
//! | [`instance`] | random data hyper-cleaning instances |
//! | [`cuda`] | skipping a GPU test without CUDA, or failing it when `BDA_REQUIRE_CUDA` is set |
//! | [`cxx`] | building bda-gpu's C++ test parts and the fake CUDA libraries; running tests on the fake device |
//! | [`report`] | running the `bda` binary and comparing JSON reports |
//!
//! Shared here instead of `#[path]` includes between crates, so each piece has one home.
#![deny(missing_docs)]

pub mod cuda;
pub mod cxx;
pub mod fd;
pub mod idx;
pub mod instance;
pub mod report;

/// A deterministic generator (64-bit LCG, upper bits): the same numbers on every platform and
/// in every crate's tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi), rounded to f32 (so f32 and f64 code see the same inputs).
    pub fn range(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.uniform()) as f32
    }
    /// `n` values of [`Rng::range`].
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
    /// `n` values of [`Rng::range`], widened to f64.
    pub fn vec64(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| f64::from(self.range(lo, hi))).collect()
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
}

/// `max |got − want| / max |want|`: the error measure of every comparison in the tests.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

/// [`rel_err`] of an `f32` result against an `f64` reference.
pub fn rel_err32(got: &[f32], want: &[f64]) -> f64 {
    let got: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
    rel_err(&got, want)
}
