//! Random hyper-cleaning instances and their error measure, shared by the reference's own
//! finite-difference tests (`tests/hyperclean_reference.rs`) and bda-gpu's tests (included
//! there by path), which check the device backend against `bda_kernel::hyperclean::Reference`.
#![allow(dead_code)]

use bda_kernel::hyperclean::HypercleanData;

/// A random instance owning its data.
pub struct Problem {
    pub d: usize,
    pub c: usize,
    pub train_x: Vec<f32>,
    pub train_labels: Vec<u8>,
    pub val_x: Vec<f32>,
    pub val_labels: Vec<u8>,
    pub lambda: f32,
}

/// Deterministic generator (64-bit LCG, upper bits).
pub struct Rng(u64);

impl Rng {
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
    /// Uniform in [lo, hi), rounded to f32.
    pub fn range(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.uniform()) as f32
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
}

impl Problem {
    /// MNIST-like features (`k/255`), random labels.
    pub fn random(seed: u64, d: usize, c: usize, n_tr: usize, n_val: usize, lambda: f32) -> Self {
        let mut r = Rng::new(seed);
        let mut feats =
            |n: usize| -> Vec<f32> { (0..n * d).map(|_| r.below(256) as f32 / 255.0).collect() };
        let train_x = feats(n_tr);
        let val_x = feats(n_val);
        let mut r = Rng::new(seed + 1);
        let train_labels = (0..n_tr).map(|_| r.below(c) as u8).collect();
        let val_labels = (0..n_val).map(|_| r.below(c) as u8).collect();
        Problem {
            d,
            c,
            train_x,
            train_labels,
            val_x,
            val_labels,
            lambda,
        }
    }

    pub fn data(&self) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.d,
            classes: self.c,
            train_x: &self.train_x,
            train_labels: &self.train_labels,
            val_x: &self.val_x,
            val_labels: &self.val_labels,
            lambda: self.lambda,
        }
    }

    pub fn n_tr(&self) -> usize {
        self.train_labels.len()
    }
    pub fn n_val(&self) -> usize {
        self.val_labels.len()
    }
    pub fn y_len(&self) -> usize {
        (self.d + 1) * self.c
    }
}

/// `max |got − want| / max |want|`.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}
