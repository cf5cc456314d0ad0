//! The reference backend: the hyper-cleaning problem of [`HypercleanData`] written as
//! plainly as possible, in `f64`, with naive loops and no parallelism.
//!
//! It exists to be obviously right: the finite-difference checks of every method run on it,
//! and the fast backend ([`super::cpu`]) is checked against it primitive by primitive.
//!
//! Formulas (`s_i = Wᵀu_i + b`, `p_i = softmax(s_i)`, `e_i` the one-hot label,
//! `ω_i = σ(x_i)/n_tr` on the training set and `1/n_val` on the validation set):
//!
//! * `∇_W = Σ ω_i u_i (p_i − e_i)ᵀ`, `∇_b = Σ ω_i (p_i − e_i)` (plus `2λW` for `F`);
//! * Hessian–vector product in direction `(V, v_b)`: with `t_i = Vᵀu_i + v_b` and
//!   `r_i = p_i ⊙ t_i − p_i ⟨p_i, t_i⟩`, `H_W·v = Σ ω_i u_i r_iᵀ`, `H_b·v = Σ ω_i r_i`
//!   (plus `2λV` for `F`);
//! * `∂_{x_i} f = σ'(x_i)/n_tr · CE_i` and `(∂²_{xy} f · v)_i = σ'(x_i)/n_tr · ⟨p_i − e_i, t_i⟩`.
//!
//! `F` does not depend on `x`.

// Lane loops index several arrays in lockstep (the shape of the SIMD code they become).
#![allow(clippy::needless_range_loop)]

use std::convert::Infallible;

use bda_kernel::backend::{HostBuffers, LowerHessian, LowerStep, StepAdjoint, UpperGradient};
use bda_kernel::hyperclean::HypercleanData;

/// `σ(x) = 1/(1 + e^{−x})`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One data set in `f64`.
#[derive(Clone, Debug)]
struct Set {
    n: usize,
    x: Vec<f64>,
    labels: Vec<u8>,
}

/// The reference backend (`T = f64`, `X = Y = Vec<f64>`).
#[derive(Clone, Debug)]
pub struct Reference {
    d: usize,
    c: usize,
    lambda: f64,
    train: Set,
    val: Set,
}

impl Reference {
    /// Copy the data of `data` into `f64`.
    pub fn new(data: &HypercleanData<'_>) -> Self {
        let set = |x: &[f32], l: &[u8]| Set {
            n: l.len(),
            x: x.iter().map(|&v| f64::from(v)).collect(),
            labels: l.to_vec(),
        };
        Reference {
            d: data.dim,
            c: data.classes,
            lambda: f64::from(data.lambda),
            train: set(data.train_x, data.train_labels),
            val: set(data.val_x, data.val_labels),
        }
    }

    /// Length of `y`.
    pub fn y_len(&self) -> usize {
        (self.d + 1) * self.c
    }

    /// Length of `x`.
    pub fn x_len(&self) -> usize {
        self.train.n
    }

    /// `Vᵀu_i + v_b` of sample `i`.
    fn logits(&self, set: &Set, i: usize, y: &[f64]) -> Vec<f64> {
        let (d, c) = (self.d, self.c);
        let u = &set.x[i * d..(i + 1) * d];
        (0..c)
            .map(|k| y[d * c + k] + (0..d).map(|j| u[j] * y[j * c + k]).sum::<f64>())
            .collect()
    }

    fn softmax(s: &[f64]) -> Vec<f64> {
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    fn ce(s: &[f64], label: u8) -> f64 {
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        lse - s[label as usize]
    }

    /// `out += Σ ω_i ∇_y CE_i`; returns `Σ ω_i CE_i`.
    fn grad_set(&self, set: &Set, omega: &dyn Fn(usize) -> f64, y: &[f64], out: &mut [f64]) -> f64 {
        let (d, c) = (self.d, self.c);
        let mut loss = 0.0;
        for i in 0..set.n {
            let w = omega(i);
            let s = self.logits(set, i, y);
            loss += w * Self::ce(&s, set.labels[i]);
            let mut g = Self::softmax(&s);
            g[set.labels[i] as usize] -= 1.0;
            let u = &set.x[i * d..(i + 1) * d];
            for k in 0..c {
                for j in 0..d {
                    out[j * c + k] += w * u[j] * g[k];
                }
                out[d * c + k] += w * g[k];
            }
        }
        loss
    }

    /// `out += Σ ω_i ∇²_{yy} CE_i · v`; `mixed[i] = ⟨p_i − e_i, t_i⟩`.
    fn hvp_set(
        &self,
        set: &Set,
        omega: &dyn Fn(usize) -> f64,
        y: &[f64],
        v: &[f64],
        out: &mut [f64],
        mut mixed: Option<&mut [f64]>,
    ) {
        let (d, c) = (self.d, self.c);
        for i in 0..set.n {
            let w = omega(i);
            let p = Self::softmax(&self.logits(set, i, y));
            let t = self.logits(set, i, v);
            let pt: f64 = p.iter().zip(&t).map(|(a, b)| a * b).sum();
            let r: Vec<f64> = (0..c).map(|k| p[k] * t[k] - p[k] * pt).collect();
            if let Some(m) = mixed.as_deref_mut() {
                m[i] = pt - t[set.labels[i] as usize];
            }
            let u = &set.x[i * d..(i + 1) * d];
            for k in 0..c {
                for j in 0..d {
                    out[j * c + k] += w * u[j] * r[k];
                }
                out[d * c + k] += w * r[k];
            }
        }
    }

    fn omega_train<'a>(&self, x: &'a [f64]) -> impl Fn(usize) -> f64 + 'a {
        let n = self.train.n as f64;
        move |i| sigmoid(x[i]) / n
    }

    /// `∇_y F` into `out` (overwritten); returns `F`.
    fn upper(&self, y: &[f64], out: &mut [f64]) -> f64 {
        out.iter_mut().for_each(|v| *v = 0.0);
        let m = self.val.n as f64;
        let mut loss = self.grad_set(&self.val, &|_| 1.0 / m, y, out);
        let dc = self.d * self.c;
        for (o, w) in out[..dc].iter_mut().zip(&y[..dc]) {
            *o += 2.0 * self.lambda * w;
            loss += self.lambda * w * w;
        }
        loss
    }

    /// `f(x, y)`.
    pub fn lower_value(&self, x: &[f64], y: &[f64]) -> f64 {
        let om = self.omega_train(x);
        (0..self.train.n)
            .map(|i| om(i) * Self::ce(&self.logits(&self.train, i, y), self.train.labels[i]))
            .sum()
    }

    /// `F(y)`.
    pub fn upper_value(&self, y: &[f64]) -> f64 {
        let mut g = vec![0.0; self.y_len()];
        self.upper(y, &mut g)
    }
}

