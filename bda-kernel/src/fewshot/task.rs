//! One task of whole-network meta-learning as a backend of the engine: the MAML family as
//! specifications of the dataset-scale methods rather than loops of their own.
//!
//! * `x`: the meta-learned initialisation, every weight of the [`Network`];
//! * `y`: the task's adapted weights, starting from `y₀ = x`;
//! * `f(x, y) = L_support(y) + (λ/2)‖y − x‖²` (λ = 0 but for iMAML's proximal term);
//! * `F(x, y) = L_query(y)`.
//!
//! Then MAML is RHG (the engine's reverse pass through the K inner steps) and BDA on the
//! whole network is BDA; because `y₀ = x`, the adjoint left after the reverse pass is part
//! of the meta-gradient (`dy₀/dx = I`), and [`StepAdjoint::step_adjoint_last`] adds it to
//! `gx`. iMAML is IHG with the proximal term: `∇φ = λ(∇²L_support + λI)⁻¹∇L_query` at the
//! inner solution, `(I + H/λ)⁻¹∇F`, by conjugate gradient on [`LowerHessian::lower_hvp`].
//! Meta-SGD learns a step size per weight besides the initialisation
//! ([`NetworkTask::per_weight_steps`]: `x = [initialisation | α]`, the inner step
//! `y ← y − w_l·α ⊙ ∇_y f`): it is RHG on that `x`. First-order MAML (`∇L_query(y_K)`) and
//! Reptile (`x − y_K`) need only the inner solve.
//!
//! In `f64`, on the reference [`Network`]: what the device backends of the MAML family are
//! checked against.

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use super::network::Network;
use crate::backend::{
    HostBuffers, Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};

type V = Vec<f64>;
type Io<R = ()> = Result<R, Infallible>;

/// One task: its support and query images and labels, iMAML's proximal weight and whether
/// Meta-SGD's step sizes are part of `x`.
#[derive(Clone, Copy, Debug)]
pub struct NetworkTask<'a> {
    /// The network.
    pub net: Network,
    /// Support images (`in_channels·side²` values each, channel-major) and labels.
    pub support: (&'a [f64], &'a [u8]),
    /// Query images and labels.
    pub query: (&'a [f64], &'a [u8]),
    /// λ of the proximal term `(λ/2)‖y − x‖²` (iMAML; 0 otherwise).
    pub prox: f64,
    /// Meta-SGD: `x` is the initialisation followed by a step size per weight, `α`; the
    /// inner step is `y ← y − w_l·α ⊙ ∇_y f` (with the spec's step `s_l = 1`, `w_l = β_k`),
    /// and `y₀` is `x`'s first half.
    pub per_weight_steps: bool,
}

impl NetworkTask<'_> {
    /// The initialisation part of `x` and, with per-weight steps, the step sizes.
    fn parts<'x>(&self, x: &'x [f64]) -> (&'x [f64], Option<&'x [f64]>) {
        let n = self.net.num_params();
        (&x[..n], self.per_weight_steps.then(|| &x[n..]))
    }

    /// `∇_y f(x, y) = ∇L_support(y) + λ(y − x₀)`.
    fn lower_grad(&self, x0: &[f64], y: &[f64]) -> V {
        let (_, mut g) = self.grad(y, false);
        for ((g, y), x) in g.iter_mut().zip(y).zip(x0) {
            *g += self.prox * (y - x);
        }
        g
    }

    /// `∇_y L(y)` of the support (`query = false`) or query set.
    fn grad(&self, y: &[f64], query: bool) -> (f64, V) {
        let (images, labels) = if query { self.query } else { self.support };
        let mut g = vec![0.0; y.len()];
        let loss = self.net.loss_grad(y, images, labels, Some(&mut g));
        (loss, g)
    }

    /// `∇²_y L(y)·v` of the support or query set.
    fn hvp(&self, y: &[f64], v: &[f64], query: bool) -> V {
        let (images, labels) = if query { self.query } else { self.support };
        self.net.hvp(y, v, images, labels)
    }
}

impl HostBuffers for NetworkTask<'_> {
    type Scalar = f64;
    fn x_len(&self) -> usize {
        self.net.num_params() * if self.per_weight_steps { 2 } else { 1 }
    }
    fn y_len(&self) -> usize {
        self.net.num_params()
    }
}

