//! One task's meta-gradient under each rule of the MAML family, over any device's
//! [`NetworkLoss`], and a meta-batch's tasks split over ranks: written once here so that
//! the CPU and the CUDA backends differ only in their products.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use core::ops::Range;

use super::meta::{MetaError, MetaGrad, NetworkProcedure, NetworkRule};
use super::task::{NetworkLoss, NetworkTask};
use crate::backend::{Hypergrad, MethodSpec};
use crate::collective::{Collective, counts, owned};
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
    /// Whether the conjugate-gradient solve (IHG) stopped at non-positive curvature.
    pub cg_stop: bool,
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
        Ok(Adapted {
            phi,
            y,
            grad,
            cg_stop: false,
        })
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
                let cg_stop = hg.cg_report().non_positive_curvature.is_some();
                Adapted {
                    phi,
                    y,
                    grad,
                    cg_stop,
                }
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

/// One task's outcome in a meta-batch.
#[derive(Clone, Debug)]
pub struct TaskOutcome {
    /// `φ = F(y_K)`.
    pub phi: f64,
    /// The query accuracy of `y_K`, %.
    pub acc: f64,
    /// The meta-gradient.
    pub grad: Vec<f32>,
    /// Whether its conjugate-gradient solve stopped at non-positive curvature.
    pub cg_stop: bool,
}

/// The error every rank returns once they agreed on `msg` (a [`MetaError`]'s display).
fn agreed(msg: String) -> MetaError {
    if msg == MetaError::NonFinite.to_string() {
        MetaError::NonFinite
    } else {
        MetaError::Device(msg)
    }
}

/// Agrees on the first failure among `outs` (every rank calls it, so that one rank's
/// failure ends all of them with the lowest failing rank's message).
fn agree_on<T>(comm: &dyn Collective, outs: &[Result<T, MetaError>]) -> Result<(), MetaError> {
    let mine = outs
        .iter()
        .find_map(|o| o.as_ref().err())
        .map(|e| e.to_string());
    match comm.agree(mine.as_deref()) {
        Some(msg) => Err(agreed(msg)),
        None => Ok(()),
    }
}

/// The mean loss, accuracy and meta-gradient (`len` meta-parameters) over a meta-batch of
/// `tasks` tasks split over `comm`'s ranks: rank `r` runs `run` on its own tasks
/// ([`owned`]`(tasks, r, P)`, their outcomes in task order), and the ranks add the
/// outcomes in task order along the chain, `s ← s + v/m` from zero as one process does, so
/// the result has the same bits for any number of ranks.
pub fn mean_over_tasks(
    comm: &dyn Collective,
    tasks: usize,
    len: usize,
    run: impl FnOnce(Range<usize>) -> Vec<Result<TaskOutcome, MetaError>>,
) -> Result<MetaGrad<f32>, MetaError> {
    let outs = run(owned(tasks, comm.rank(), comm.size()));
    agree_on(comm, &outs)?;
    let outs: Vec<TaskOutcome> = outs.into_iter().flatten().collect();
    let m = tasks as f64;
    let mut grad = vec![0.0f32; len];
    comm.chain_f32(&mut grad, &mut |range, acc| {
        for o in &outs {
            acc.iter_mut()
                .zip(&o.grad[range.clone()])
                .for_each(|(s, v)| *s += v / m as f32);
        }
    });
    // Mean loss, mean accuracy, and the count of CG stops (small integers: exact).
    let mut sums = [0.0f64; 3];
    comm.chain_f64(&mut sums, &mut |range, acc| {
        for o in &outs {
            let terms = [o.phi / m, o.acc / m, f64::from(u8::from(o.cg_stop))];
            for (k, s) in range.clone().zip(acc.iter_mut()) {
                *s += terms[k];
            }
        }
    });
    Ok(MetaGrad {
        loss: sums[0],
        acc: sums[1],
        grad,
        cg_stops: sums[2] as usize,
    })
}

/// Each task's value (an evaluation's accuracy) over a meta-batch of `tasks` tasks split
/// over `comm`'s ranks as in [`mean_over_tasks`], gathered in task order on every rank.
pub fn gather_over_tasks(
    comm: &dyn Collective,
    tasks: usize,
    run: impl FnOnce(Range<usize>) -> Vec<Result<f64, MetaError>>,
) -> Result<Vec<f64>, MetaError> {
    let outs = run(owned(tasks, comm.rank(), comm.size()));
    agree_on(comm, &outs)?;
    let mine: Vec<f64> = outs.into_iter().flatten().collect();
    let mut all = vec![0.0; tasks];
    comm.gather_f64(&mine, &counts(tasks, comm.size()), &mut all);
    Ok(all)
}
