//! The reference backend: the hyper-cleaning problem of [`HypercleanData`] written as plainly
//! as possible, in `f64`, with naive loops, no parallelism and no caching.
//!
//! It exists to be obviously right. Every fast backend is checked against it primitive by
//! primitive — the CPU backend of `bda-cpu` and the CUDA backend of `bda-gpu`, which cannot
//! share test code with each other — and the kernel's dataset-scale methods are checked on it
//! against central finite differences. It lives here, next to the problem definition, so that
//! there is one reference for both (this crate's `tests/hyperclean_reference.rs` checks it
//! against finite differences). It needs an allocator (feature `alloc`) for its buffers and
//! per-sample temporaries; exp and ln come from `libm`, as everywhere in the kernel.
//!
//! Formulas (`u_i` the features of sample `i`, `s_i` its logits, `p_i = softmax(s_i)`, `e_i`
//! the one-hot label, `ω_i = σ(x_i)/n_tr` on the training set and `1/n_val` on the
//! validation set, `J_i = ∂s_i/∂y`):
//!
//! * `∇_y = Σ ω_i J_iᵀ(p_i − e_i)` (plus `2λW` on the weight matrices for `F`): back-propagation,
//!   for softmax regression `∇_W = Σ ω_i u_i (p_i − e_i)ᵀ`, `∇_b = Σ ω_i (p_i − e_i)`;
//! * Hessian–vector product in direction `v` by the R-operator: the forward tangent
//!   `t_i = J_i v` (softmax regression: `t_i = Vᵀu_i + v_b`; the network:
//!   `Ra = V₁ᵀu + v_{b₁}`, `Rh = Ra ⊙ 1[a > 0]`, `t = W₂ᵀRh + V₂ᵀh + v_{b₂}`), then
//!   `H·v = Σ ω_i [J_iᵀ r_i + Σ_k (p_i − e_i)_k ∇²s_{ik}·v]` with `r_i = p_i ⊙ t_i − p_i⟨p_i, t_i⟩`.
//!   The second term is zero for softmax regression. For the network it is back-propagation
//!   with `g = p − e` held fixed and differentiated along `v`: `R∇W₂ = Rh gᵀ`,
//!   `Rg_a = (V₂g) ⊙ 1[a > 0]`, `R∇W₁ = u Rg_aᵀ`, `R∇b₁ = Rg_a` (ReLU's second derivative
//!   is zero away from the kink);
//! * `∂_{x_i} f = σ'(x_i)/n_tr · CE_i` and `(∂²_{xy} f · v)_i = σ'(x_i)/n_tr · ⟨p_i − e_i, t_i⟩`.
//!
//! `F` does not depend on `x` ([`UpperGradient::upper_depends_on_x`] is `false`). A term whose
//! step weight is exactly zero is not evaluated (as the fast backends do), so a zero weight
//! contributes exactly nothing even where the other level is not finite.
//!
//! ```
//! use bda_kernel::backend::LowerStep;
//! use bda_kernel::hyperclean::{Classifier, HypercleanData, HypercleanReference};
//!
//! // Two features, two classes, two training samples and one validation sample.
//! let data = HypercleanData {
//!     dim: 2,
//!     classes: 2,
//!     classifier: Classifier::Linear,
//!     train_x: &[1.0, 0.0, 0.0, 1.0],
//!     train_labels: &[0, 1],
//!     val_x: &[1.0, 1.0],
//!     val_labels: &[1],
//!     lambda: 0.01,
//! };
//! data.validate().unwrap();
//! let mut r = HypercleanReference::new(&data);
//! let x = vec![0.0; r.x_len()]; // σ(0) = ½: every training sample weighs the same
//! let y0 = vec![0.0; r.y_len()];
//! // At y = 0 every sample has CE = ln 2, so f = ½·ln 2 and F = ln 2.
//! assert!((r.lower_value(&x, &y0) - 0.5 * core::f64::consts::LN_2).abs() < 1e-15);
//! assert!((r.upper_value(&y0) - core::f64::consts::LN_2).abs() < 1e-15);
//! // Lower-level gradient steps decrease f.
//! let (mut y, mut next) = (y0.clone(), y0.clone());
//! for _ in 0..20 {
//!     r.lower_step(&x, &y, 0.0, 1.0, &mut next).unwrap();
//!     core::mem::swap(&mut y, &mut next);
//! }
//! assert!(r.lower_value(&x, &y) < r.lower_value(&x, &y0));
//! ```

