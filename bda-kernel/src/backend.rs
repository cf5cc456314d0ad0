//! Dataset-scale bi-level problems whose variables live in a backend's memory (host RAM, a
//! GPU), and the hypergradient methods over them.
//!
//! At dataset scale (`x ∈ R^5000`, `y ∈ R^7850` for hyper-cleaning) forward mode's `M×N`
//! tangent is out of the question, so the methods here are the reverse-mode ones of the
//! papers' experiments. They are written once, generically over a [`Backend`] that provides
//! only math primitives; `bda-host` implements them on the CPU and `bda-gpu` with CUDA
//! kernels. A backend never decides *what* is computed, only *how*: the step weights come
//! from the same [`LowerDynamics`] as in the fixed-size kernel.
//!
//! | method | function | backend capabilities |
//! |---|---|---|
//! | RHG, BDA | [`unrolled`] (`truncate = None`) | [`LowerStep`], [`UpperGradient`], [`StepAdjoint`] |
//! | T-RHG | [`unrolled`] (`truncate = Some(T)`) | same |
//! | IHG | [`implicit`] | [`LowerStep`], [`UpperGradient`], [`LowerHessian`] |
//! | O-BDA | [`one_stage`] | [`LowerStep`], [`UpperGradient`], [`LowerHessian`] |
//!
//! Projections: these methods run with `Y = R^m` (the papers' experiments); the lower-level
//! step of a backend applies no projection.

use core::fmt;

use num_traits::{One, Zero};

use crate::scalar::Real;
use crate::schedule::LowerDynamics;

/// Buffers and the vector-space operations the methods need on them.
pub trait Backend {
    /// The scalar type of the buffers.
    type T: Real;
    /// A buffer shaped like the upper-level variable `x`.
    type X;
    /// A buffer shaped like the lower-level variable `y`.
    type Y;
    /// The backend's own failure (allocation, driver error, …).
    type Error;

    /// A new `x`-shaped buffer of zeros.
    fn new_x(&mut self) -> Result<Self::X, Self::Error>;
    /// A new `y`-shaped buffer of zeros.
    fn new_y(&mut self) -> Result<Self::Y, Self::Error>;
    /// `dst ← src`.
    fn copy_y(&mut self, src: &Self::Y, dst: &mut Self::Y) -> Result<(), Self::Error>;
    /// `y ← y + a·v`.
    fn axpy_y(&mut self, a: Self::T, v: &Self::Y, y: &mut Self::Y) -> Result<(), Self::Error>;
    /// `y ← a·y`.
    fn scale_y(&mut self, a: Self::T, y: &mut Self::Y) -> Result<(), Self::Error>;
    /// `y ← 0`. The default multiplies by zero, which keeps NaN and ∞; backends override it
    /// with a real fill (a memset on a GPU).
    fn zero_y(&mut self, y: &mut Self::Y) -> Result<(), Self::Error> {
        self.scale_y(Self::T::zero(), y)
    }
    /// `⟨a, b⟩` (a synchronisation point on a GPU: used by CG only).
    fn dot_y(&mut self, a: &Self::Y, b: &Self::Y) -> Result<Self::T, Self::Error>;
    /// `x ← 0`.
    fn zero_x(&mut self, x: &mut Self::X) -> Result<(), Self::Error>;
    /// Whether every entry of `y` is finite (used only to locate a divergence).
    fn y_is_finite(&mut self, y: &Self::Y) -> Result<bool, Self::Error>;
    /// Copy host values into an `x` buffer (`src.len()` = dimension of `x`).
    fn upload_x(&mut self, src: &[Self::T], dst: &mut Self::X) -> Result<(), Self::Error>;
    /// Copy an `x` buffer to the host.
    fn download_x(&mut self, src: &Self::X, dst: &mut [Self::T]) -> Result<(), Self::Error>;
    /// Copy host values into a `y` buffer.
    fn upload_y(&mut self, src: &[Self::T], dst: &mut Self::Y) -> Result<(), Self::Error>;
    /// Copy a `y` buffer to the host.
    fn download_y(&mut self, src: &Self::Y, dst: &mut [Self::T]) -> Result<(), Self::Error>;
}

