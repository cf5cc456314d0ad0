//! Primal passes kept between products. A K-step method asks for `∇f(y_k)` on the way
//! forward and for `∇²f(y_k)·a` on the way back; both start with the same forward pass
//! and the same backward pass through the blocks, so the gradient keeps them and the
//! Hessian–vector product at the same weights reuses them: an H·v then costs its tangent
//! passes only (about `6C` instead of `8C`, `C` a forward pass's convolutions). Entries are
//! matched by the weights' values, never by where they are stored.

use std::collections::VecDeque;

use bda_kernel::fewshot::TaskSet;

use super::block::Tape;

/// A forward pass: block inputs after the first, tapes, and the features as rows.
pub(super) struct Pass<T> {
    pub inputs: Vec<Vec<T>>,
    pub tapes: Vec<Tape<T>>,
    pub feats: Vec<T>,
}

/// One primal pass on one set at weights `y`: the forward pass, the head's probabilities
/// and logit gradients, and the gradient arriving at each block's output.
pub(super) struct State<T> {
    pub which: TaskSet,
    pub y: Vec<T>,
    pub pass: Pass<T>,
    pub probs: Vec<T>,
    pub dlogits: Vec<T>,
    /// `dps[l]`: the loss's gradient at block `l`'s pooled output.
    pub dps: Vec<Vec<T>>,
    /// The loss and, when the pass computed it, the gradient of every weight (Meta-SGD's
    /// reverse step asks for `∇f(y_k)` again).
    pub loss: T,
    pub grad: Option<Vec<T>>,
}

/// The last `capacity` primal passes, most recent last.
pub(super) struct States<T> {
    capacity: usize,
    kept: VecDeque<State<T>>,
}

impl<T: PartialEq> States<T> {
    pub fn new(capacity: usize) -> Self {
        States {
            capacity,
            kept: VecDeque::new(),
        }
    }

    /// Whether any pass is kept.
    pub fn keeps(&self) -> bool {
        self.capacity > 0
    }

    /// The pass on `which` at weights equal to `y`, taken out.
    pub fn take(&mut self, which: TaskSet, y: &[T]) -> Option<State<T>> {
        let at = self
            .kept
            .iter()
            .rposition(|s| s.which == which && s.y.as_slice() == y)?;
        self.kept.remove(at)
    }

    /// Keep `s` as the most recent, dropping the oldest beyond the capacity.
    pub fn put(&mut self, s: State<T>) {
        if self.capacity == 0 {
            return;
        }
        while self.kept.len() >= self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back(s);
    }
}
