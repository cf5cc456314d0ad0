//! The upper-level optimizers, shared by every command: Adam with `torch.optim.Adam`'s update
//! (so runs compare with the PyTorch peers step for step) and plain gradient descent.

use bda_kernel::Real;
use serde::{Deserialize, Serialize};

/// Adam (Kingma & Ba) exactly as `torch.optim.Adam` computes it with its defaults
/// (β = (0.9, 0.999), ε = 1e-8, no weight decay, no AMSGrad):
///
/// ```text
/// m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²,
/// p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
/// ```
///
/// The moments are kept in the parameters' type `T` (`f32` for a backbone, `f64` for the
/// hyper-cleaning weights); the bias corrections are computed in `f64`, as PyTorch does.
///
/// ```
/// use bda_host::optim::Adam;
/// let mut adam = Adam::<f64>::new(0.1, 2);
/// let mut p = [1.0, -1.0];
/// adam.step(&mut p, &[3.0, -0.5]);
/// // The first step moves each coordinate by lr in the direction of −g (up to ε).
/// assert!((p[0] - 0.9).abs() < 1e-7 && (p[1] + 0.9).abs() < 1e-7);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam<T> {
    /// Learning rate.
    pub lr: f64,
    /// Steps taken.
    pub t: u64,
    /// First moments.
    pub m: Vec<T>,
    /// Second moments.
    pub v: Vec<T>,
}

impl<T: Real> Adam<T> {
    /// β₁.
    pub const BETA1: f64 = 0.9;
    /// β₂.
    pub const BETA2: f64 = 0.999;
    /// ε.
    pub const EPS: f64 = 1e-8;

    /// Fresh state for `n` parameters.
    pub fn new(lr: f64, n: usize) -> Self {
        Adam {
            lr,
            t: 0,
            m: vec![T::zero(); n],
            v: vec![T::zero(); n],
        }
    }

    /// One update of `params` with the gradient `g`.
    pub fn step(&mut self, params: &mut [T], g: &[T]) {
        debug_assert!(params.len() == g.len() && g.len() == self.m.len());
        self.t += 1;
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - Self::BETA1.powi(t);
        let bc2 = 1.0 - Self::BETA2.powi(t);
        let step = T::from_f64(self.lr / bc1);
        let bc2s = T::from_f64(bc2.sqrt());
        let (b1, b2, eps) = (
            T::from_f64(Self::BETA1),
            T::from_f64(Self::BETA2),
            T::from_f64(Self::EPS),
        );
        let (c1, c2) = (T::one() - b1, T::one() - b2);
        for (((p, &gi), m), v) in params.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 * *m + c1 * gi;
            *v = b2 * *v + c2 * gi * gi;
            *p -= step * *m / (v.sqrt() / bc2s + eps);
        }
    }
}

/// Which optimizer a command runs on its upper-level variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (`torch.optim.Adam`'s update and defaults).
    Adam,
    /// Plain gradient descent, `x ← x − lr·g`.
    Sgd,
}

/// An optimizer's state.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer<T> {
    /// Adam.
    Adam(Adam<T>),
    /// Gradient descent with this learning rate.
    Sgd(f64),
}

impl<T: Real> Optimizer<T> {
    /// Fresh state of `kind` with learning rate `lr` for `n` parameters.
    pub fn new(kind: OptimizerKind, lr: f64, n: usize) -> Self {
        match kind {
            OptimizerKind::Adam => Optimizer::Adam(Adam::new(lr, n)),
            OptimizerKind::Sgd => Optimizer::Sgd(lr),
        }
    }

    /// One update of `params` with the gradient `g`.
    pub fn step(&mut self, params: &mut [T], g: &[T]) {
        match self {
            Optimizer::Adam(a) => a.step(params, g),
            Optimizer::Sgd(lr) => {
                let lr = T::from_f64(*lr);
                params.iter_mut().zip(g).for_each(|(p, &gi)| *p -= lr * gi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.optim.Adam's update written out in f64, step by step, as in PyTorch's
    /// `_single_tensor_adam` (the reference this module must match).
    fn torch_adam(lr: f64, grads: &[[f64; 3]], p0: [f64; 3]) -> [f64; 3] {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let (mut p, mut m, mut v) = (p0, [0.0; 3], [0.0; 3]);
        for (t, g) in grads.iter().enumerate() {
            let step = (t + 1) as i32;
            let bias_correction1 = 1.0 - b1.powi(step);
            let bias_correction2 = 1.0 - b2.powi(step);
            let step_size = lr / bias_correction1;
            for i in 0..3 {
                m[i] = m[i] * b1 + (1.0 - b1) * g[i]; // exp_avg.lerp_(grad, 1 - beta1)
                v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
                let denom = v[i].sqrt() / bias_correction2.sqrt() + eps;
                p[i] -= step_size * m[i] / denom;
            }
        }
        p
    }

    #[test]
    fn adam_is_torch_adam() {
        let grads = [
            [0.3, -2.0, 1e-3],
            [0.1, -1.0, -4.0],
            [-0.2, 0.5, 2.5],
            [1.0, 1.0, 1.0],
        ];
        let p0 = [0.5, -0.25, 2.0];
        let want = torch_adam(0.01, &grads, p0);
        let mut adam = Adam::<f64>::new(0.01, 3);
        let mut p = p0;
        for g in &grads {
            adam.step(&mut p, g);
        }
        for i in 0..3 {
            assert!(
                (p[i] - want[i]).abs() <= 1e-15 * want[i].abs().max(1.0),
                "{p:?} vs {want:?}"
            );
        }
        assert_eq!(adam.t, 4);
        // In f32 the same update to f32 rounding.
        let mut adam32 = Adam::<f32>::new(0.01, 3);
        let mut p32 = p0.map(|v| v as f32);
        for g in &grads {
            adam32.step(&mut p32, &g.map(|v| v as f32));
        }
        for i in 0..3 {
            assert!(
                (f64::from(p32[i]) - want[i]).abs() < 1e-6,
                "{p32:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn a_zero_gradient_does_not_move_a_fresh_parameter() {
        let mut adam = Adam::<f32>::new(0.5, 2);
        let mut p = [1.0f32, 2.0];
        adam.step(&mut p, &[0.0, 0.0]);
        assert_eq!(p, [1.0, 2.0]);
    }

    #[test]
    fn sgd_steps_against_the_gradient() {
        let mut o = Optimizer::<f64>::new(OptimizerKind::Sgd, 0.5, 2);
        let mut p = [1.0, 1.0];
        o.step(&mut p, &[2.0, -4.0]);
        assert_eq!(p, [0.0, 3.0]);
    }
}
