//! The bodies of the dataset-scale methods, over the capability traits. They borrow every
//! buffer they use: [`super::Hypergrad`] owns the buffers and picks the body.

use num_traits::{One, Zero};

use super::spec::segment_len;
use super::{LowerHessian, LowerStep, MethodError, StepAdjoint, UpperGradient};
use crate::scalar::{Real, Scalar};
use crate::schedule::LowerDynamics;

/// Reverse-mode hypergradient through `steps` steps of `dynamics` (RHG with `LowerOnly`,
/// BDA with `Aggregated`); with `truncate = Some(T)`, back-propagation stops after the last
/// T steps (T-RHG).
///
/// Writes `∇φ_K(x)` into `gx`, `y_K` into `y_out`, and returns `φ_K(x) = F(x, y_K)`.
///
/// The reverse pass revisits the `kept` (T or K) states before `y_K`. With `every = c`,
/// only every c-th of them is kept (reverse-mode checkpointing): `tape` holds the
/// `⌈kept/c⌉` checkpoints (the states `first_kept + j·c`), then [`segment_len`]`(c)`
/// buffers for one segment's other states, recomputed from its checkpoint just before the
/// reverse pass crosses it, and for `y_K`. `c = 1` keeps every state (no recomputation).
/// The states recomputed are the forward pass's own (same inputs, same products), so on a
/// deterministic backend the hypergradient does not depend on `c`, bit for bit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unrolled<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    (steps, truncate, every): (u32, Option<u32>, u32),
    tape: &mut [B::Y],
    adj: &mut B::Y,
    gx: &mut B::X,
    y_out: &mut B::Y,
) -> Result<B::T, MethodError<B::Error>>
where
    B: LowerStep + UpperGradient + StepAdjoint,
{
    let (k_all, c) = (steps as usize, every as usize);
    let kept = truncate.map_or(steps, |t| t.min(steps)) as usize;
    let first_kept = k_all - kept;
    let n_ck = kept.div_ceil(c);
    let seg_len = segment_len(every);
    debug_assert!(c >= 1 && kept >= 1 && tape.len() >= n_ck + seg_len);
    // Where state k lives during the forward pass: its checkpoint; a kept state that is
    // not one (and y_K) in the segment buffers, alternating when there are two; a state
    // before the first kept one in tape slot 0 or 1, alternating so that y_{first_kept}
    // lands in slot 0 (its checkpoint). A state's predecessor is never in its buffer.
    let loc = |k: usize| -> usize {
        if k < first_kept {
            (first_kept - k) % 2
        } else if k < k_all && (k - first_kept) % c == 0 {
            (k - first_kept) / c
        } else {
            n_ck + k % seg_len.min(2)
        }
    };
    b.copy_y(y0, &mut tape[loc(0)])?;
    for k in 1..=k_all {
        let (wu, wl) = dynamics.weights(k as u32);
        let (src, dst) = two_mut(tape, loc(k - 1), loc(k));
        b.lower_step(x, src, wu, wl, dst)?;
    }
    let last = loc(k_all);
    b.copy_y(&tape[last], y_out)?;
    b.zero_x(gx)?;
    let upper = b.upper_grad(x, &tape[last], adj, gx, B::T::one())?;
    if !upper.is_finite() {
        let (a, rest) = tape.split_at_mut(1);
        return Err(diverged(
            b,
            x,
            y0,
            (dynamics, steps),
            (&mut a[0], &mut rest[0]),
        ));
    }
    // Segment j holds the states s..e−1 (s = first_kept + j·c): s in its checkpoint, the
    // others recomputed into seg[0..].
    let (ck, seg) = tape.split_at_mut(n_ck);
    for j in (0..n_ck).rev() {
        let s = first_kept + j * c;
        let e = (s + c).min(k_all);
        for i in 1..e - s {
            let (wu, wl) = dynamics.weights((s + i) as u32);
            if i == 1 {
                b.lower_step(x, &ck[j], wu, wl, &mut seg[0])?;
            } else {
                let (src, dst) = two_mut(seg, i - 2, i - 1);
                b.lower_step(x, src, wu, wl, dst)?;
            }
        }
        for k in (s + 1..=e).rev() {
            let (wu, wl) = dynamics.weights(k as u32);
            let state = if k - 1 == s { &ck[j] } else { &seg[k - 2 - s] };
            match k == first_kept + 1 {
                true => b.step_adjoint_last(x, state, wu, wl, adj, gx)?,
                false => b.step_adjoint(x, state, wu, wl, adj, gx)?,
            }
        }
    }
    Ok(upper)
}

/// `(&s[a], &mut s[b])` for `a ≠ b`.
fn two_mut<Y>(s: &mut [Y], a: usize, b: usize) -> (&Y, &mut Y) {
    if a < b {
        let (lo, hi) = s.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = s.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

/// K lower-level steps from `y0`, `y_K` into `y_out` (`spare` is the ping-pong partner);
/// with `check`, stops at the first non-finite iterate and returns its step (0: none).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<B: LowerStep>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    steps: u32,
    y_out: &mut B::Y,
    spare: &mut B::Y,
    check: bool,
) -> Result<u32, B::Error> {
    // Start in whichever buffer makes y_K land in `y_out`.
    let (mut cur, mut next) = if steps % 2 == 0 {
        (y_out, spare)
    } else {
        (spare, y_out)
    };
    b.copy_y(y0, cur)?;
    for k in 1..=steps {
        let (wu, wl) = dynamics.weights(k);
        b.lower_step(x, cur, wu, wl, next)?;
        if check && !b.y_is_finite(next)? {
            return Ok(k);
        }
        core::mem::swap(&mut cur, &mut next);
    }
    Ok(0)
}

/// The error of a run whose iterates left the finite numbers: the K steps from `y0` are run
/// again with [`forward`] checking each iterate (only on the failure path, so the normal
/// path never waits for a device) to name the lower step where it happened (0 when every
/// iterate is finite: the divergence was in `F` or in the gradient).
pub(crate) fn diverged<B: LowerStep>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    (dynamics, steps): (&LowerDynamics<B::T>, u32),
    buffers: (&mut B::Y, &mut B::Y),
) -> MethodError<B::Error> {
    match forward(b, x, y0, dynamics, steps, buffers.0, buffers.1, true) {
        Ok(ll_iter) => MethodError::NonFinite { ll_iter },
        Err(e) => MethodError::Backend(e),
    }
}