// Loops index several arrays in lockstep, as the formulas do.
#![allow(clippy::needless_range_loop)]

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use super::{Classifier, HypercleanData};
use crate::backend::{
    HostBuffers, Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};

/// Shorthands for the trait impls: a buffer, and a product's (infallible) result.
type V = Vec<f64>;
type Io<R = ()> = Result<R, Infallible>;

/// `σ(x) = 1/(1 + e^{−x})`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

/// One of the two data sets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    Train,
    Val,
}

/// One sample's pass: the hidden pre-activations `a` and activations `h` (empty for softmax
/// regression) and the logits `s`.
struct Pass {
    a: Vec<f64>,
    h: Vec<f64>,
    s: Vec<f64>,
}

/// `Wᵀz + b` for `z` of length `W.len()/n`, `W` row-major with `n` columns; an empty `b`
/// means no bias.
fn affine(z: impl Iterator<Item = f64>, w: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out: Vec<f64> = if b.is_empty() {
        vec![0.0; n]
    } else {
        b.to_vec()
    };
    for (j, zj) in z.enumerate() {
        for k in 0..n {
            out[k] += zj * w[j * n + k];
        }
    }
    out
}

/// `out += w·z rᵀ` (`out` row-major with `r.len()` columns).
fn add_outer(z: impl Iterator<Item = f64>, r: &[f64], w: f64, out: &mut [f64]) {
    let n = r.len();
    for (j, zj) in z.enumerate() {
        for k in 0..n {
            out[j * n + k] += w * zj * r[k];
        }
    }
}

/// `out += w·g`.
fn add_scaled(g: &[f64], w: f64, out: &mut [f64]) {
    for (o, v) in out.iter_mut().zip(g) {
        *o += w * v;
    }
}

/// ReLU's derivative, 1 on `a > 0` (0 at the kink, as PyTorch takes it).
fn relu_mask(a: f64) -> f64 {
    if a > 0.0 { 1.0 } else { 0.0 }
}

fn max(s: &[f64]) -> f64 {
    s.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = max(s);
    let e: Vec<f64> = s.iter().map(|&v| libm::exp(v - m)).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

/// `CE = log Σ_k e^{s_k} − s_label`.
fn ce(s: &[f64], label: usize) -> f64 {
    let m = max(s);
    let lse = m + libm::log(s.iter().map(|&v| libm::exp(v - m)).sum::<f64>());
    lse - s[label]
}

/// The reference backend (`T = f64`, `X = Y = Vec<f64>`, through [`HostBuffers`]).
///
/// It borrows the `f32` data and widens each value to `f64` where it is used (exactly), so
/// creating one costs nothing. Its buffers use the layout of [`HypercleanData`]; the data
/// are assumed valid ([`HypercleanData::validate`]).
#[derive(Clone, Copy, Debug)]
pub struct HypercleanReference<'a> {
    data: HypercleanData<'a>,
}

impl<'a> HypercleanReference<'a> {
    /// The reference for the instance `data`.
    pub fn new(data: &HypercleanData<'a>) -> Self {
        HypercleanReference { data: *data }
    }