impl HostBuffers for Reference {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        Reference::x_len(self)
    }
    fn y_len(&self) -> usize {
        Reference::y_len(self)
    }
}

impl LowerStep for Reference {
    fn lower_step(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        y_out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let mut gf = vec![0.0; self.y_len()];
        self.grad_set(&self.train, &self.omega_train(x), y, &mut gf);
        let mut gu = vec![0.0; self.y_len()];
        if w_u != 0.0 {
            self.upper(y, &mut gu);
        }
        for i in 0..y.len() {
            y_out[i] = y[i] - (w_u * gu[i] + w_l * gf[i]);
        }
        Ok(())
    }
}

impl UpperGradient for Reference {
    /// `F` is the validation loss: it does not depend on the sample weights.
    fn upper_depends_on_x(&self) -> bool {
        false
    }

    fn upper_grad(
        &mut self,
        _x: &Vec<f64>,
        y: &Vec<f64>,
        gy: &mut Vec<f64>,
        _gx: &mut Vec<f64>,
        _gx_scale: f64,
    ) -> Result<f64, Infallible> {
        Ok(self.upper(y, gy))
    }
}

impl StepAdjoint for Reference {
    fn step_adjoint(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        w_u: f64,
        w_l: f64,
        a: &mut Vec<f64>,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let mut hf = vec![0.0; self.y_len()];
        let mut mixed = vec![0.0; self.train.n];
        self.hvp_set(
            &self.train,
            &self.omega_train(x),
            y,
            a,
            &mut hf,
            Some(&mut mixed),
        );
        let mut hu = vec![0.0; self.y_len()];
        if w_u != 0.0 {
            let m = self.val.n as f64;
            self.hvp_set(&self.val, &|_| 1.0 / m, y, a, &mut hu, None);
            let dc = self.d * self.c;
            for j in 0..dc {
                hu[j] += 2.0 * self.lambda * a[j];
            }
        }
        let n = self.train.n as f64;
        for i in 0..self.train.n {
            let s = sigmoid(x[i]);
            gx[i] -= w_l * s * (1.0 - s) / n * mixed[i];
        }
        for i in 0..a.len() {
            a[i] -= w_u * hu[i] + w_l * hf[i];
        }
        Ok(())
    }
}

impl LowerHessian for Reference {
    fn lower_hvp(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        v: &Vec<f64>,
        out: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        out.iter_mut().for_each(|o| *o = 0.0);
        self.hvp_set(&self.train, &self.omega_train(x), y, v, out, None);
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
        let mut sink = vec![0.0; self.y_len()];
        let mut mixed = vec![0.0; self.train.n];
        self.hvp_set(&self.train, &|_| 0.0, y, v, &mut sink, Some(&mut mixed));
        let n = self.train.n as f64;
        for i in 0..self.train.n {
            let s = sigmoid(x[i]);
            gx[i] += scale * s * (1.0 - s) / n * mixed[i];
        }
        Ok(())
    }
    fn lower_grad_x(
        &mut self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        scale: f64,
        gx: &mut Vec<f64>,
    ) -> Result<(), Infallible> {
        let n = self.train.n as f64;
        for i in 0..self.train.n {
            let s = sigmoid(x[i]);
            let ce = Self::ce(&self.logits(&self.train, i, y), self.train.labels[i]);
            gx[i] += scale * s * (1.0 - s) / n * ce;
        }
        Ok(())
    }
}