impl LowerStep for NetworkTask<'_> {
    fn lower_step(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, y_out: &mut V) -> Io {
        y_out.copy_from_slice(y);
        if w_l != 0.0 {
            let (x0, alpha) = self.parts(x);
            let g = self.lower_grad(x0, y);
            for (i, (o, g)) in y_out.iter_mut().zip(&g).enumerate() {
                *o -= w_l * alpha.map_or(1.0, |a| a[i]) * g;
            }
        }
        if w_u != 0.0 {
            let (_, g) = self.grad(y, true);
            y_out.iter_mut().zip(&g).for_each(|(o, g)| *o -= w_u * g);
        }
        Ok(())
    }
}

impl UpperGradient for NetworkTask<'_> {
    fn upper_depends_on_x(&self) -> bool {
        false
    }
    fn upper_grad(&mut self, _: &V, y: &V, gy: &mut V, _: &mut V, _: f64) -> Io<f64> {
        let (loss, g) = self.grad(y, true);
        gy.copy_from_slice(&g);
        Ok(loss)
    }
}

impl StepAdjoint for NetworkTask<'_> {
    /// The step `y − w_l·α ⊙ ∇_y f − w_u ∇F` (`α = 1` without per-weight steps), where
    /// `∂(∇_y f)/∂x₀ = −λI`: `gx₀ += w_l·λ·α ⊙ a`, `gx_α −= w_l·∇_y f ⊙ a`, then
    /// `a ← a − w_u ∇²F·a − w_l (∇²L_support + λI)·(α ⊙ a)`.
    fn step_adjoint(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        let (lam, n) = (self.prox, self.net.num_params());
        let (x0, alpha) = self.parts(x);
        let scaled: V = match alpha {
            Some(al) => a.iter().zip(al).map(|(a, s)| a * s).collect(),
            None => a.clone(),
        };
        if w_l != 0.0 && lam != 0.0 {
            for (g, s) in gx[..n].iter_mut().zip(&scaled) {
                *g += w_l * lam * s;
            }
        }
        if w_l != 0.0 && alpha.is_some() {
            let d = self.lower_grad(x0, y);
            for ((g, d), a) in gx[n..].iter_mut().zip(&d).zip(a.iter()) {
                *g -= w_l * d * a;
            }
        }
        let hf = (w_l != 0.0).then(|| self.hvp(y, &scaled, false));
        let hu = (w_u != 0.0).then(|| self.hvp(y, a, true));
        for (i, ai) in a.iter_mut().enumerate() {
            let mut d = 0.0;
            if let Some(h) = &hf {
                d += w_l * (h[i] + lam * scaled[i]);
            }
            if let Some(h) = &hu {
                d += w_u * h[i];
            }
            *ai -= d;
        }
        Ok(())
    }

    /// The first step's adjoint, then `gx₀ += a`: the first state is `y₀ = x₀`.
    fn step_adjoint_last(&mut self, x: &V, y: &V, w_u: f64, w_l: f64, a: &mut V, gx: &mut V) -> Io {
        self.step_adjoint(x, y, w_u, w_l, a, gx)?;
        gx.iter_mut().zip(a.iter()).for_each(|(g, a)| *g += a);
        Ok(())
    }
}

/// iMAML's products; with per-weight steps, on the initialisation's part of `x` (the
/// inner solution does not depend on the step sizes).
impl LowerHessian for NetworkTask<'_> {
    fn lower_hvp(&mut self, _: &V, y: &V, v: &V, out: &mut V) -> Io {
        let h = self.hvp(y, v, false);
        for ((o, h), v) in out.iter_mut().zip(&h).zip(v) {
            *o = h + self.prox * v;
        }
        Ok(())
    }
    fn lower_mixed_vjp(&mut self, _: &V, _: &V, v: &V, scale: f64, gx: &mut V) -> Io {
        let lam = self.prox;
        gx.iter_mut()
            .zip(v)
            .for_each(|(g, v)| *g -= scale * lam * v);
        Ok(())
    }
    fn lower_grad_x(&mut self, x: &V, y: &V, scale: f64, gx: &mut V) -> Io {
        let lam = self.prox;
        for ((g, y), x) in gx.iter_mut().zip(y).zip(x) {
            *g -= scale * lam * (y - x);
        }
        Ok(())
    }
}

/// Every method: the task has Hessian products.
impl Methods for NetworkTask<'_> {
    fn hypergrad(
        &mut self,
        spec: MethodSpec<f64>,
    ) -> Result<Hypergrad<Self>, MethodError<Infallible>> {
        Hypergrad::new(self, spec)
    }
}