#[cfg(feature = "alloc")]
pub use host::HostBuffers;

#[cfg(feature = "alloc")]
mod host {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::convert::Infallible;

    use num_traits::Zero;

    use super::Backend;
    use crate::scalar::Real;

    /// A backend whose buffers are `Vec`s in host memory: implement the two lengths and get
    /// every buffer operation of [`Backend`] (with `X = Y = Vec<Scalar>` and an
    /// `Infallible` error), so host backends only write their math.
    pub trait HostBuffers {
        /// The scalar type of the buffers.
        type Scalar: Real;
        /// Length of an `x` buffer.
        fn x_len(&self) -> usize;
        /// Length of a `y` buffer.
        fn y_len(&self) -> usize;
    }

    impl<B: HostBuffers> Backend for B {
        type T = B::Scalar;
        type X = Vec<B::Scalar>;
        type Y = Vec<B::Scalar>;
        type Error = Infallible;

        fn new_x(&mut self) -> Result<Self::X, Infallible> {
            Ok(vec![B::Scalar::zero(); HostBuffers::x_len(self)])
        }
        fn new_y(&mut self) -> Result<Self::Y, Infallible> {
            Ok(vec![B::Scalar::zero(); HostBuffers::y_len(self)])
        }
        fn copy_y(&mut self, src: &Self::Y, dst: &mut Self::Y) -> Result<(), Infallible> {
            dst.copy_from_slice(src);
            Ok(())
        }
        fn axpy_y(&mut self, a: Self::T, v: &Self::Y, y: &mut Self::Y) -> Result<(), Infallible> {
            y.iter_mut().zip(v).for_each(|(y, &v)| *y += a * v);
            Ok(())
        }
        fn scale_y(&mut self, a: Self::T, y: &mut Self::Y) -> Result<(), Infallible> {
            y.iter_mut().for_each(|y| *y *= a);
            Ok(())
        }
        fn zero_y(&mut self, y: &mut Self::Y) -> Result<(), Infallible> {
            y.fill(B::Scalar::zero());
            Ok(())
        }
        fn dot_y(&mut self, a: &Self::Y, b: &Self::Y) -> Result<Self::T, Infallible> {
            Ok(a.iter()
                .zip(b)
                .fold(B::Scalar::zero(), |s, (&u, &v)| s + u * v))
        }
        fn zero_x(&mut self, x: &mut Self::X) -> Result<(), Infallible> {
            x.fill(B::Scalar::zero());
            Ok(())
        }
        fn y_is_finite(&mut self, y: &Self::Y) -> Result<bool, Infallible> {
            Ok(y.iter().all(|v| v.is_finite()))
        }
        fn upload_x(&mut self, src: &[Self::T], dst: &mut Self::X) -> Result<(), Infallible> {
            dst.copy_from_slice(src);
            Ok(())
        }
        fn download_x(&mut self, src: &Self::X, dst: &mut [Self::T]) -> Result<(), Infallible> {
            dst.copy_from_slice(src);
            Ok(())
        }
        fn upload_y(&mut self, src: &[Self::T], dst: &mut Self::Y) -> Result<(), Infallible> {
            dst.copy_from_slice(src);
            Ok(())
        }
        fn download_y(&mut self, src: &Self::Y, dst: &mut [Self::T]) -> Result<(), Infallible> {
            dst.copy_from_slice(src);
            Ok(())
        }
    }
}

/// Capability: one lower-level step of Eq. (9) without projection,
/// `y_out ← y − (w_u ∇_y F(x, y) + w_l ∇_y f(x, y))`. With `w_u = 0` the backend may skip
/// `∇_y F`.
pub trait LowerStep: Backend {
    /// One step; `y_out` may not alias `y`.
    fn lower_step(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        w_u: Self::T,
        w_l: Self::T,
        y_out: &mut Self::Y,
    ) -> Result<(), Self::Error>;
}

/// Capability: the upper objective and its gradients.
pub trait UpperGradient: Backend {
    /// Whether `F` depends on `x` at all. When it does not (hyper-cleaning), methods skip
    /// the evaluations made only for `∂_x F`.
    fn upper_depends_on_x(&self) -> bool {
        true
    }

