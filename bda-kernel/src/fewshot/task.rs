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
//! The products come from a [`NetworkLoss`]: [`ReferenceTask`], the `f64` reference
//! [`Network`] that the CPU and device products are checked against, or a backend's.

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use super::network::Network;
use crate::backend::{
    HostBuffers, Hypergrad, LowerHessian, LowerStep, MethodError, MethodSpec, Methods, StepAdjoint,
    UpperGradient,
};
use crate::scalar::{Real, Scalar};
use num_traits::{One, Zero};

/// Which of a task's two sets a product is taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSet {
    /// The support set: the lower objective's data.
    Support,
    /// The query set: the upper objective's data.
    Query,
}

/// The products of the whole network on one task's two sets: all a backend of the MAML
/// family computes. [`NetworkTask`] builds every method's step and adjoint from them, so
/// that the proximal term, Meta-SGD's step sizes and `y₀ = x` are written once.
pub trait NetworkLoss {
    /// The scalar type of the weights.
    type Scalar: Real;
    /// Weights of the whole network (the length of `y`).
    fn num_params(&self) -> usize;
    /// The mean cross-entropy of `set` under weights `y`, its gradient written to `grad`.
    fn loss_grad(
        &mut self,
        y: &[Self::Scalar],
        set: TaskSet,
        grad: &mut [Self::Scalar],
    ) -> Self::Scalar;
    /// `∇²L_set(y)·v` written to `out`.
    fn hvp(
        &mut self,
        y: &[Self::Scalar],
        v: &[Self::Scalar],
        set: TaskSet,
        out: &mut [Self::Scalar],
    );
}

/// The `f64` reference products: [`Network`] on one task's images.
#[derive(Clone, Copy, Debug)]
pub struct ReferenceTask<'a> {
    /// The network.
    pub net: Network,
    /// Support images (`in_channels·side²` values each, channel-major) and labels.
    pub support: (&'a [f64], &'a [u8]),
    /// Query images and labels.
    pub query: (&'a [f64], &'a [u8]),
}

impl ReferenceTask<'_> {
    fn set(&self, set: TaskSet) -> (&[f64], &[u8]) {
        match set {
            TaskSet::Support => self.support,
            TaskSet::Query => self.query,
        }
    }
}

impl NetworkLoss for ReferenceTask<'_> {
    type Scalar = f64;
    fn num_params(&self) -> usize {
        self.net.num_params()
    }
    fn loss_grad(&mut self, y: &[f64], set: TaskSet, grad: &mut [f64]) -> f64 {
        let (images, labels) = self.set(set);
        self.net.loss_grad(y, images, labels, Some(grad))
    }
    fn hvp(&mut self, y: &[f64], v: &[f64], set: TaskSet, out: &mut [f64]) {
        let (images, labels) = self.set(set);
        out.copy_from_slice(&self.net.hvp(y, v, images, labels));
    }
}

/// One task as a backend of the engine: the products `L`, iMAML's proximal weight and
/// whether Meta-SGD's step sizes are part of `x`.
#[derive(Clone, Copy, Debug)]
pub struct NetworkTask<L> {
    /// The network's products on the task's sets.
    pub loss: L,
    /// λ of the proximal term `(λ/2)‖y − x‖²` (iMAML; 0 otherwise).
    pub prox: f64,
    /// Meta-SGD: `x` is the initialisation followed by a step size per weight, `α`; the
    /// inner step is `y ← y − w_l·α ⊙ ∇_y f` (with the spec's step `s_l = 1`, `w_l = β_k`),
    /// and `y₀` is `x`'s first half.
    pub per_weight_steps: bool,
}

impl<L: NetworkLoss> NetworkTask<L> {
    /// The initialisation part of `x` and, with per-weight steps, the step sizes.
    fn parts<'x>(&self, x: &'x [L::Scalar]) -> (&'x [L::Scalar], Option<&'x [L::Scalar]>) {
        let n = self.loss.num_params();
        (&x[..n], self.per_weight_steps.then(|| &x[n..]))
    }

    fn lam(&self) -> L::Scalar {
        L::Scalar::from_f64(self.prox)
    }

    /// `∇_y f(x, y) = ∇L_support(y) + λ(y − x₀)`.
    fn lower_grad(&mut self, x0: &[L::Scalar], y: &[L::Scalar]) -> Vec<L::Scalar> {
        let (_, mut g) = self.grad(y, TaskSet::Support);
        let lam = self.lam();
        if self.prox != 0.0 {
            for ((g, &y), &x) in g.iter_mut().zip(y).zip(x0) {
                *g += lam * (y - x);
            }
        }
        g
    }

    /// `∇_y L(y)` of a set, and the loss.
    fn grad(&mut self, y: &[L::Scalar], set: TaskSet) -> (L::Scalar, Vec<L::Scalar>) {
        let mut g = vec![L::Scalar::zero(); y.len()];
        let loss = self.loss.loss_grad(y, set, &mut g);
        (loss, g)
    }

    /// `∇²L_set(y)·v`.
    fn hvp(&mut self, y: &[L::Scalar], v: &[L::Scalar], set: TaskSet) -> Vec<L::Scalar> {
        let mut out = vec![L::Scalar::zero(); y.len()];
        self.loss.hvp(y, v, set, &mut out);
        out
    }
}

type V<L> = Vec<<L as NetworkLoss>::Scalar>;
type Io<R = ()> = Result<R, Infallible>;

