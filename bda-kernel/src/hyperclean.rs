//! Data hyper-cleaning (journal §8.2, Table 2): the one definition of the problem that the
//! CPU backend (`bda-host`) and the CUDA backend (`bda-gpu`) both implement.
//!
//! Softmax regression with `d` features and `c` classes; the lower-level variable is
//! `y = (W, b)` with `W ∈ R^{d×c}` and `b ∈ R^c`, the upper-level variable is one logit
//! `x_i` per training sample, `σ(x_i)` its weight:
//!
//! * lower level `f(x, y) = (1/n_tr) Σ_i σ(x_i)·CE(W, b; u_i, v_i)` on the (noisy) training set,
//! * upper level `F(x, y) = (1/n_val) Σ_j CE(W, b; u_j, v_j) + λ‖W‖²` on the validation set
//!   (no dependence on `x`; `b` is not regularised),
//!
//! with `CE(W, b; u, v) = −log softmax(Wᵀu + b)_v`.
//!
//! Layout of a `y` buffer (length [`HypercleanData::y_len`]): `W` row-major
//! (`W[j·c + k]`, feature `j`, class `k`), then `b`. An `x` buffer has `n_tr` entries.
//!
//! With the `alloc` feature, [`HypercleanReference`] is the problem written plainly in `f64`: the one
//! oracle that the fast backends of both crates are tested against.

#[cfg(feature = "alloc")]
pub mod reference;
#[cfg(feature = "alloc")]
pub use reference::HypercleanReference;

/// Borrowed data of a hyper-cleaning instance: features row-major (`n × d`), labels `< c`.
#[derive(Clone, Copy, Debug)]
pub struct HypercleanData<'a> {
    /// Features per sample `d` (784 for MNIST-format images).
    pub dim: usize,
    /// Classes `c` (10).
    pub classes: usize,
    /// Training features, `n_tr × d`.
    pub train_x: &'a [f32],
    /// Training labels (noisy), `n_tr`.
    pub train_labels: &'a [u8],
    /// Validation features, `n_val × d`.
    pub val_x: &'a [f32],
    /// Validation labels, `n_val`.
    pub val_labels: &'a [u8],
    /// `λ` of the upper-level regulariser.
    pub lambda: f32,
}

impl HypercleanData<'_> {
    /// Training samples `n_tr` (the dimension of `x`).
    pub fn n_train(&self) -> usize {
        self.train_labels.len()
    }
    /// Validation samples.
    pub fn n_val(&self) -> usize {
        self.val_labels.len()
    }
    /// Length of a `y` buffer: `(d + 1)·c`.
    pub fn y_len(&self) -> usize {
        (self.dim + 1) * self.classes
    }
    /// Check shapes and labels; the message names what is wrong.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.dim == 0 || self.classes < 2 {
            return Err("need at least one feature and two classes");
        }
        if self.train_labels.is_empty() || self.val_labels.is_empty() {
            return Err("training and validation sets must not be empty");
        }
        if Some(self.train_x.len()) != self.n_train().checked_mul(self.dim) {
            return Err("training features do not match n_train × dim");
        }
        if Some(self.val_x.len()) != self.n_val().checked_mul(self.dim) {
            return Err("validation features do not match n_val × dim");
        }
        let c = self.classes;
        if self
            .train_labels
            .iter()
            .chain(self.val_labels)
            .any(|&l| l as usize >= c)
        {
            return Err("a label is not below the number of classes");
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err("lambda must be finite and non-negative");
        }
        Ok(())
    }
}