    /// Returns `F(x, y)`, writes `∇_y F(x, y)` into `gy` and adds `gx_scale·∇_x F(x, y)` to
    /// `gx`.
    fn upper_grad(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        gy: &mut Self::Y,
        gx: &mut Self::X,
        gx_scale: Self::T,
    ) -> Result<Self::T, Self::Error>;
}

/// Capability: the adjoint (vector–Jacobian product) of one lower-level step at `y`, fused
/// so that a backend can serve all its products in one pass over the data:
///
/// `gx ← gx − (w_u ∂²_{xy}F + w_l ∂²_{xy}f)ᵀ·a` and then `a ← a − w_u ∇²_{yy}F·a − w_l ∇²_{yy}f·a`,
/// all derivatives at `(x, y)`.
pub trait StepAdjoint: Backend {
    /// One reverse step; `a` is updated in place.
    fn step_adjoint(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        w_u: Self::T,
        w_l: Self::T,
        a: &mut Self::Y,
        gx: &mut Self::X,
    ) -> Result<(), Self::Error>;
}

/// Capability: second derivatives of the lower objective, for the implicit and one-stage
/// methods.
pub trait LowerHessian: Backend {
    /// `out ← ∇²_{yy} f(x, y)·v`.
    fn lower_hvp(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        v: &Self::Y,
        out: &mut Self::Y,
    ) -> Result<(), Self::Error>;
    /// `gx ← gx + scale·(∂²_{xy} f(x, y))ᵀ·v`.
    fn lower_mixed_vjp(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        v: &Self::Y,
        scale: Self::T,
        gx: &mut Self::X,
    ) -> Result<(), Self::Error>;
    /// `gx ← gx + scale·∇_x f(x, y)`.
    fn lower_grad_x(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        scale: Self::T,
        gx: &mut Self::X,
    ) -> Result<(), Self::Error>;
}

/// Why a dataset-scale hypergradient failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodError<E> {
    /// The backend failed.
    Backend(E),
    /// The tape given for the K steps is too short (`needed` buffers).
    TapeTooShort {
        /// Buffers needed.
        needed: usize,
    },
    /// `y_k` became non-finite at lower step `ll_iter` (1-based; 0 when the divergence
    /// was only seen in the upper value or the gradient).
    NonFinite {
        /// The lower-level step.
        ll_iter: u32,
    },
}

impl<E> From<E> for MethodError<E> {
    fn from(e: E) -> Self {
        MethodError::Backend(e)
    }
}

impl<E: fmt::Display> fmt::Display for MethodError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodError::Backend(e) => write!(f, "{e}"),
            MethodError::TapeTooShort { needed } => {
                write!(f, "tape too short: {needed} lower-level buffers needed")
            }
            MethodError::NonFinite { ll_iter } => write!(
                f,
                "lower-level iterate became non-finite at step {ll_iter} (diverging: reduce the step sizes)"
            ),
        }
    }
}

/// Number of `y` buffers [`unrolled`] needs in its tape: the states it must revisit in the
/// reverse pass (`y_{K−T}, …, y_{K−1}`) plus one to hold `y_K`.
pub fn tape_len(steps: u32, truncate: Option<u32>) -> usize {
    let kept = truncate.map_or(steps, |t| t.min(steps));
    kept as usize + 1
}

