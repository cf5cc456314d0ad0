//! The data of one hyper-cleaning run on the host: an MNIST-format folder split by the
//! protocol, or a random instance for tests and benchmarks.

use std::path::Path;

use bda_kernel::hyperclean::HypercleanData;

use crate::config::DataSource;
use crate::error::CliError;

/// The data of one run, on the host.
#[derive(Clone, Debug)]
pub struct HostData {
    /// What reports call the data: the dataset name, or the folder that was read.
    pub dataset: String,
    /// Features per sample.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// Training features (noisy labels below).
    pub train_x: Vec<f32>,
    /// Training labels (after corruption).
    pub train_labels: Vec<u8>,
    /// Validation features.
    pub val_x: Vec<f32>,
    /// Validation labels.
    pub val_labels: Vec<u8>,
    /// Test features.
    pub test_x: Vec<f32>,
    /// Test labels.
    pub test_labels: Vec<u8>,
    /// Which training labels were corrupted.
    pub corrupted: Vec<bool>,
}

impl HostData {
    /// The kernel's view.
    pub fn problem(&self, lambda: f32) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.dim,
            classes: self.classes,
            train_x: &self.train_x,
            train_labels: &self.train_labels,
            val_x: &self.val_x,
            val_labels: &self.val_labels,
            lambda,
        }
    }

    /// `y` buffers' length, `(d + 1)·c`.
    pub fn y_len(&self) -> usize {
        (self.dim + 1) * self.classes
    }

    /// A random instance with pixel values `q/255` and `noise` of the training labels
    /// replaced (tests, benchmarks without data files).
    pub fn synthetic(
        n_train: usize,
        n_val: usize,
        n_test: usize,
        dim: usize,
        classes: usize,
        noise: f64,
        seed: u64,
    ) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Class prototypes; samples are noisy prototypes, so the task is learnable.
        let protos: Vec<f32> = (0..classes * dim).map(|_| rng.random::<f32>()).collect();
        let gen_set = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut x = Vec::with_capacity(n * dim);
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                let k = rng.random_range(0..classes);
                l.push(k as u8);
                for j in 0..dim {
                    let v = 0.6 * protos[k * dim + j] + 0.4 * rng.random::<f32>();
                    x.push((v * 255.0).round().clamp(0.0, 255.0) / 255.0);
                }
            }
            (x, l)
        };
        let (train_x, mut train_labels) = gen_set(n_train, &mut rng);
        let (val_x, val_labels) = gen_set(n_val, &mut rng);
        let (test_x, test_labels) = gen_set(n_test, &mut rng);
        let n_bad = (noise * n_train as f64).round() as usize;
        let mut corrupted = vec![false; n_train];
        for i in 0..n_bad.min(n_train) {
            corrupted[i] = true;
            let r = rng.random_range(1..classes);
            train_labels[i] = ((train_labels[i] as usize + r) % classes) as u8;
        }
        HostData {
            dataset: "synthetic".into(),
            dim,
            classes,
            train_x,
            train_labels,
            val_x,
            val_labels,
            test_x,
            test_labels,
            corrupted,
        }
    }

    /// The MNIST-format folder `dir` split by the protocol ([`crate::data::hyperclean_split`]);
    /// `name` is what reports call the data. Errors are one line naming the file or flag.
    pub fn load_mnist(
        dir: &Path,
        name: &str,
        n_train: usize,
        n_val: usize,
        noise: f64,
        seed: u64,
    ) -> Result<HostData, String> {
        let ds = crate::data::load_mnist_dir(dir).map_err(|e| e.to_string())?;
        let split = crate::data::hyperclean_split(&ds, n_train, n_val, noise, seed)
            .map_err(|e| e.to_string())?;
        Ok(HostData {
            dataset: name.to_string(),
            dim: split.train.dim,
            classes: 10,
            train_x: split.train.x,
            train_labels: split.train.labels,
            val_x: split.val.x,
            val_labels: split.val.labels,
            test_x: split.test.x,
            test_labels: split.test.labels,
            corrupted: split.corrupted,
        })
    }
}

/// The files of an MNIST-format folder that [`HostData::load_mnist`] reads, hashed.
pub fn mnist_source(dir: &Path) -> Result<DataSource, CliError> {
    let f = crate::data::find_mnist_files(dir).map_err(|e| CliError::input(e.to_string()))?;
    DataSource::of_files(
        dir,
        &[f.train_images, f.train_labels, f.test_images, f.test_labels],
    )
}
