//! One task's meta-gradient under each rule of the MAML family, over any device's
//! [`NetworkLoss`]: written once here so that the CPU and the CUDA backends differ only in
//! their products.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use super::meta::{MetaError, NetworkProcedure, NetworkRule};
use super::task::{NetworkLoss, NetworkTask};
use crate::backend::{Hypergrad, MethodSpec};
use crate::scalar::Real;
use num_traits::Zero;

/// A task's outcome: the query loss at the adapted weights, the weights, and the
/// meta-gradient (or, for an evaluation, the query gradient at `y_K`).
#[derive(Clone, Debug)]
pub struct Adapted<T> {
    /// `F(y_K) = L_query(y_K)`.
    pub phi: T,
    /// The adapted weights `y_K`.
    pub y: Vec<T>,
    /// The meta-gradient with respect to `x` (as long as `x`).
    pub grad: Vec<T>,
}

impl<L: NetworkLoss> NetworkTask<L> {
    /// A task of `procedure` over the products `loss`.
    pub fn of(loss: L, procedure: NetworkProcedure) -> Self {
        NetworkTask {
            loss,
            prox: procedure.prox,
            per_weight_steps: procedure.rule == NetworkRule::PerWeightSteps,
        }
    }

    /// The lower-level solve of `spec` from `y₀ = x`'s initialisation, no adjoint:
    /// `F(y_K)`, `y_K` and `∇F(y_K)` (first-order MAML's meta-gradient, padded to `x`'s
    /// length with zeros for the step sizes of Meta-SGD).
    pub fn adapt(
        &mut self,
        spec: MethodSpec<L::Scalar>,
        x: &[L::Scalar],
    ) -> Result<Adapted<L::Scalar>, MetaError> {
        let n = self.loss.num_params();
        let mut hg = Hypergrad::new(self, spec.lower_only())
            .map_err(|e| MetaError::Device(e.to_string()))?;
        let (x, mut y) = (x.to_vec(), vec![L::Scalar::zero(); n]);
        let phi = hg
            .solve_lower(self, &x, &x[..n].to_vec(), &mut y)
            .map_err(|_| MetaError::NonFinite)?;
        let mut grad = hg.solved_upper_grad().clone();
        grad.resize(x.len(), L::Scalar::zero());
        Ok(Adapted { phi, y, grad })
    }

    /// The meta-gradient of `rule` at `x` (MAML, BDA and iMAML through the engine's
    /// hypergradient of `spec`; first-order MAML and Reptile from the inner solve alone).
    /// Non-finite results are [`MetaError::NonFinite`].
    pub fn meta_gradient(
        &mut self,
        rule: NetworkRule,
        spec: MethodSpec<L::Scalar>,
        x: &[L::Scalar],
    ) -> Result<Adapted<L::Scalar>, MetaError> {
        let n = self.loss.num_params();
        let out = match rule {
            NetworkRule::Hypergradient | NetworkRule::PerWeightSteps => {
                let mut hg =
                    Hypergrad::new(self, spec).map_err(|e| MetaError::Device(e.to_string()))?;
                let (xv, mut grad, mut y) = (
                    x.to_vec(),
                    vec![L::Scalar::zero(); x.len()],
                    vec![L::Scalar::zero(); n],
                );
                let phi = hg
                    .hypergradient(self, &xv, &xv[..n].to_vec(), &mut grad, &mut y)
                    .map_err(|_| MetaError::NonFinite)?;
                Adapted { phi, y, grad }
            }
            NetworkRule::FirstOrder => self.adapt(spec, x)?,
            NetworkRule::Reptile => {
                let mut a = self.adapt(spec, x)?;
                a.grad = x.iter().zip(&a.y).map(|(&x, &y)| x - y).collect();
                a
            }
        };
        if !out.phi.is_finite() || out.grad.iter().any(|v| !v.is_finite()) {
            return Err(MetaError::NonFinite);
        }
        Ok(out)
    }
}
