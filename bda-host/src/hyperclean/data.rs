//! The data of one hyper-cleaning run on the host: an MNIST-format folder split by the
//! protocol, or a random instance for tests and benchmarks.

use std::path::Path;

use bda_kernel::hyperclean::{Classifier, HypercleanData};

use crate::config::DataSource;
use crate::data::Subset;
use crate::error::CliError;

/// The data of one run, on the host: the three sets of the protocol.
#[derive(Clone, Debug)]
pub struct HostData {
    /// What reports call the data: the dataset name, or the folder that was read.
    pub dataset: String,
    /// Classes.
    pub classes: usize,
    /// Training set, its labels after corruption.
    pub train: Subset,
    /// Validation set (clean labels).
    pub val: Subset,
    /// Test set (clean labels).
    pub test: Subset,
    /// Which training labels were corrupted.
    pub corrupted: Vec<bool>,
    /// Where each training sample came from: its file and index there.
    pub origin: Vec<Origin>,
    /// The classifier fitted to these data; see [`HostData::with_classifier`].
    pub classifier: Classifier,
}

/// Where a training sample came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `train` or `t10k` (the MNIST-format files), or `synthetic`.
    pub file: &'static str,
    /// Its index in that file.
    pub index: usize,
}

impl HostData {
    /// The kernel's view.
    pub fn problem(&self, lambda: f32) -> HypercleanData<'_> {
        HypercleanData {
            dim: self.train.dim,
            classes: self.classes,
            classifier: self.classifier,
            train_x: &self.train.x,
            train_labels: &self.train.labels,
            val_x: &self.val.x,
            val_labels: &self.val.labels,
            lambda,
        }
    }

    /// `y` buffers' length, `(d + 1)·c`, or `(d + 1)·H + (H + 1)·c` with a hidden layer.
    pub fn y_len(&self) -> usize {
        self.problem(0.0).y_len()
    }

    /// The same data, fitted with `classifier`.
    pub fn with_classifier(self, classifier: Classifier) -> Self {
        HostData { classifier, ..self }
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
            let mut labels = Vec::with_capacity(n);
            for _ in 0..n {
                let k = rng.random_range(0..classes);
                labels.push(k as u8);
                for j in 0..dim {
                    let v = 0.6 * protos[k * dim + j] + 0.4 * rng.random::<f32>();
                    x.push((v * 255.0).round().clamp(0.0, 255.0) / 255.0);
                }
            }
            Subset { n, dim, x, labels }
        };
        let mut train = gen_set(n_train, &mut rng);
        let val = gen_set(n_val, &mut rng);
        let test = gen_set(n_test, &mut rng);
        let n_bad = (noise * n_train as f64).round() as usize;
        let mut corrupted = vec![false; n_train];
        for (bad, label) in corrupted.iter_mut().zip(&mut train.labels).take(n_bad) {
            *bad = true;
            let r = rng.random_range(1..classes);
            *label = ((*label as usize + r) % classes) as u8;
        }
        HostData {
            dataset: "synthetic".into(),
            classes,
            train,
            val,
            test,
            corrupted,
            origin: (0..n_train)
                .map(|index| Origin {
                    file: "synthetic",
                    index,
                })
                .collect(),
            classifier: Classifier::Linear,
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
        let m = crate::data::load_mnist(dir).map_err(|e| e.to_string())?;
        let split = crate::data::hyperclean_split(&m.samples, n_train, n_val, noise, seed)
            .map_err(|e| e.to_string())?;
        let origin = split
            .train_index
            .iter()
            .map(|&i| match i.checked_sub(m.train_file) {
                None => Origin {
                    file: "train",
                    index: i,
                },
                Some(index) => Origin {
                    file: "t10k",
                    index,
                },
            })
            .collect();
        Ok(HostData {
            dataset: name.to_string(),
            classes: split.classes,
            train: split.train,
            val: split.val,
            test: split.test,
            corrupted: split.corrupted,
            origin,
            classifier: Classifier::Linear,
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