/// Reverse-mode hypergradient through the K steps of `dynamics` (RHG with
/// [`LowerDynamics::LowerOnly`], BDA with [`LowerDynamics::Aggregated`]); with
/// `truncate = Some(T)`, back-propagation stops after the last T steps (T-RHG).
///
/// Writes `∇φ_K(x)` into `gx`, `y_K` into `y_out`, and returns `φ_K(x) = F(x, y_K)`.
/// `tape` holds at least [`tape_len`]`(steps, truncate)` buffers; only the states the
/// reverse pass revisits are stored (T+1 buffers for T-RHG). `adj` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn unrolled<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    steps: u32,
    truncate: Option<u32>,
    tape: &mut [B::Y],
    adj: &mut B::Y,
    gx: &mut B::X,
    y_out: &mut B::Y,
) -> Result<B::T, MethodError<B::Error>>
where
    B: LowerStep + UpperGradient + StepAdjoint,
{
    let needed = tape_len(steps, truncate);
    if tape.len() < needed || steps == 0 {
        return Err(MethodError::TapeTooShort { needed });
    }
    let kept = needed - 1; // states y_{K−kept}, …, y_{K−1} revisited by the reverse pass
    let first_kept = steps as usize - kept;
    // Slot of y_k: from `first_kept` on, tape[k − first_kept]; before that the iterates
    // alternate between slots 0 and 1 so that y_{first_kept} lands in slot 0. With nothing
    // kept (T = 0) every iterate lives in slot 0 and steps go through `adj`.
    let slot = |k: usize| -> usize {
        if kept == 0 {
            0
        } else if k >= first_kept {
            k - first_kept
        } else {
            (first_kept - k) % 2
        }
    };
    b.copy_y(y0, &mut tape[slot(0)])?;
    for k in 1..=steps as usize {
        let (wu, wl) = dynamics.weights(k as u32);
        let (from, to) = (slot(k - 1), slot(k));
        if from == to {
            b.lower_step(x, &tape[from], wu, wl, adj)?;
            b.copy_y(adj, &mut tape[to])?;
        } else {
            let (src, dst) = two_mut(tape, from, to);
            b.lower_step(x, src, wu, wl, dst)?;
        }
    }
    let cur = slot(steps as usize);
    b.copy_y(&tape[cur], y_out)?;
    b.zero_x(gx)?;
    let upper = b.upper_grad(x, &tape[cur], adj, gx, B::T::one())?;
    if !upper.is_finite() {
        return Err(locate_divergence(b, &tape[..=cur]));
    }
    // Reverse over the kept steps: y_{k−1} = tape[k − 1 − first_kept].
    for k in ((first_kept + 1)..=steps as usize).rev() {
        let (wu, wl) = dynamics.weights(k as u32);
        b.step_adjoint(x, &tape[slot(k - 1)], wu, wl, adj, gx)?;
    }
    Ok(upper)
}

