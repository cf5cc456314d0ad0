//! The lower level's starting point `y₀` of each upper iteration: zero, or Xavier-uniform
//! weights with zero biases re-drawn at every upper iteration, as the authors' hyper-cleaning
//! script does (`torch.nn.init.xavier_uniform_` on each weight matrix).
//!
//! Draws are seeded: upper iteration `t` uses stream `t + 1` of a ChaCha8 generator seeded
//! with `--seed` (stream 0 is the split's), so a run replays exactly and the draws do not
//! depend on anything else the run does.

use bda_kernel::hyperclean::HypercleanData;
use clap::ValueEnum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How `y₀` is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// All zeros (softmax regression's default; a ReLU network started at zero never
    /// moves its first layer).
    Zero,
    /// Each weight matrix uniform on `±√(6/(fan_in + fan_out))`, biases zero, re-drawn at
    /// every upper iteration (the network's default).
    Xavier,
}

impl Init {
    /// Name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Init::Zero => "zero",
            Init::Xavier => "xavier",
        }
    }
}

/// The draws of `y₀` for one problem.
#[derive(Clone, Debug)]
pub struct InitDraw {
    init: Init,
    seed: u64,
    y_len: usize,
    /// Each weight matrix: its range in `y` and `fan_in + fan_out`.
    matrices: Vec<(std::ops::Range<usize>, usize)>,
}

impl InitDraw {
    /// The draws of `init` for the classifier of `data`, seeded with `seed`.
    pub fn new(init: Init, seed: u64, data: &HypercleanData<'_>) -> Self {
        let shapes = data.classifier.weight_shapes(data.dim, data.classes);
        let matrices = data
            .layout()
            .weights()
            .into_iter()
            .zip(shapes)
            .filter(|(range, _)| !range.is_empty())
            .map(|(range, (fan_in, fan_out))| (range, fan_in + fan_out))
            .collect();
        InitDraw {
            init,
            seed,
            y_len: data.y_len(),
            matrices,
        }
    }

    /// Length of a `y` buffer.
    pub fn y_len(&self) -> usize {
        self.y_len
    }

    /// Whether `y₀` changes between upper iterations (zero does not).
    pub fn redrawn(&self) -> bool {
        self.init != Init::Zero
    }

    /// `y₀` of upper iteration `ul_iter` into `y` (`y_len` entries).
    pub fn draw(&self, ul_iter: u32, y: &mut [f64]) {
        y.fill(0.0);
        if self.init == Init::Zero {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(u64::from(ul_iter) + 1);
        for (range, fans) in &self.matrices {
            let bound = (6.0 / *fans as f64).sqrt();
            for v in &mut y[range.clone()] {
                *v = bound * (2.0 * rng.random::<f64>() - 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bda_kernel::hyperclean::Classifier;

    use super::*;

    #[test]
    fn xavier_draws_are_seeded_bounded_and_fresh_per_iteration() {
        let (x, l) = (vec![0.5f32; 6 * 4], vec![0u8, 1, 2, 0, 1, 2]);
        let p = HypercleanData {
            dim: 4,
            classes: 3,
            classifier: Classifier::Mlp { hidden: 5 },
            train_x: &x,
            train_labels: &l,
            val_x: &x,
            val_labels: &l,
            lambda: 0.0,
        };
        let d = InitDraw::new(Init::Xavier, 7, &p);
        let draw = |d: &InitDraw, t| {
            let mut y = vec![1.0; d.y_len()];
            d.draw(t, &mut y);
            y
        };
        let (a, b) = (draw(&d, 0), draw(&d, 1));
        assert_eq!(a, draw(&d, 0), "same seed and iteration: same draw");
        assert_ne!(a, b, "a fresh draw per upper iteration");
        assert_ne!(a, draw(&InitDraw::new(Init::Xavier, 8, &p), 0), "seeded");
        let l = p.layout();
        let w1_bound = (6.0f64 / 9.0).sqrt();
        let w2_bound = (6.0f64 / 8.0).sqrt();
        assert!(a[l.w1..l.b1].iter().all(|v| v.abs() <= w1_bound));
        assert!(a[l.w2..l.b2].iter().all(|v| v.abs() <= w2_bound));
        // Not all small: the bounds are used.
        assert!(a[l.w1..l.b1].iter().any(|v| v.abs() > 0.5 * w1_bound));
        assert!(a[l.b1..l.w2].iter().chain(&a[l.b2..]).all(|&v| v == 0.0));
        let z = InitDraw::new(Init::Zero, 7, &p);
        assert!(draw(&z, 3).iter().all(|&v| v == 0.0));
    }
}