    /// The instance.
    pub fn data(&self) -> &HypercleanData<'a> {
        &self.data
    }

    /// Length of `y` ([`HypercleanData::y_len`]).
    pub fn y_len(&self) -> usize {
        self.data.y_len()
    }

    /// Length of `x`: `n_tr`.
    pub fn x_len(&self) -> usize {
        self.data.n_train()
    }

    fn lambda(&self) -> f64 {
        f64::from(self.data.lambda)
    }

    /// Samples in `set`.
    fn len(&self, set: Set) -> usize {
        match set {
            Set::Train => self.data.n_train(),
            Set::Val => self.data.n_val(),
        }
    }

    /// Features and label of sample `i` of `set`.
    fn sample(&self, set: Set, i: usize) -> (&'a [f32], usize) {
        let d = self.data.dim;
        let (x, labels) = match set {
            Set::Train => (self.data.train_x, self.data.train_labels),
            Set::Val => (self.data.val_x, self.data.val_labels),
        };
        (&x[i * d..(i + 1) * d], usize::from(labels[i]))
    }

    /// `ω_i`: `σ(x_i)/n_tr` on the training set, `1/n_val` on the validation set.
    fn omega(&self, set: Set, x: &[f64], i: usize) -> f64 {
        let n = self.len(set) as f64;
        match set {
            Set::Train => sigmoid(x[i]) / n,
            Set::Val => 1.0 / n,
        }
    }

    /// `σ'(x_i)/n_tr`.
    fn dsigma(&self, x: &[f64], i: usize) -> f64 {
        let s = sigmoid(x[i]);
        s * (1.0 - s) / self.data.n_train() as f64
    }

    /// One sample through the classifier at `y`.
    fn forward(&self, u: &[f32], y: &[f64]) -> Pass {
        let c = self.data.classes;
        let l = self.data.layout();
        let uf = u.iter().map(|&v| f64::from(v));
        let h = match self.data.classifier {
            Classifier::Linear => {
                let s = affine(uf, &y[l.w1..l.b1], &y[l.b2..], c);
                return Pass {
                    a: Vec::new(),
                    h: Vec::new(),
                    s,
                };
            }
            Classifier::Mlp { hidden } => hidden,
        };
        let a = affine(
            u.iter().map(|&v| f64::from(v)),
            &y[l.w1..l.b1],
            &y[l.b1..l.w2],
            h,
        );
        let hid: Vec<f64> = a.iter().map(|&v| v.max(0.0)).collect();
        let s = affine(hid.iter().copied(), &y[l.w2..l.b2], &y[l.b2..], c);
        debug_assert_eq!(y.len(), l.b2 + c);
        Pass { a, h: hid, s }
    }

    /// The derivative of the pass at `y` along `v` (the forward tangent, R-operator):
    /// `(Ra, Rs)`, `Ra` empty for softmax regression.
    fn tangent(&self, u: &[f32], y: &[f64], pass: &Pass, v: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let c = self.data.classes;
        let l = self.data.layout();
        let uf = || u.iter().map(|&x| f64::from(x));
        let h = match self.data.classifier {
            Classifier::Linear => {
                return (Vec::new(), affine(uf(), &v[l.w1..l.b1], &v[l.b2..], c));
            }
            Classifier::Mlp { hidden } => hidden,
        };
        let ra = affine(uf(), &v[l.w1..l.b1], &v[l.b1..l.w2], h);
        let rh: Vec<f64> = ra
            .iter()
            .zip(&pass.a)
            .map(|(r, a)| relu_mask(*a) * r)
            .collect();
        // Rs = W₂ᵀRh + V₂ᵀh + v_b₂.
        let mut rs = affine(rh.iter().copied(), &y[l.w2..l.b2], &v[l.b2..], c);
        let vh = affine(pass.h.iter().copied(), &v[l.w2..l.b2], &[0.0; 0], c);
        for (r, x) in rs.iter_mut().zip(vh) {
            *r += x;
        }
        (ra, rs)
    }

    /// `out += w·J_y(s)ᵀ g`: back-propagation of a logit-space vector `g` through the pass.
    fn add_backprop(&self, u: &[f32], y: &[f64], pass: &Pass, g: &[f64], w: f64, out: &mut [f64]) {
        let c = self.data.classes;
        let l = self.data.layout();
        let h = match self.data.classifier {
            Classifier::Linear => {
                add_outer(u.iter().map(|&x| f64::from(x)), g, w, &mut out[l.w1..l.b1]);
                add_scaled(g, w, &mut out[l.b2..]);
                return;
            }
            Classifier::Mlp { hidden } => hidden,
        };
        add_outer(pass.h.iter().copied(), g, w, &mut out[l.w2..l.b2]);
        add_scaled(g, w, &mut out[l.b2..]);
        // g_a = (W₂g) ⊙ 1[a > 0].
        let ga: Vec<f64> = (0..h)
            .map(|j| relu_mask(pass.a[j]) * (0..c).map(|k| y[l.w2 + j * c + k] * g[k]).sum::<f64>())
            .collect();
        add_outer(
            u.iter().map(|&x| f64::from(x)),
            &ga,
            w,
            &mut out[l.w1..l.b1],
        );
        add_scaled(&ga, w, &mut out[l.b1..l.w2]);
    }

    /// `out += w·∇²_{yy} CE(y; u, ·)·v` for the sample with label `label`: the Gauss–Newton
    /// part `J_yᵀ (∇²_s CE) J_y v`, plus (with a hidden layer) `Σ_k (p − e)_k ∇²_y s_k · v`,
    /// the derivative of back-propagation with `g = p − e` held fixed (ReLU has no second
    /// derivative almost everywhere).
    fn add_hvp_sample(
        &self,
        u: &[f32],
        label: usize,
        y: &[f64],
        v: &[f64],
        w: f64,
        out: &mut [f64],
    ) {
        let pass = self.forward(u, y);
        let (ra, rs) = self.tangent(u, y, &pass, v);
        let p = softmax(&pass.s);
        let prs: f64 = p.iter().zip(&rs).map(|(p, t)| p * t).sum();
        let r: Vec<f64> = p.iter().zip(&rs).map(|(p, t)| p * t - p * prs).collect();
        self.add_backprop(u, y, &pass, &r, w, out);
        let c = self.data.classes;
        let h = match self.data.classifier {
            Classifier::Linear => return,
            Classifier::Mlp { hidden } => hidden,
        };
        let l = self.data.layout();
        let mut g = p;
        g[label] -= 1.0;
        // R(∇W₂) = Rh gᵀ; R(g_a) = (V₂g) ⊙ 1[a > 0] → R(∇W₁) = u R(g_a)ᵀ, R(∇b₁) = R(g_a).
        let rh: Vec<f64> = ra
            .iter()
            .zip(&pass.a)
            .map(|(r, a)| relu_mask(*a) * r)
            .collect();
        add_outer(rh.iter().copied(), &g, w, &mut out[l.w2..l.b2]);
        let rga: Vec<f64> = (0..h)
            .map(|j| relu_mask(pass.a[j]) * (0..c).map(|k| v[l.w2 + j * c + k] * g[k]).sum::<f64>())
            .collect();
        add_outer(
            u.iter().map(|&x| f64::from(x)),
            &rga,
            w,
            &mut out[l.w1..l.b1],
        );
        add_scaled(&rga, w, &mut out[l.b1..l.w2]);
    }

    /// `out += w·Σ ω_i ∇_y CE_i` over `set`; returns `Σ ω_i CE_i`.
    fn add_grad(&self, set: Set, x: &[f64], w: f64, y: &[f64], out: &mut [f64]) -> f64 {
        let mut loss = 0.0;
        for i in 0..self.len(set) {
            let (u, label) = self.sample(set, i);
            let om = self.omega(set, x, i);
            let pass = self.forward(u, y);
            loss += om * ce(&pass.s, label);
            let mut g = softmax(&pass.s);
            g[label] -= 1.0;
            self.add_backprop(u, y, &pass, &g, w * om, out);
        }
        loss
    }

    /// `out += w·Σ ω_i ∇²_{yy} CE_i · v` over `set`.
    fn add_hvp(&self, set: Set, x: &[f64], w: f64, y: &[f64], v: &[f64], out: &mut [f64]) {
        for i in 0..self.len(set) {
            let (u, label) = self.sample(set, i);
            self.add_hvp_sample(u, label, y, v, w * self.omega(set, x, i), out);
        }
    }

    /// `gx_i += scale·σ'(x_i)/n_tr·⟨p_i − e_i, Rs_i⟩` with `Rs_i` the derivative of the
    /// logits along `v`: adds `scale·(∂²_{xy} f)ᵀ·v`.
    fn add_mixed(&self, x: &[f64], y: &[f64], v: &[f64], scale: f64, gx: &mut [f64]) {
        for i in 0..self.data.n_train() {
            let (u, label) = self.sample(Set::Train, i);
            let pass = self.forward(u, y);
            let p = softmax(&pass.s);
            let (_, t) = self.tangent(u, y, &pass, v);
            let pt: f64 = p.iter().zip(&t).map(|(p, t)| p * t).sum();
            gx[i] += scale * self.dsigma(x, i) * (pt - t[label]);
        }
    }

    /// `out += w·2λW` over the weight matrices of a `y`-shaped `v` (biases are not
    /// regularised).
    fn add_reg(&self, w: f64, v: &[f64], out: &mut [f64]) {
        let lam = self.lambda();
        for r in self.data.layout().weights() {
            for j in r {
                out[j] += w * 2.0 * lam * v[j];
            }
        }
    }

    /// `λ‖W‖²` over the weight matrices of `y`.
    fn reg(&self, y: &[f64]) -> f64 {
        let sq: f64 = self
            .data
            .layout()
            .weights()
            .into_iter()
            .map(|r| y[r].iter().map(|w| w * w).sum::<f64>())
            .sum();
        self.lambda() * sq
    }

    /// `f(x, y) = (1/n_tr) Σ_i σ(x_i)·CE_i`.
    pub fn lower_value(&self, x: &[f64], y: &[f64]) -> f64 {
        (0..self.data.n_train())
            .map(|i| {
                let (u, label) = self.sample(Set::Train, i);
                self.omega(Set::Train, x, i) * ce(&self.forward(u, y).s, label)
            })
            .sum()
    }

    /// `F(y) = (1/n_val) Σ_j CE_j + λ‖W‖²`.
    pub fn upper_value(&self, y: &[f64]) -> f64 {
        let ce: f64 = (0..self.data.n_val())
            .map(|i| {
                let (u, label) = self.sample(Set::Val, i);
                self.omega(Set::Val, &[], i) * ce(&self.forward(u, y).s, label)
            })
            .sum();
        ce + self.reg(y)
    }

    /// `out ← ∇_y f(x, y)`.
    pub fn lower_grad(&self, x: &[f64], y: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        self.add_grad(Set::Train, x, 1.0, y, out);
    }

    /// `out ← ∇_y F(y)`; returns `F(y)`.
    pub fn upper_grad_y(&self, y: &[f64], out: &mut [f64]) -> f64 {
        out.fill(0.0);
        let ce = self.add_grad(Set::Val, &[], 1.0, y, out);
        self.add_reg(1.0, y, out);
        ce + self.reg(y)
    }
}

