//! A plain f64 implementation of the hyper-cleaning primitives, straight from the formulas of
//! `bda_kernel::hyperclean`, used as the reference for the CUDA backend. It implements the same
//! backend traits, so the kernel's generic methods can run on both.
#![allow(dead_code, clippy::needless_range_loop)]

use std::convert::Infallible;

use bda_kernel::backend::{HostBuffers, LowerHessian, LowerStep, StepAdjoint, UpperGradient};
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

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The f64 reference backend.
pub struct RefCpu<'a> {
    pub p: &'a Problem,
}

/// Row quantities: features, label, softmax p, log-sum-exp, logits.
struct Row {
    p: Vec<f64>,
    lse: f64,
    z: Vec<f64>,
}

impl RefCpu<'_> {
    fn feats(&self, train: bool, i: usize) -> (&[f32], usize) {
        let d = self.p.d;
        if train {
            (
                &self.p.train_x[i * d..(i + 1) * d],
                self.p.train_labels[i] as usize,
            )
        } else {
            (
                &self.p.val_x[i * d..(i + 1) * d],
                self.p.val_labels[i] as usize,
            )
        }
    }

    /// `Yᵀ·ũ` for `ũ = [u; 1]`.
    fn apply(&self, u: &[f32], y: &[f64]) -> Vec<f64> {
        let (d, c) = (self.p.d, self.p.c);
        (0..c)
            .map(|k| (0..d).map(|j| u[j] as f64 * y[j * c + k]).sum::<f64>() + y[d * c + k])
            .collect()
    }

    fn row(&self, u: &[f32], y: &[f64]) -> Row {
        let z = self.apply(u, y);
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let p = z.iter().map(|v| (v - m).exp() / s).collect();
        Row {
            p,
            lse: m + s.ln(),
            z,
        }
    }

    /// `out += ω·ũ·rᵀ` (a rank-one update of a y-shaped buffer).
    fn add_outer(&self, u: &[f32], r: &[f64], w: f64, out: &mut [f64]) {
        let (d, c) = (self.p.d, self.p.c);
        for k in 0..c {
            for j in 0..d {
                out[j * c + k] += w * u[j] as f64 * r[k];
            }
            out[d * c + k] += w * r[k];
        }
    }

    /// `Σ_rows ω_i ũ_i (p_i − e_{v_i})ᵀ` with `ω = w_tr σ(x_i)/n_tr` (train), `w_val/n_val` (val).
    pub fn grad_rows(&self, x: &[f64], y: &[f64], w_tr: f64, w_val: f64, out: &mut [f64]) {
        for (train, n, w) in [(true, self.p.n_tr(), w_tr), (false, self.p.n_val(), w_val)] {
            if w == 0.0 {
                continue;
            }
            for i in 0..n {
                let (u, v) = self.feats(train, i);
                let mut r = self.row(u, y).p;
                r[v] -= 1.0;
                let om = if train {
                    w * sigmoid(x[i]) / n as f64
                } else {
                    w / n as f64
                };
                self.add_outer(u, &r, om, out);
            }
        }
    }

    /// `Σ_rows ω_i ũ_i ((diag p − ppᵀ) t_i)ᵀ`, `t_i = Aᵀũ_i`.
    pub fn hvp_rows(
        &self,
        x: &[f64],
        y: &[f64],
        a: &[f64],
        w_tr: f64,
        w_val: f64,
        out: &mut [f64],
    ) {
        for (train, n, w) in [(true, self.p.n_tr(), w_tr), (false, self.p.n_val(), w_val)] {
            if w == 0.0 {
                continue;
            }
            for i in 0..n {
                let (u, _) = self.feats(train, i);
                let p = self.row(u, y).p;
                let t = self.apply(u, a);
                let pt: f64 = p.iter().zip(&t).map(|(p, t)| p * t).sum();
                let r: Vec<f64> = p.iter().zip(&t).map(|(p, t)| p * (t - pt)).collect();
                let om = if train {
                    w * sigmoid(x[i]) / n as f64
                } else {
                    w / n as f64
                };
                self.add_outer(u, &r, om, out);
            }
        }
    }

    /// `f(x, y)`.
    pub fn lower_value(&self, x: &[f64], y: &[f64]) -> f64 {
        let n = self.p.n_tr();
        (0..n)
            .map(|i| {
                let (u, v) = self.feats(true, i);
                let r = self.row(u, y);
                sigmoid(x[i]) * (r.lse - r.z[v])
            })
            .sum::<f64>()
            / n as f64
    }

    /// `F(y)`.
    pub fn upper_value(&self, y: &[f64]) -> f64 {
        let n = self.p.n_val();
        let ce: f64 = (0..n)
            .map(|i| {
                let (u, v) = self.feats(false, i);
                let r = self.row(u, y);
                r.lse - r.z[v]
            })
            .sum();
        let nw = self.p.d * self.p.c;
        ce / n as f64 + self.p.lambda as f64 * y[..nw].iter().map(|w| w * w).sum::<f64>()
    }

    /// `gx_i += s·σ'(x_i)/n_tr·(⟨p_i, t_i⟩ − t_{i,v_i})`.
    fn mixed(&self, x: &[f64], y: &[f64], a: &[f64], s: f64, gx: &mut [f64]) {
        let n = self.p.n_tr();
        for i in 0..n {
            let (u, v) = self.feats(true, i);
            let p = self.row(u, y).p;
            let t = self.apply(u, a);
            let pt: f64 = p.iter().zip(&t).map(|(p, t)| p * t).sum();
            let sg = sigmoid(x[i]);
            gx[i] += s * sg * (1.0 - sg) / n as f64 * (pt - t[v]);
        }
    }
}

