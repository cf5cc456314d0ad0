//! Few-shot meta-learning (journal §8.3): the per-task head problem, the backbone's shape,
//! and the seam through which a command asks a device for meta-gradients.
//!
//! * [`FeatureHead`] (`alloc`): one task's head problem as a backend, the one definition
//!   that the CPU backend (`bda-cpu`) runs and that the batched CUDA head (`bda-gpu`) is
//!   checked against (in `f64`);
//! * [`Conv4Shape`]: the backbone's geometry and parameter layout, shared by both devices;
//! * [`Network`] (`alloc`): the backbone and a head as one function of every weight (the
//!   lower level of the MAML family), its gradient and exact Hessian–vector products in
//!   `f64`; [`NetworkTask`] (`alloc`): one task of it as a backend, so that MAML is the
//!   engine's RHG from `y₀ = x`, iMAML its IHG with a proximal term, BDA on the whole
//!   network its BDA;
//! * [`MetaBackend`] (`alloc`): what a device computes for one meta-batch of [`Task`]s —
//!   the meta-gradient of the mean `φ_K` and the evaluation accuracies — with the head
//!   fitted and differentiated by the engine as [`HeadProcedure`] says.
//!
//! Upper variable `x` of the head problem: the features of one task's images,
//! `(n_s + n_q) × d` row-major, support rows first. Lower variable `y = (W ∈ R^{d×N},
//! b ∈ R^N)`, a linear N-way head, stored as `W` row-major followed by `b`.
//!
//! * `f(x, y) = CE(support features · W + b, support labels) + (λ/2)‖y‖²` (mean over the
//!   support set),
//! * `F(x, y) = CE(query features · W + b, query labels)` (mean over the query set).
//!
//! Both depend on `x`, so [`StepAdjoint`] adds the mixed terms `(∂²_{xy}f)ᵀa` to the
//! support rows and `(∂²_{xy}F)ᵀa` to the query rows of `gx`, and
//! [`UpperGradient::upper_grad`] adds `∂_x F` to the query rows. The K-step loop and its
//! reverse pass are the engine's ([`Hypergrad::unrolled`](crate::backend::Hypergrad::unrolled):
//! the head has no [`LowerHessian`](crate::backend::LowerHessian), so RHG, T-RHG and BDA).
//!
//! For a set with features `A` (n × d), logits `Z = AW + b`, `P = softmax(Z)` and
//! `G = (P − onehot)/n`: `∇_W = AᵀG`, `∇_b = Σ_i G_i`, `∇_A = GWᵀ`. For a direction
//! `v = (V, c)`, `U = AV + c`, `D_i = (P_i ⊙ U_i − P_i ⟨P_i, U_i⟩)/n`: the Hessian–vector
//! product is `(AᵀD, Σ_i D_i)` and the mixed product `(∂²_{Ay}L)ᵀv` has rows `G_i Vᵀ + D_i Wᵀ`.
//!
//! [`StepAdjoint`]: crate::backend::StepAdjoint
//! [`UpperGradient::upper_grad`]: crate::backend::UpperGradient::upper_grad

#[cfg(feature = "alloc")]
mod head;
#[cfg(feature = "alloc")]
mod meta;
#[cfg(feature = "alloc")]
mod network;
#[cfg(feature = "alloc")]
mod rules;
mod shape;
#[cfg(feature = "alloc")]
mod task;

#[cfg(feature = "alloc")]
pub use head::FeatureHead;
#[cfg(feature = "alloc")]
pub use meta::{
    Batch, HeadProcedure, MetaBackend, MetaError, MetaGrad, NetworkProcedure, NetworkRule, Task,
    stack,
};
#[cfg(feature = "alloc")]
pub use network::Network;
#[cfg(feature = "alloc")]
pub use rules::{Adapted, TaskOutcome, gather_over_tasks, mean_over_tasks};
pub use shape::{BN_EPS, Conv4Shape};
#[cfg(feature = "alloc")]
pub use task::{NetworkLoss, NetworkTask, ReferenceTask, TaskSet};
