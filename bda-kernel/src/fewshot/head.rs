//! The per-task head problem as a backend (see the parent module for the formulas).

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use crate::backend::{HostBuffers, LowerStep, Methods, StepAdjoint, UpperGradient};
use crate::scalar::Real;

/// Shorthands for the trait impls: a buffer, and a product's (infallible) result.
type V<T> = Vec<T>;
type Io<R = ()> = Result<R, Infallible>;

/// One task's head problem.
#[derive(Clone, Debug)]
pub struct FeatureHead<T> {
    /// Feature dimension `d`.
    pub dim: usize,
    /// Classes `N`.
    pub ways: usize,
    /// Support labels (`n_s`), each `< ways`.
    pub support_labels: Vec<u8>,
    /// Query labels (`n_q`).
    pub query_labels: Vec<u8>,
    /// L2 weight `λ` of the lower level.
    pub l2: T,
}

/// Which rows of `x` a cross-entropy term uses.
#[derive(Clone, Copy)]
enum Set {
    Support,
    Query,
}

impl<T: Real> FeatureHead<T> {
    /// A head problem; `l2 = 0` for the peer's plain cross-entropy.
    pub fn new(
        dim: usize,
        ways: usize,
        support_labels: Vec<u8>,
        query_labels: Vec<u8>,
        l2: T,
    ) -> Self {
        FeatureHead {
            dim,
            ways,
            support_labels,
            query_labels,
            l2,
        }
    }

    /// Rows of `x` (`n_s + n_q`).
    pub fn rows(&self) -> usize {
        self.support_labels.len() + self.query_labels.len()
    }

    /// Length of `y` (`d·N + N`).
    pub fn y_len(&self) -> usize {
        (self.dim + 1) * self.ways
    }

    fn set(&self, s: Set) -> (usize, &[u8]) {
        match s {
            Set::Support => (0, &self.support_labels),
            Set::Query => (self.support_labels.len(), &self.query_labels),
        }
    }

    /// Logits of row `r` of `x`: `out ← x_r W + b`.
    fn logits(&self, x: &[T], y: &[T], r: usize, out: &mut [T]) {
        let (d, nw) = (self.dim, self.ways);
        out.copy_from_slice(&y[d * nw..]);
        let xr = &x[r * d..][..d];
        for (j, &xv) in xr.iter().enumerate() {
            let wr = &y[j * nw..][..nw];
            for (o, &w) in out.iter_mut().zip(wr) {
                *o += xv * w;
            }
        }
    }

    /// Softmax in place; returns log-sum-exp.
    fn softmax(z: &mut [T]) -> T {
        let m = z.iter().fold(z[0], |a, &b| a.max(b));
        let mut s = T::zero();
        for v in z.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        let inv = T::one() / s;
        for v in z.iter_mut() {
            *v *= inv;
        }
        m + s.ln()
    }

    /// Loss of a set, `gy ← gy + scale·∇_y`, and (if given) `gx[rows] += gx_scale·∇_A`.
    fn ce_grad(
        &self,
        s: Set,
        x: &[T],
        y: &[T],
        scale: T,
        gy: Option<&mut [T]>,
        gx: Option<(&mut [T], T)>,
    ) -> T {
        let (d, nw) = (self.dim, self.ways);
        let (first, labels) = self.set(s);
        let n = labels.len();
        let inv_n = T::one() / T::from_f64(n as f64);
        let mut p = vec![T::zero(); nw];
        let mut loss = T::zero();
        let mut gy = gy;
        let mut gx = gx;
        for (i, &lab) in labels.iter().enumerate() {
            let r = first + i;
            self.logits(x, y, r, &mut p);
            let zl = p[lab as usize];
            let lse = Self::softmax(&mut p);
            loss += (lse - zl) * inv_n;
            p[lab as usize] -= T::one();
            for v in p.iter_mut() {
                *v *= inv_n; // G_i
            }
            if let Some(gy) = gy.as_deref_mut() {
                let xr = &x[r * d..][..d];
                for (j, &xv) in xr.iter().enumerate() {
                    let c = scale * xv;
                    for (g, &pv) in gy[j * nw..][..nw].iter_mut().zip(&p) {
                        *g += c * pv;
                    }
                }
                for (g, &pv) in gy[d * nw..].iter_mut().zip(&p) {
                    *g += scale * pv;
                }
            }
            if let Some((gx, sc)) = gx.as_mut() {
                let gr = &mut gx[r * d..][..d];
                for (j, g) in gr.iter_mut().enumerate() {
                    let wr = &y[j * nw..][..nw];
                    let mut acc = T::zero();
                    for (&w, &pv) in wr.iter().zip(&p) {
                        acc += w * pv;
                    }
                    *g += *sc * acc;
                }
            }
        }
        loss
    }