impl HostBuffers for RefCpu<'_> {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        self.p.n_tr()
    }
    fn y_len(&self) -> usize {
        self.p.y_len()
    }
}

impl LowerStep for RefCpu<'_> {
    fn lower_step(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        y_out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let mut g = vec![0.0; y.len()];
        self.grad_rows(x, y, w_l, w_u, &mut g);
        let nw = self.p.d * self.p.c;
        let lam = self.p.lambda as f64;
        for i in 0..y.len() {
            let reg = if i < nw { 2.0 * lam * y[i] } else { 0.0 };
            y_out[i] = y[i] - g[i] - w_u * reg;
        }
        Ok(())
    }
}

impl UpperGradient for RefCpu<'_> {
    fn upper_grad(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        gy: &mut Vec<f64>,
        _gx: &mut Vec<f64>,
        _gx_scale: f64,
    ) -> Result<f64, Infallible> {
        gy.fill(0.0);
        self.grad_rows(x, y, 0.0, 1.0, gy);
        let nw = self.p.d * self.p.c;
        for i in 0..nw {
            gy[i] += 2.0 * self.p.lambda as f64 * y[i];
        }
        Ok(self.upper_value(y))
    }
}

impl StepAdjoint for RefCpu<'_> {
    fn step_adjoint(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        a: &mut Vec<f64>,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        self.mixed(x, y, a, -w_l, gx);
        let mut h = vec![0.0; a.len()];
        self.hvp_rows(x, y, a, w_l, w_u, &mut h);
        let nw = self.p.d * self.p.c;
        let lam = self.p.lambda as f64;
        for i in 0..a.len() {
            let reg = if i < nw { 2.0 * lam * a[i] } else { 0.0 };
            a[i] -= h[i] + w_u * reg;
        }
        Ok(())
    }
}

impl LowerHessian for RefCpu<'_> {
    fn lower_hvp(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        v: &Vec<f64>,
        out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        out.fill(0.0);
        self.hvp_rows(x, y, v, 1.0, 0.0, out);
        Ok(())
    }
    fn lower_mixed_vjp(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        v: &Vec<f64>,
        scale: f64,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        self.mixed(x, y, v, scale, gx);
        Ok(())
    }
    fn lower_grad_x(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        scale: f64,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let n = self.p.n_tr();
        for i in 0..n {
            let (u, v) = self.feats(true, i);
            let r = self.row(u, y);
            let sg = sigmoid(x[i]);
            gx[i] += scale * sg * (1.0 - sg) / n as f64 * (r.lse - r.z[v]);
        }
        Ok(())
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