impl<L: NetworkLoss> HostBuffers for NetworkTask<L> {
    type Scalar = L::Scalar;
    fn x_len(&self) -> usize {
        self.loss.num_params() * if self.per_weight_steps { 2 } else { 1 }
    }
    fn y_len(&self) -> usize {
        self.loss.num_params()
    }
}

impl<L: NetworkLoss> LowerStep for NetworkTask<L> {
    fn lower_step(
        &mut self,
        x: &V<L>,
        y: &V<L>,
        w_u: L::Scalar,
        w_l: L::Scalar,
        y_out: &mut V<L>,
    ) -> Io {
        y_out.copy_from_slice(y);
        if w_l != L::Scalar::zero() {
            let (x0, alpha) = self.parts(x);
            let g = self.lower_grad(x0, y);
            for (i, (o, &g)) in y_out.iter_mut().zip(&g).enumerate() {
                *o -= w_l * alpha.map_or(L::Scalar::one(), |a| a[i]) * g;
            }
        }
        if w_u != L::Scalar::zero() {
            let (_, g) = self.grad(y, TaskSet::Query);
            y_out.iter_mut().zip(&g).for_each(|(o, &g)| *o -= w_u * g);
        }
        Ok(())
    }
}

impl<L: NetworkLoss> UpperGradient for NetworkTask<L> {
    fn upper_depends_on_x(&self) -> bool {
        false
    }
    fn upper_grad(
        &mut self,
        _: &V<L>,
        y: &V<L>,
        gy: &mut V<L>,
        _: &mut V<L>,
        _: L::Scalar,
    ) -> Io<L::Scalar> {
        Ok(self.loss.loss_grad(y, TaskSet::Query, gy))
    }
}

impl<L: NetworkLoss> StepAdjoint for NetworkTask<L> {
    /// The step `y − w_l·α ⊙ ∇_y f − w_u ∇F` (`α = 1` without per-weight steps), where
    /// `∂(∇_y f)/∂x₀ = −λI`: `gx₀ += w_l·λ·α ⊙ a`, `gx_α −= w_l·∇_y f ⊙ a`, then
    /// `a ← a − w_u ∇²F·a − w_l (∇²L_support + λI)·(α ⊙ a)`.
    fn step_adjoint(
        &mut self,
        x: &V<L>,
        y: &V<L>,
        w_u: L::Scalar,
        w_l: L::Scalar,
        a: &mut V<L>,
        gx: &mut V<L>,
    ) -> Io {
        let zero = L::Scalar::zero();
        let (lam, n) = (self.lam(), self.loss.num_params());
        let (x0, alpha) = self.parts(x);
        let scaled: V<L> = match alpha {
            Some(al) => a.iter().zip(al).map(|(&a, &s)| a * s).collect(),
            None => a.clone(),
        };
        if w_l != zero && self.prox != 0.0 {
            for (g, &s) in gx[..n].iter_mut().zip(&scaled) {
                *g += w_l * lam * s;
            }
        }
        if w_l != zero && alpha.is_some() {
            let d = self.lower_grad(x0, y);
            for ((g, &d), &a) in gx[n..].iter_mut().zip(&d).zip(a.iter()) {
                *g -= w_l * d * a;
            }
        }
        let hf = if w_l != zero {
            Some(self.hvp(y, &scaled, TaskSet::Support))
        } else {
            None
        };
        let hu = if w_u != zero {
            Some(self.hvp(y, a, TaskSet::Query))
        } else {
            None
        };
        for (i, ai) in a.iter_mut().enumerate() {
            let mut d = zero;
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
    fn step_adjoint_last(
        &mut self,
        x: &V<L>,
        y: &V<L>,
        w_u: L::Scalar,
        w_l: L::Scalar,
        a: &mut V<L>,
        gx: &mut V<L>,
    ) -> Io {
        self.step_adjoint(x, y, w_u, w_l, a, gx)?;
        gx.iter_mut().zip(a.iter()).for_each(|(g, &a)| *g += a);
        Ok(())
    }
}

/// iMAML's products; with per-weight steps, on the initialisation's part of `x` (the
/// inner solution does not depend on the step sizes).
impl<L: NetworkLoss> LowerHessian for NetworkTask<L> {
    fn lower_hvp(&mut self, _: &V<L>, y: &V<L>, v: &V<L>, out: &mut V<L>) -> Io {
        self.loss.hvp(y, v, TaskSet::Support, out);
        let lam = self.lam();
        out.iter_mut().zip(v).for_each(|(o, &v)| *o += lam * v);
        Ok(())
    }
    fn lower_mixed_vjp(
        &mut self,
        _: &V<L>,
        _: &V<L>,
        v: &V<L>,
        scale: L::Scalar,
        gx: &mut V<L>,
    ) -> Io {
        let lam = self.lam();
        gx.iter_mut()
            .zip(v)
            .for_each(|(g, &v)| *g -= scale * lam * v);
        Ok(())
    }
    fn lower_grad_x(&mut self, x: &V<L>, y: &V<L>, scale: L::Scalar, gx: &mut V<L>) -> Io {
        let lam = self.lam();
        for ((g, &y), &x) in gx.iter_mut().zip(y).zip(x) {
            *g -= scale * lam * (y - x);
        }
        Ok(())
    }
}

/// Every method: the task has Hessian products.
impl<L: NetworkLoss> Methods for NetworkTask<L> {
    fn hypergrad(
        &mut self,
        spec: MethodSpec<L::Scalar>,
    ) -> Result<Hypergrad<Self>, MethodError<Infallible>> {
        Hypergrad::new(self, spec)
    }
}
