//! Random hyper-cleaning instances, for the reference's own finite-difference tests and the
//! fast backends' checks against `bda_kernel::hyperclean::HypercleanReference`.

use bda_kernel::hyperclean::HypercleanData;

use crate::Rng;

/// A random instance owning its data.
pub struct Problem {
    /// Features.
    pub d: usize,
    /// Classes.
    pub c: usize,
    /// Hidden ReLU units (0: softmax regression).
    pub hidden: usize,
    /// Training features, `n_tr × d`.
    pub train_x: Vec<f32>,
    /// Training labels.
    pub train_labels: Vec<u8>,
    /// Validation features.
    pub val_x: Vec<f32>,
    /// Validation labels.
    pub val_labels: Vec<u8>,
    /// The upper level's L2 weight.
    pub lambda: f32,
}

impl Problem {
    /// MNIST-like features (`k/255`), random labels.
    pub fn random(seed: u64, d: usize, c: usize, n_tr: usize, n_val: usize, lambda: f32) -> Self {
        let mut r = Rng::new(seed);
        let mut feats =
            |n: usize| -> Vec<f32> { (0..n * d).map(|_| r.below(256) as f32 / 255.0).collect() };
        let train_x = feats(n_tr);
        let val_x = feats(n_val);
        let mut r = Rng::new(seed + 1);
        let train_labels = (0..n_tr).map(|_| r.below(c) as u8).collect();
        let val_labels = (0..n_val).map(|_| r.below(c) as u8).collect();
        Problem {
            d,
            c,
            hidden: 0,
            train_x,
            train_labels,
            val_x,
            val_labels,
            lambda,
        }
    }

    /// The kernel's view.
    pub fn data(&self) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.d,
            classes: self.c,
            hidden: self.hidden,
            train_x: &self.train_x,
            train_labels: &self.train_labels,
            val_x: &self.val_x,
            val_labels: &self.val_labels,
            lambda: self.lambda,
        }
    }

    /// Training samples.
    pub fn n_tr(&self) -> usize {
        self.train_labels.len()
    }
    /// Validation samples.
    pub fn n_val(&self) -> usize {
        self.val_labels.len()
    }
    /// Length of `y`.
    pub fn y_len(&self) -> usize {
        self.data().y_len()
    }

    /// The same instance with a hidden layer of `h` ReLU units.
    pub fn with_hidden(self, h: usize) -> Self {
        Problem { hidden: h, ..self }
    }
}