impl HostBuffers for HypercleanReference<'_> {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        HypercleanReference::x_len(self)
    }
    fn y_len(&self) -> usize {
        HypercleanReference::y_len(self)
    }
}

impl LowerStep for HypercleanReference<'_> {
    fn lower_step(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, y_out: &mut V) -> Io {
        // g = w_u ∇_y F + w_l ∇_y f
        let mut g = vec![0.0; y.len()];
        if w_l != 0.0 {
            self.add_grad(Set::Train, x, w_l, y, &mut g);
        }
        if w_u != 0.0 {
            self.add_grad(Set::Val, x, w_u, y, &mut g);
            self.add_reg(w_u, y, &mut g);
        }
        for i in 0..y.len() {
            y_out[i] = y[i] - g[i];
        }
        Ok(())
    }
}

impl UpperGradient for HypercleanReference<'_> {
    /// `F` is the validation loss: it does not depend on the sample weights.
    fn upper_depends_on_x(&self) -> bool {
        false
    }

    fn upper_grad(&mut self, _x: &V, y: &V, gy: &mut V, _gx: &mut V, _gx_scale: f64) -> Io<f64> {
        Ok(self.upper_grad_y(y, gy))
    }
}

impl StepAdjoint for HypercleanReference<'_> {
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        // h = (w_u ∇²F + w_l ∇²f)·a, and gx −= w_l (∂²_{xy} f)ᵀ·a, both with the old `a`.
        let mut h = vec![0.0; a.len()];
        if w_l != 0.0 {
            self.add_mixed(x, y, a, -w_l, gx);
            self.add_hvp(Set::Train, x, w_l, y, a, &mut h);
        }
        if w_u != 0.0 {
            self.add_hvp(Set::Val, x, w_u, y, a, &mut h);
            self.add_reg(w_u, a, &mut h);
        }
        for i in 0..a.len() {
            a[i] -= h[i];
        }
        Ok(())
    }
}

/// Every method.
impl Methods for HypercleanReference<'_> {
    fn hypergrad(
        &mut self,
        spec: MethodSpec<f64>,
    ) -> Result<Hypergrad<Self>, MethodError<Infallible>> {
        Hypergrad::new(self, spec)
    }
}

impl LowerHessian for HypercleanReference<'_> {
    fn lower_hvp(&mut self, x: &V, y: &V, v: &V, out: &mut V) -> Io {
        out.fill(0.0);
        self.add_hvp(Set::Train, x, 1.0, y, v, out);
        Ok(())
    }

    fn lower_mixed_vjp(&mut self, x: &V, y: &V, v: &V, scale: f64, gx: &mut V) -> Io {
        self.add_mixed(x, y, v, scale, gx);
        Ok(())
    }

    fn lower_grad_x(&mut self, x: &V, y: &V, scale: f64, gx: &mut V) -> Io {
        for i in 0..self.data.n_train() {
            let (u, label) = self.sample(Set::Train, i);
            let ce = ce(&self.forward(u, y).s, label);
            gx[i] += scale * self.dsigma(x, i) * ce;
        }
        Ok(())
    }
}