/// Scratch buffers of [`implicit`].
pub(crate) struct CgScratch<Y> {
    /// Residual.
    pub r: Y,
    /// Search direction.
    pub p: Y,
    /// `H·p`.
    pub hp: Y,
    /// The solution `v ≈ H⁻¹∇_y F`.
    pub v: Y,
}

/// How the conjugate-gradient solve of the last IHG hypergradient went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgReport<T> {
    /// Iterations run.
    pub iters: u32,
    /// `‖r‖` at the end, relative to `‖∇_y F‖`.
    pub relative_residual: T,
    /// Where CG met a direction of non-positive curvature `pᵀHp ≤ 0` (iteration, 1-based,
    /// and the value `pᵀHp/pᵀp`): it stops there with the solution so far, since CG's
    /// steps assume a positive-definite Hessian.
    pub non_positive_curvature: Option<(u32, T)>,
}

impl<T: Real> CgReport<T> {
    /// No iterations yet.
    pub fn empty() -> Self {
        CgReport {
            iters: 0,
            relative_residual: T::zero(),
            non_positive_curvature: None,
        }
    }
}

/// Implicit hypergradient (IHG): `y_K` from K steps of `dynamics` (into `y_out`), then
/// `∇φ(x) ≈ ∇_x F − (∂²_{xy} f)ᵀ v` with `∇²_{yy} f · v = ∇_y F` solved by `cg_iters`
/// iterations of conjugate gradient. Returns `F(x, y_K)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn implicit<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    steps: u32,
    cg_iters: u32,
    cg: &mut CgScratch<B::Y>,
    report: &mut CgReport<B::T>,
    gx: &mut B::X,
    y_out: &mut B::Y,
) -> Result<B::T, MethodError<B::Error>>
where
    B: LowerStep + UpperGradient + LowerHessian,
{
    forward(b, x, y0, dynamics, steps, y_out, &mut cg.r, false)?;
    if !b.y_is_finite(y_out)? {
        return Err(diverged(
            b,
            x,
            y0,
            (dynamics, steps),
            (&mut cg.r, &mut cg.p),
        ));
    }
    let y = &*y_out;
    b.zero_x(gx)?;
    // r = ∇_y F − H·0, p = r, v = 0.
    let upper = b.upper_grad(x, y, &mut cg.r, gx, B::T::one())?;
    b.copy_y(&cg.r, &mut cg.p)?;
    b.zero_y(&mut cg.v)?;
    let mut rr = b.dot_y(&cg.r, &cg.r)?;
    let rr0 = rr;
    let tiny = B::T::EPSILON * B::T::EPSILON;
    *report = CgReport::empty();
    for it in 1..=cg_iters {
        if rr <= tiny {
            break;
        }
        b.lower_hvp(x, y, &cg.p, &mut cg.hp)?;
        let php = b.dot_y(&cg.p, &cg.hp)?;
        if !php.is_finite() || php <= B::T::zero() {
            let pp = b.dot_y(&cg.p, &cg.p)?;
            report.non_positive_curvature = Some((it, php / pp));
            break;
        }
        let alpha = rr / php;
        b.axpy_y(alpha, &cg.p, &mut cg.v)?;
        b.axpy_y(-alpha, &cg.hp, &mut cg.r)?;
        let rr_new = b.dot_y(&cg.r, &cg.r)?;
        let beta = rr_new / rr;
        b.scale_y(beta, &mut cg.p)?;
        b.axpy_y(B::T::one(), &cg.r, &mut cg.p)?;
        rr = rr_new;
        report.iters = it;
    }
    if rr0 > B::T::zero() {
        report.relative_residual = (rr / rr0).sqrt();
    }
    b.lower_mixed_vjp(x, y, &cg.v, -B::T::one(), gx)?;
    Ok(upper)
}

/// Scratch buffers of [`one_stage`].
pub(crate) struct OneStageScratch<Y> {
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
/// Returns `F(x, y₁)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn one_stage<B>(
    b: &mut B,
    x: &B::X,
    y0: &B::Y,
    dynamics: &LowerDynamics<B::T>,
    eps: B::T,
    s: &mut OneStageScratch<B::Y>,
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
    let upper = b.upper_grad(x, y_out, &mut s.g, gx, B::T::one())?;
    // gx −= (w_u ∂_x F + w_l ∂_x f)(x, h⁺) / (2ε) − (same at h⁻) / (2ε)
    let c = B::T::one() / (eps + eps);
    for (sign, h_eps) in [(-c, eps), (c, -eps)] {
        b.copy_y(y0, &mut s.h)?;
        b.axpy_y(h_eps, &s.g, &mut s.h)?;
        if wu != B::T::zero() && b.upper_depends_on_x() {
            b.upper_grad(x, &s.h, &mut s.sink, gx, sign * wu)?;
        }
        b.lower_grad_x(x, &s.h, sign * wl, gx)?;
    }
    Ok(upper)
}
