//! What a pass over a set computes ([`Pass`]) and the scratch every classifier's passes
//! write ([`Scratch`]): per-chunk partials, summed afterwards in chunk order
//! ([`super::split`]), so results depend neither on the thread count nor on the ranks.

use crate::aligned::AlignedVec;

/// What a pass computes.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    /// Gradient pass.
    Grad {
        /// Partials of `Σ ω_i ∇_y CE_i`.
        grad: bool,
        /// Per-sample `CE_i` and the chunk losses `Σ ω_i CE_i`.
        loss: bool,
    },
    /// Hessian pass in direction `v`, with the per-sample `⟨p_i − e_i, t_i⟩`.
    Hess {
        /// The direction.
        v: &'a [f32],
        /// Partials of `Σ ω_i ∇²CE_i·v`.
        grad: bool,
    },
}

/// Scratch reused between passes (its buffers are the classifiers' own business).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    pub(crate) partial: Vec<f32>,
    pub(crate) chunk_loss: Vec<f64>,
    pub(crate) sample: Vec<f32>,
    /// The network: `G_a` (or `R G_a`) per row, `rows × H`.
    pub(crate) ga: AlignedVec,
    /// The network: per-chunk partials of `b₁`, `W₂ᵀ`, `b₂`.
    pub(crate) thin_part: Vec<f32>,
    /// The network: `W₂ᵀ` and `V₂ᵀ` (`c × hp`) for the thin products.
    pub(crate) w2t: Vec<f32>,
    pub(crate) v2t: Vec<f32>,
    /// The network: the tangent `U·V₁` per row, `rows × hp`.
    pub(crate) ra: AlignedVec,
    /// The network: `W₁` (or `V₁`) packed tile-major.
    pub(crate) wpad: AlignedVec,
    /// The network: `∇W₁` with rows of `hp`, per unit of the split or summed.
    pub(crate) w1grad: AlignedVec,
}