fn two_mut<Y>(s: &mut [Y], a: usize, b: usize) -> (&Y, &mut Y) {
    if a < b {
        let (lo, hi) = s.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = s.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

fn locate_divergence<B: Backend>(b: &mut B, tape: &[B::Y]) -> MethodError<B::Error> {
    for (i, y) in tape.iter().enumerate() {
        match b.y_is_finite(y) {
            Ok(true) => {}
            Ok(false) => return MethodError::NonFinite { ll_iter: i as u32 },
            Err(e) => return MethodError::Backend(e),
        }
    }
    MethodError::NonFinite { ll_iter: 0 }
}

/// Scratch buffers of [`implicit`].
pub struct CgScratch<Y> {
    /// Residual.
    pub r: Y,
    /// Search direction.
    pub p: Y,
    /// `H·p`.
    pub hp: Y,
    /// The solution `v ≈ H⁻¹∇_y F`.
    pub v: Y,
}

/// Implicit hypergradient (IHG): run the K lower-level steps of `dynamics` from `y0`
/// (ping-ponging `y_out` and `cg.r`), then
/// `∇φ(x) ≈ ∇_x F − (∂²_{xy} f)ᵀ v` with `∇²_{yy} f · v = ∇_y F` solved by `cg_iters`
/// iterations of conjugate gradient (which needs `∇²_{yy} f` positive semi-definite).
/// Returns `F(x, y_K)`.
#[allow(clippy::too_many_arguments)]
pub fn implicit<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    steps: u32,
    cg_iters: u32,
    cg: &mut CgScratch<B::Y>,
    gx: &mut B::X,
    y_out: &mut B::Y,
) -> Result<B::T, MethodError<B::Error>>
where
    B: LowerStep + UpperGradient + LowerHessian,
{
    b.copy_y(y0, y_out)?;
    for k in 1..=steps {
        let (wu, wl) = dynamics.weights(k);
        b.lower_step(x, y_out, wu, wl, &mut cg.r)?;
        core::mem::swap(y_out, &mut cg.r);
    }
    if !b.y_is_finite(y_out)? {
        return Err(MethodError::NonFinite { ll_iter: steps });
    }
    let y = &*y_out;
    b.zero_x(gx)?;
    // r = ∇_y F − H·0, p = r, v = 0.
    let upper = b.upper_grad(x, y, &mut cg.r, gx, B::T::one())?;
    b.copy_y(&cg.r, &mut cg.p)?;
    b.zero_y(&mut cg.v)?;
    let mut rr = b.dot_y(&cg.r, &cg.r)?;
    let tiny = B::T::EPSILON * B::T::EPSILON;
    for _ in 0..cg_iters {
        if rr <= tiny {
            break;
        }
        b.lower_hvp(x, y, &cg.p, &mut cg.hp)?;
        let php = b.dot_y(&cg.p, &cg.hp)?;
        if !php.is_finite() || php <= B::T::zero() {
            break; // direction of non-positive curvature: stop with the current solution
        }
        let alpha = rr / php;
        b.axpy_y(alpha, &cg.p, &mut cg.v)?;
        b.axpy_y(-alpha, &cg.hp, &mut cg.r)?;
        let rr_new = b.dot_y(&cg.r, &cg.r)?;
        let beta = rr_new / rr;
        b.scale_y(beta, &mut cg.p)?;
        b.axpy_y(B::T::one(), &cg.r, &mut cg.p)?;
        rr = rr_new;
    }
    b.lower_mixed_vjp(x, y, &cg.v, -B::T::one(), gx)?;
    Ok(upper)
}

/// Scratch buffers of [`one_stage`].
pub struct OneStageScratch<Y> {
    /// `∇_y F(x, y₁)`.
    pub g: Y,
    /// `h± = y₀ ± ε·g`.
    pub h: Y,
    /// Receives the `∇_y F` that [`UpperGradient::upper_grad`] writes when only its
    /// `∂_x F` part is wanted.
    pub sink: Y,
}

/// One-stage BDA (journal §7.3, Eq. 42): a single aggregated step
/// `y₁ = y₀ − s∇_y φ(x, y₀)` with `φ = αF + βf`, and the finite-difference hypergradient
///
/// `dφ₁/dx ≈ ∂_x F(x, y₁) − s·(∂_x φ(x, h⁺) − ∂_x φ(x, h⁻)) / (2ε)`, `h± = y₀ ± ε∇_y F(x, y₁)`.
///
/// `(α, β, s)` are given as the step weights `(w_u, w_l) = (sα, sβ)` of step `k = 1` of
/// `dynamics`, so the one stage is exactly the first step of the K-step methods.
/// `eps` is the finite-difference step ε. Returns `F(x, y₁)`.
#[allow(clippy::too_many_arguments)]
pub fn one_stage<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    eps: B::T,
    scratch: &mut OneStageScratch<B::Y>,
    gx: &mut B::X,
    y_out: &mut B::Y,
) -> Result<B::T, MethodError<B::Error>>
where
    B: LowerStep + UpperGradient + LowerHessian,
{
    let (wu, wl) = dynamics.weights(1);
    b.lower_step(x, y0, wu, wl, y_out)?;
    if !b.y_is_finite(y_out)? {
        return Err(MethodError::NonFinite { ll_iter: 1 });
    }
    b.zero_x(gx)?;
    let upper = b.upper_grad(x, y_out, &mut scratch.g, gx, B::T::one())?;
    // gx −= (w_u ∂_x F + w_l ∂_x f)(x, h⁺) / (2ε) − (same at h⁻) / (2ε)
    let c = B::T::one() / (eps + eps);
    for (sign, h_eps) in [(-c, eps), (c, -eps)] {
        b.copy_y(y0, &mut scratch.h)?;
        b.axpy_y(h_eps, &scratch.g, &mut scratch.h)?;
        if wu != B::T::zero() && b.upper_depends_on_x() {
            b.upper_grad(x, &scratch.h, &mut scratch.sink, gx, sign * wu)?;
        }
        b.lower_grad_x(x, &scratch.h, sign * wl, gx)?;
    }
    Ok(upper)
}
