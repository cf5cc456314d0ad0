//! Dataset-scale bi-level problems whose variables live in a backend's memory (host RAM, a
//! GPU), and the engine that runs the hypergradient methods over them.
//!
//! At dataset scale (`x ∈ R^5000`, `y ∈ R^7850` for hyper-cleaning) forward mode's `M×N`
//! tangent is out of the question, so the methods here are the reverse-mode ones of the
//! papers' experiments. A method lives in one place:
//!
//! * [`MethodConfig`] holds the user's numbers (method, K, T, CG iterations, ε, μ, α, β,
//!   `s_u`, `s_l`, warm start); [`MethodConfig::build`] checks them once into a
//!   [`MethodSpec`];
//! * [`Hypergrad`] (feature `alloc`) owns the method's buffers, allocated once through the
//!   backend, and computes `(φ, ∇φ, y_K)` ([`Hypergrad::hypergradient`]) or the lower-level
//!   solve alone ([`Hypergrad::solve_lower`]);
//! * a backend computes products and nothing else: buffers ([`Backend`], or
//!   [`HostBuffers`] for `Vec`s) and the capabilities below. `bda-cpu` implements them on
//!   the CPU, `bda-gpu` with CUDA kernels, [`FixedBackend`] for any fixed-size [`Bilevel`]
//!   problem.
//!
//! | method | backend capabilities |
//! |---|---|
//! | RHG, T-RHG, BDA (reverse mode through the K steps) | [`LowerStep`], [`UpperGradient`], [`StepAdjoint`] |
//! | IHG (implicit, conjugate gradient), O-BDA (one stage) | [`LowerStep`], [`UpperGradient`], [`LowerHessian`] |
//!
//! A backend never decides *what* is computed, only *how*: the step weights come from the
//! same [`LowerDynamics`] as in the fixed-size kernel.
//!
//! Projections: these methods run with `Y = R^m` (the papers' experiments); the lower-level
//! step of a backend applies no projection.
//!
//! [`Bilevel`]: crate::Bilevel
//! [`LowerDynamics`]: crate::LowerDynamics

use core::fmt;

use num_traits::Zero;

use crate::method::Method;
use crate::scalar::Real;

#[cfg(feature = "alloc")]
mod engine;
#[cfg(feature = "alloc")]
mod fixed;
#[cfg(feature = "alloc")]
mod host;
#[cfg(feature = "alloc")]
mod methods;
mod spec;

#[cfg(feature = "alloc")]
pub use engine::{Hypergrad, Methods};
#[cfg(feature = "alloc")]
pub use fixed::FixedBackend;
#[cfg(feature = "alloc")]
pub use host::HostBuffers;
#[cfg(feature = "alloc")]
pub use methods::CgReport;
pub use spec::{
    DescribeSpecError, MAX_STEPS, MethodConfig, MethodSpec, Param, SpecError, default_truncate,
};

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
    /// A new `y`-shaped buffer of zeros that will hold lower-level iterates (a tape slot):
    /// a backend that keeps per-iterate products with the values allocates their room
    /// here, once, rather than at the first pass of the first upper iteration. The
    /// default is [`Self::new_y`].
    fn new_state(&mut self) -> Result<Self::Y, Self::Error> {
        self.new_y()
    }
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

    /// The last step of a reverse pass: its `gx` update, after which `a` is never read (the
    /// first state does not depend on `x`, or back-propagation is truncated there), so `a`
    /// may be left anything. The default runs [`Self::step_adjoint`]; a backend whose
    /// `∇²_{yy}` products cost more than its mixed ones computes only the latter.
    fn step_adjoint_last(
        &mut self,
        x: &Self::X,
        y: &Self::Y,
        w_u: Self::T,
        w_l: Self::T,
        a: &mut Self::Y,
        gx: &mut Self::X,
    ) -> Result<(), Self::Error> {
        self.step_adjoint(x, y, w_u, w_l, a, gx)
    }
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
    /// The method needs a capability the backend does not have (IHG and O-BDA need
    /// [`LowerHessian`]).
    Unsupported {
        /// The method asked for.
        method: Method,
    },
    /// The list of the method's buffers could not be allocated.
    OutOfMemory {
        /// Buffers asked for.
        buffers: usize,
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
            MethodError::Unsupported { method } => write!(
                f,
                "{method} needs lower-level Hessian products, which this backend does not provide"
            ),
            MethodError::OutOfMemory { buffers } => {
                write!(f, "cannot allocate {buffers} lower-level buffers")
            }
            MethodError::NonFinite { ll_iter } => write!(
                f,
                "lower-level iterate became non-finite at step {ll_iter} (diverging: reduce the step sizes)"
            ),
        }
    }
}
