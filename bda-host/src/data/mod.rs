//! Datasets for `bda hyperclean`: MNIST-format IDX files and the data hyper-cleaning
//! protocol.
//!
//! * [`idx`]: the IDX reader (idx3 images, idx1 labels, plain or gzip), pure parsers over
//!   byte buffers plus file readers.
//! * [`load_mnist_dir`]: a folder with the four standard MNIST file names becomes one
//!   [`Dataset`] of all 70 000 (or however many) samples, pixels scaled to `[0, 1]`.
//! * [`hyperclean_split`]: the seeded train/validation/test split with label noise on the
//!   training part, as in the data hyper-cleaning experiments.
//!
//! Errors name the file and the problem on one line ([`DataError`]), so the command line
//! can print them as they are.

pub mod error;
pub mod idx;
pub mod split;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use error::{DataError, IdxError, IdxKind, PayloadSize, SplitError};
pub use idx::{
    Images, decode_idx_bytes, gunzip, is_gzip, parse_images, parse_labels, read_idx_file,
    read_images, read_labels,
};
pub use split::{Split, Subset, hyperclean_split};

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST (the four gzipped
/// IDX files). The default data folder of `bda hyperclean`.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four standard base names, in the order train images, train labels, test images,
/// test labels. Each may also carry a `.gz` suffix.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Labelled samples: `n × dim` features row-major (MNIST-format pixels `value / 255` in
/// `[0, 1]`), `n` class labels. A whole dataset ([`load_mnist_dir`]: train then
/// test) and the sets of a split ([`hyperclean_split`]) are both this.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Number of samples.
    pub n: usize,
    /// Features per sample (784 for MNIST-format images).
    pub dim: usize,
    /// `n × dim` row-major features.
    pub x: Vec<f32>,
    /// `n` class labels (for a training set: after any corruption).
    pub labels: Vec<u8>,
}

impl Samples {
    /// The classes the labels name: the largest label + 1 (0 without samples).
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| usize::from(m) + 1)
    }
}

/// All samples of an MNIST-format dataset, train then test.
pub type Dataset = Samples;

/// The paths of the four files of an MNIST-format folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

/// Finds the four standard files in `dir`, each either plain or with `.gz` (the plain one
/// wins when both exist, since it needs no decompression). Fails with
/// [`DataError::MissingFiles`] listing every file that is absent, so the user fixes the
/// folder in one go.
pub fn find_mnist_files(dir: &Path) -> Result<MnistFiles, DataError> {
    let mut found = Vec::with_capacity(4);
    let mut missing = Vec::new();
    for base in MNIST_FILES {
        let plain = dir.join(base);
        let gz = dir.join(format!("{base}.gz"));
        if plain.is_file() {
            found.push(plain);
        } else if gz.is_file() {
            found.push(gz);
        } else {
            missing.push(base.to_string());
        }
    }
    match <[PathBuf; 4]>::try_from(found) {
        Ok([train_images, train_labels, test_images, test_labels]) if missing.is_empty() => {
            Ok(MnistFiles {
                train_images,
                train_labels,
                test_images,
                test_labels,
            })
        }
        _ => Err(DataError::MissingFiles {
            dir: dir.to_path_buf(),
            missing,
        }),
    }
}

/// One half (train or t10k) of a folder: decoded image-file bytes and the labels, checked
/// against each other. The pixels stay as the file buffer so that the merge converts both
/// halves to `f32` in a single pass into one allocation.
struct Part {
    bytes: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Part {
    fn load(images: &Path, labels: &Path) -> Result<Part, DataError> {
        let bytes = read_idx_file(images)?;
        let view = idx::parse_images_view(&bytes).map_err(|err| DataError::Idx {
            path: images.to_path_buf(),
            err,
        })?;
        let (rows, cols) = (view.rows, view.cols);
        let n_images = view.n;
        let labels_vec = read_labels(labels)?;
        if labels_vec.len() != n_images {
            return Err(DataError::CountMismatch {
                images: images.to_path_buf(),
                labels: labels.to_path_buf(),
                n_images,
                n_labels: labels_vec.len(),
            });
        }
        Ok(Part {
            bytes,
            labels: labels_vec,
            rows,
            cols,
        })
    }

    /// The pixel bytes (already validated by `load`).
    fn pixels(&self) -> &[u8] {
        self.bytes
            .get(IdxKind::Images.header_len()..)
            .unwrap_or_default()
    }
}

/// Load an MNIST-format folder: the training file's samples, then the test file's, pixel
/// values `q/255`. Images of any one size (both files alike) and any number of classes
/// (labels `0..=max`, at least two classes) are accepted: the classifier takes its input
/// size and its classes from the data.
pub fn load_mnist_dir(dir: &Path) -> Result<Dataset, DataError> {
    load_mnist(dir).map(|m| m.samples)
}

/// A loaded MNIST-format folder ([`load_mnist`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// Both files' samples, the training file's first.
    pub samples: Dataset,
    /// How many came from the training file (sample `i ≥ train_file` is sample
    /// `i − train_file` of the test file).
    pub train_file: usize,
}

/// [`load_mnist_dir`], with where each sample came from.
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    let f = find_mnist_files(dir)?;
    let (train, test) = rayon::join(
        || Part::load(&f.train_images, &f.train_labels),
        || Part::load(&f.test_images, &f.test_labels),
    );
    let (train, test) = (train?, test?);
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(DataError::Dims {
            path: f.test_images.clone(),
            rows: test.rows,
            cols: test.cols,
            other: f.train_images.clone(),
            other_rows: train.rows,
            other_cols: train.cols,
        });
    }
    let dim = train.rows * train.cols;
    let degenerate = |what: &str| DataError::Degenerate {
        dir: dir.to_path_buf(),
        what: what.into(),
    };
    if dim == 0 {
        return Err(degenerate("images have no pixels"));
    }
    let n = train.labels.len() + test.labels.len();
    // One pass, u8 -> f32, straight from the file buffers into one allocation. Division
    // (not multiplication by 1/255) so that each value is the correctly rounded
    // `value / 255`. The output is zero-allocated (the OS maps zero pages lazily) and
    // filled in parallel blocks: the cost is mostly first-touch page faults, which then
    // spread over the cores.
    let mut pixels = vec![0.0f32; n * dim];
    let (out_train, out_test) = pixels.split_at_mut(train.labels.len() * dim);
    for (out, part) in [(out_train, &train), (out_test, &test)] {
        const BLOCK: usize = 1 << 16;
        out.par_chunks_mut(BLOCK)
            .zip(part.pixels().par_chunks(BLOCK))
            .for_each(|(o, i)| {
                for (o, &i) in o.iter_mut().zip(i) {
                    *o = f32::from(i) / 255.0;
                }
            });
    }
    let train_file = train.labels.len();
    let mut labels = train.labels;
    labels.extend_from_slice(&test.labels);
    let samples = Dataset {
        n,
        dim,
        x: pixels,
        labels,
    };
    if samples.classes() < 2 {
        return Err(degenerate("the labels name fewer than two classes"));
    }
    Ok(Mnist {
        samples,
        train_file,
    })
}
