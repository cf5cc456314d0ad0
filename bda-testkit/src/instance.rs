//! Random hyper-cleaning instances, for the reference's own finite-difference tests and the
//! fast backends' checks against `bda_kernel::hyperclean::HypercleanReference`.

use bda_kernel::fewshot::{Conv4Shape, Network, Task};
use bda_kernel::hyperclean::{Classifier, HypercleanData};

use crate::Rng;

/// A random instance owning its data.
pub struct Problem {
    /// Features.
    pub d: usize,
    /// Classes.
    pub c: usize,
    /// The classifier.
    pub classifier: Classifier,
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
    /// Softmax regression on the given sets.
    fn linear(
        d: usize,
        c: usize,
        (train_x, train_labels): (Vec<f32>, Vec<u8>),
        (val_x, val_labels): (Vec<f32>, Vec<u8>),
        lambda: f32,
    ) -> Self {
        Problem {
            d,
            c,
            classifier: Classifier::Linear,
            train_x,
            train_labels,
            val_x,
            val_labels,
            lambda,
        }
    }

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
        Problem::linear(d, c, (train_x, train_labels), (val_x, val_labels), lambda)
    }

    /// Images of `c` prototypes: each feature `0.6·prototype + 0.4·noise` as a pixel value
    /// `q/255`, labels the prototype's class; the first half of the training labels
    /// corrupted (replaced by another class). The features of a class agree, as pictures do.
    pub fn clustered(
        seed: u64,
        d: usize,
        c: usize,
        n_tr: usize,
        n_val: usize,
        lambda: f32,
    ) -> Self {
        let mut r = Rng::new(seed);
        let protos: Vec<f64> = (0..c * d).map(|_| r.uniform()).collect();
        let mut set = |n: usize| -> (Vec<f32>, Vec<u8>) {
            let labels: Vec<u8> = (0..n).map(|_| r.below(c) as u8).collect();
            let x = labels
                .iter()
                .flat_map(|&k| (0..d).map(move |j| (k as usize) * d + j))
                .map(|i| (255.0 * (0.6 * protos[i] + 0.4 * r.uniform())).round() as f32 / 255.0)
                .collect();
            (x, labels)
        };
        let (train_x, mut train_labels) = set(n_tr);
        let (val_x, val_labels) = set(n_val);
        let mut r = Rng::new(seed + 1);
        for l in train_labels.iter_mut().take(n_tr / 2) {
            *l = ((*l as usize + 1 + r.below(c - 1)) % c) as u8;
        }
        Problem::linear(d, c, (train_x, train_labels), (val_x, val_labels), lambda)
    }

    /// The same instance with every pixel below 0.5 set to 0: images with a background, so
    /// that the CPU backend's all-zero blocks (skipped) and its reordering of the samples
    /// take part.
    pub fn with_background(mut self) -> Self {
        for v in self.train_x.iter_mut().chain(&mut self.val_x) {
            if *v < 0.5 {
                *v = 0.0;
            }
        }
        self
    }

    /// The kernel's view.
    pub fn data(&self) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.d,
            classes: self.c,
            classifier: self.classifier,
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

    /// The same instance with a hidden layer of `h` ReLU units (`h = 0`: softmax
    /// regression).
    pub fn with_hidden(self, h: usize) -> Self {
        let classifier = match h {
            0 => Classifier::Linear,
            hidden => Classifier::Mlp { hidden },
        };
        Problem { classifier, ..self }
    }
}

/// Weights of a whole few-shot network like an initialised one: uniform in ±0.5, every γ
/// moved to about 1 (batch norm's scale), in [`Network`]'s layout.
pub fn network_weights(net: &Network, r: &mut Rng) -> Vec<f64> {
    let mut y: Vec<f64> = (0..net.num_params())
        .map(|_| f64::from(r.range(-0.5, 0.5)))
        .collect();
    for l in 0..net.shape.blocks {
        let (_, g, b) = net.shape.offsets(l);
        y[g..b].iter_mut().for_each(|v| *v += 1.0);
    }
    y
}

/// `count` random few-shot tasks of `ways` classes for `shape`: one support image per class
/// and two queries per class, pixels uniform in [0, 1), labels `i mod ways`.
pub fn network_tasks(shape: Conv4Shape, ways: usize, count: usize, r: &mut Rng) -> Vec<Task> {
    let px = shape.pixels();
    let mut set = |n: usize| -> (Vec<f32>, Vec<u8>) {
        let images = (0..n * px).map(|_| r.range(0.0, 1.0)).collect();
        (images, (0..n).map(|i| (i % ways) as u8).collect())
    };
    (0..count)
        .map(|_| {
            let ((support, support_labels), (query, query_labels)) = (set(ways), set(2 * ways));
            Task {
                ways,
                support,
                support_labels,
                query,
                query_labels,
            }
        })
        .collect()
}
