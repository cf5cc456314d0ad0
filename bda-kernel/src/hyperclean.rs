//! Data hyper-cleaning (journal §8.2, Table 2): the one definition of the problem that the
//! CPU backends (`bda-cpu`) and the CUDA backends (`bda-gpu`) implement.
//!
//! A classifier of `d` features into `c` classes with parameters `y`, and one logit `x_i`
//! per training sample, `σ(x_i)` its weight:
//!
//! * lower level `f(x, y) = (1/n_tr) Σ_i σ(x_i)·CE(y; u_i, v_i)` on the (noisy) training set,
//! * upper level `F(x, y) = (1/n_val) Σ_j CE(y; u_j, v_j) + λ‖W‖²` on the validation set
//!   (no dependence on `x`; the weight matrices are regularised, the biases are not),
//!
//! with `CE(y; u, v) = −log softmax(s(y; u))_v`. The classifier ([`Classifier`]):
//!
//! * softmax regression ([`Classifier::Linear`]): `y = (W, b)`, `s = Wᵀu + b`, `W ∈ R^{d×c}`;
//! * the authors' network ([`Classifier::Mlp`] with `H` hidden units): `y = (W₁, b₁, W₂, b₂)`,
//!   `s = W₂ᵀ relu(W₁ᵀu + b₁) + b₂`, `W₁ ∈ R^{d×H}`, `W₂ ∈ R^{H×c}` (784-300-10 in their code).
//!   Its lower level is not convex.
//!
//! Layout of a `y` buffer (length [`HypercleanData::y_len`]): the blocks in the order above,
//! each matrix row-major (`W[j·c + k]`: input `j`, output `k`). An `x` buffer has `n_tr`
//! entries.
//!
//! With the `alloc` feature, [`HypercleanReference`] is the problem written plainly in `f64`: the one
//! oracle that the fast backends of both crates are tested against.

#[cfg(feature = "alloc")]
pub mod reference;
#[cfg(feature = "alloc")]
pub use reference::HypercleanReference;

/// The classifier of the lower level: what `y` parameterises. Each variant has one `f64`
/// reference ([`HypercleanReference`] matches on it) and one backend per device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Classifier {
    /// Softmax regression `s = Wᵀu + b`: the lower level is convex.
    #[default]
    Linear,
    /// The ReLU network `s = W₂ᵀ relu(W₁ᵀu + b₁) + b₂` (784-300-10 in the authors' code):
    /// the lower level is not convex.
    Mlp {
        /// Hidden units `H` (at least 1).
        hidden: usize,
    },
}

impl Classifier {
    /// `linear` or `mlp`, as the command line names it.
    pub const fn name(self) -> &'static str {
        match self {
            Classifier::Linear => "linear",
            Classifier::Mlp { .. } => "mlp",
        }
    }

    /// Hidden units (0 for softmax regression): the width of the per-sample activations a
    /// backend keeps besides the `c` logits.
    pub const fn hidden(self) -> usize {
        match self {
            Classifier::Linear => 0,
            Classifier::Mlp { hidden } => hidden,
        }
    }

    /// Where each block of `y` starts for `dim` features and `classes` classes.
    pub const fn layout(self, dim: usize, classes: usize) -> Layout {
        let (d, c) = (dim, classes);
        match self {
            Classifier::Linear => Layout {
                w1: 0,
                b1: d * c,
                w2: d * c,
                b2: d * c,
                end: d * c + c,
            },
            Classifier::Mlp { hidden: h } => Layout {
                w1: 0,
                b1: d * h,
                w2: (d + 1) * h,
                b2: (d + 1) * h + h * c,
                end: (d + 1) * h + (h + 1) * c,
            },
        }
    }

    /// `(inputs, outputs)` of each weight matrix (`(0, 0)` where there is none): what
    /// Xavier initialisation draws from.
    pub const fn weight_shapes(self, dim: usize, classes: usize) -> [(usize, usize); 2] {
        match self {
            Classifier::Linear => [(dim, classes), (0, 0)],
            Classifier::Mlp { hidden } => [(dim, hidden), (hidden, classes)],
        }
    }
}

/// Offsets of the blocks of a `y` buffer. For softmax regression `W = y[w1..b1]` and
/// `b = y[b2..]` (the `b1`, `w2` blocks are empty); with a hidden layer `W₁ = y[w1..b1]`,
/// `b₁ = y[b1..w2]`, `W₂ = y[w2..b2]`, `b₂ = y[b2..]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// First weight matrix (`W` or `W₁`).
    pub w1: usize,
    /// First bias (`b₁`; where `W` ends for softmax regression).
    pub b1: usize,
    /// Second weight matrix (`W₂`; empty for softmax regression).
    pub w2: usize,
    /// Output bias (`b` or `b₂`).
    pub b2: usize,
    /// The length of `y`.
    pub end: usize,
}

impl Layout {
    /// The ranges of the weight matrices, which `F` regularises.
    pub fn weights(&self) -> [core::ops::Range<usize>; 2] {
        [self.w1..self.b1, self.w2..self.b2]
    }
}

/// Borrowed data of a hyper-cleaning instance: features row-major (`n × d`), labels `< c`.
#[derive(Clone, Copy, Debug)]
pub struct HypercleanData<'a> {
    /// Features per sample `d` (784 for MNIST-format images).
    pub dim: usize,
    /// Classes `c` (10).
    pub classes: usize,
    /// The classifier `y` parameterises.
    pub classifier: Classifier,
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
    /// Length of a `y` buffer: `(d + 1)·c`, or `(d + 1)·H + (H + 1)·c` with a hidden layer.
    pub fn y_len(&self) -> usize {
        self.layout().end
    }

    /// Where each block of `y` starts.
    pub fn layout(&self) -> Layout {
        self.classifier.layout(self.dim, self.classes)
    }

    /// Check shapes and labels; the message names what is wrong.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.dim == 0 || self.classes < 2 {
            return Err("need at least one feature and two classes");
        }
        if self.classifier == (Classifier::Mlp { hidden: 0 }) {
            return Err("the network needs at least one hidden unit");
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