    /// `a_out += scale·H_y a` and `gx[rows] += gx_scale·(∂²_{Ay}L)ᵀa` for one set.
    #[allow(clippy::too_many_arguments)]
    fn second_order(
        &self,
        s: Set,
        x: &[T],
        y: &[T],
        a: &[T],
        scale: T,
        a_out: &mut [T],
        gx: &mut [T],
        gx_scale: T,
    ) {
        let (d, nw) = (self.dim, self.ways);
        let (first, labels) = self.set(s);
        let n = labels.len();
        let inv_n = T::one() / T::from_f64(n as f64);
        let mut p = vec![T::zero(); nw];
        let mut u = vec![T::zero(); nw];
        let mut dd = vec![T::zero(); nw];
        for (i, &lab) in labels.iter().enumerate() {
            let r = first + i;
            self.logits(x, y, r, &mut p);
            Self::softmax(&mut p);
            self.logits(x, a, r, &mut u); // U_i = x_r V + c
            let pu = p
                .iter()
                .zip(&u)
                .fold(T::zero(), |acc, (&pv, &uv)| acc + pv * uv);
            for ((dv, &pv), &uv) in dd.iter_mut().zip(&p).zip(&u) {
                *dv = pv * (uv - pu) * inv_n; // D_i
            }
            // G_i
            p[lab as usize] -= T::one();
            for v in p.iter_mut() {
                *v *= inv_n;
            }
            let xr = &x[r * d..][..d];
            for (j, &xv) in xr.iter().enumerate() {
                let c = scale * xv;
                for (o, &dv) in a_out[j * nw..][..nw].iter_mut().zip(&dd) {
                    *o += c * dv;
                }
            }
            for (o, &dv) in a_out[d * nw..].iter_mut().zip(&dd) {
                *o += scale * dv;
            }
            let gr = &mut gx[r * d..][..d];
            for (j, g) in gr.iter_mut().enumerate() {
                let (vr, wr) = (&a[j * nw..][..nw], &y[j * nw..][..nw]);
                let mut acc = T::zero();
                for k in 0..nw {
                    acc += p[k] * vr[k] + dd[k] * wr[k];
                }
                *g += gx_scale * acc;
            }
        }
    }

    /// Lower objective `f(x, y)` (for tests and reports).
    pub fn lower_value(&self, x: &[T], y: &[T]) -> T {
        let half = T::from_f64(0.5);
        let reg = y.iter().fold(T::zero(), |a, &v| a + v * v) * half * self.l2;
        self.ce_grad(Set::Support, x, y, T::zero(), None, None) + reg
    }

    /// Upper objective `F(x, y)` and query accuracy of the head `y`.
    pub fn upper_value(&self, x: &[T], y: &[T]) -> (T, f64) {
        let loss = self.ce_grad(Set::Query, x, y, T::zero(), None, None);
        (loss, self.accuracy(x, y))
    }

    /// Fraction of query rows whose largest logit is their label.
    pub fn accuracy(&self, x: &[T], y: &[T]) -> f64 {
        let (first, labels) = self.set(Set::Query);
        let mut z = vec![T::zero(); self.ways];
        let mut hits = 0usize;
        for (i, &lab) in labels.iter().enumerate() {
            self.logits(x, y, first + i, &mut z);
            let best = (0..self.ways).fold(0, |b, k| if z[k] > z[b] { k } else { b });
            hits += usize::from(best == lab as usize);
        }
        hits as f64 / labels.len().max(1) as f64
    }
}

impl<T: Real> HostBuffers for FeatureHead<T> {
    type Scalar = T;
    fn x_len(&self) -> usize {
        self.rows() * self.dim
    }
    fn y_len(&self) -> usize {
        FeatureHead::y_len(self)
    }
}

impl<T: Real> LowerStep for FeatureHead<T> {
    fn lower_step(&mut self, x: &V<T>, y: &V<T>, w_u: T, w_l: T, y_out: &mut V<T>) -> Io {
        // y_out ← y − w_u ∇F − w_l ∇f, with ∇f including λy.
        for (o, &v) in y_out.iter_mut().zip(y) {
            *o = v - w_l * self.l2 * v;
        }
        if w_u != T::zero() {
            self.ce_grad(Set::Query, x, y, -w_u, Some(y_out), None);
        }
        self.ce_grad(Set::Support, x, y, -w_l, Some(y_out), None);
        Ok(())
    }
}

impl<T: Real> UpperGradient for FeatureHead<T> {
    fn upper_grad(&mut self, x: &V<T>, y: &V<T>, gy: &mut V<T>, gx: &mut V<T>, s: T) -> Io<T> {
        gy.fill(T::zero());
        Ok(self.ce_grad(Set::Query, x, y, T::one(), Some(gy), Some((gx, s))))
    }
}

/// No Hessian products: RHG, T-RHG and BDA.
impl<T: Real> Methods for FeatureHead<T> {}

impl<T: Real> StepAdjoint for FeatureHead<T> {
    fn step_adjoint(&mut self, x: &V<T>, y: &V<T>, wu: T, wl: T, a: &mut V<T>, g: &mut V<T>) -> Io {
        // new a = a − wu H_F a − wl H_f a; g −= (wu M_F + wl M_f)ᵀ a (old a).
        let mut out = a.clone();
        for (o, &v) in out.iter_mut().zip(a.iter()) {
            *o += -(wl * self.l2 * v);
        }
        if wu != T::zero() {
            self.second_order(Set::Query, x, y, a, -wu, &mut out, g, -wu);
        }
        self.second_order(Set::Support, x, y, a, -wl, &mut out, g, -wl);
        *a = out;
        Ok(())
    }
}
