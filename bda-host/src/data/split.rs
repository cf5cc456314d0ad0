//! The data hyper-cleaning protocol: a seeded train/validation/test split of a labelled
//! pool, with a known fraction of the training labels replaced by wrong classes.
//!
//! The bi-level problem learns per-sample weights on the (noisy) training set so that a
//! classifier trained with them does well on the (clean) validation set; the test set
//! measures the result. Which labels were flipped is returned, so that the learned weights
//! can be scored against the truth (precision/recall of "weight ≈ 0" vs "corrupted").
//!
//! Everything is drawn from one `ChaCha8Rng` seeded with `seed`, in a fixed order (shuffle,
//! then the corrupted positions, then their new classes), so a seed reproduces the split
//! bit for bit. ChaCha's output is specified and portable across platforms; the sampling
//! algorithms are those of `rand` 0.9 as pinned in `Cargo.lock`, so a `rand` major upgrade
//! may change the split for a given seed.

use rand::seq::{SliceRandom, index};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::SplitError;
use super::{Dataset, Samples};

/// Some rows of a [`Dataset`], copied out in split order.
pub type Subset = Samples;

/// The result of [`hyperclean_split`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training samples with noisy labels.
    pub train: Subset,
    /// Validation samples, clean labels.
    pub val: Subset,
    /// Test samples (everything not in train or validation), clean labels.
    pub test: Subset,
    /// `corrupted[i]` is true when `train.labels[i]` was replaced; exactly
    /// `round(noise * n_train)` entries are true.
    pub corrupted: Vec<bool>,
    /// The original training labels, so that metrics can compare against the truth.
    pub clean_labels_train: Vec<u8>,
    /// Where each training sample is in the dataset (`train_index[i]` for `train`'s row `i`).
    pub train_index: Vec<usize>,
    /// Classes: the dataset's largest label + 1.
    pub classes: usize,
}

/// Splits `ds` for data hyper-cleaning and corrupts a fraction `noise` of the training labels.
///
/// 1. Shuffle the indices `0..n` (Fisher–Yates, `SliceRandom::shuffle`) with
///    `ChaCha8Rng::seed_from_u64(seed)`; the first `n_train` are train, the next `n_val`
///    validation, the rest test (so `n_train + n_val < n` is required: the test set must
///    not be empty).
/// 2. With the same generator, choose `round(noise * n_train)` training positions uniformly
///    without replacement (`rand::seq::index::sample`), and, in that order, replace each
///    label `y` with `(y + r) % c` for `r` uniform in `1..=c − 1` (`c` classes, the largest
///    label + 1): a uniformly drawn class other than `y`, so every corrupted label is really
///    wrong.
///
/// Checks the flags (`--n-train`, `--n-val` at least 1, `--noise` in `[0, 1]`) and, since
/// `Dataset`'s fields are public, that the dataset is self-consistent, so that no input
/// can make it panic.
pub fn hyperclean_split(
    ds: &Dataset,
    n_train: usize,
    n_val: usize,
    noise: f64,
    seed: u64,
) -> Result<Split, SplitError> {
    check(ds, n_train, n_val, noise)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let mut order: Vec<usize> = (0..ds.n).collect();
    order.shuffle(&mut rng);
    let (train_idx, rest) = order.split_at(n_train);
    let (val_idx, test_idx) = rest.split_at(n_val);

    // `check` guarantees pixels.len() == n * dim with dim > 0, so there are exactly n rows
    // and every index from `order` is in range.
    let rows: Vec<&[f32]> = ds.x.chunks_exact(ds.dim).collect();
    let gather = |idx: &[usize]| {
        let mut x = Vec::with_capacity(idx.len() * ds.dim);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(rows[i]);
            labels.push(ds.labels[i]);
        }
        Subset {
            n: idx.len(),
            dim: ds.dim,
            x,
            labels,
        }
    };
    let mut train = gather(train_idx);
    let val = gather(val_idx);
    let test = gather(test_idx);

    let clean_labels_train = train.labels.clone();
    // At most 256 (labels are bytes).
    let classes = ds.classes() as u16;
    let mut corrupted = vec![false; n_train];
    // `check` keeps noise in [0, 1], so the product is in [0, n_train]; `min` is belt and
    // braces against rounding.
    let n_corrupt = ((noise * n_train as f64).round() as usize).min(n_train);
    for i in index::sample(&mut rng, n_train, n_corrupt) {
        // `classes − 1` is at least 1 (checked) and fits a byte: labels are bytes.
        let r = rng.random_range(1..=(classes - 1) as u8);
        if let (Some(y), Some(c)) = (train.labels.get_mut(i), corrupted.get_mut(i)) {
            *y = ((u16::from(*y) + u16::from(r)) % classes) as u8;
            *c = true;
        }
    }

    Ok(Split {
        train,
        val,
        test,
        corrupted,
        clean_labels_train,
        train_index: train_idx.to_vec(),
        classes: usize::from(classes),
    })
}

fn check(ds: &Dataset, n_train: usize, n_val: usize, noise: f64) -> Result<(), SplitError> {
    let bad = |what: String| Err(SplitError::BadDataset { what });
    if ds.dim == 0 {
        return bad("dim is 0".into());
    }
    if ds.n.checked_mul(ds.dim) != Some(ds.x.len()) {
        return bad(format!(
            "{} pixels for n = {} samples of dim {}",
            ds.x.len(),
            ds.n,
            ds.dim
        ));
    }
    if ds.labels.len() != ds.n {
        return bad(format!("{} labels for n = {}", ds.labels.len(), ds.n));
    }
    if ds.labels.iter().all(|&y| y == ds.labels[0]) {
        return bad("the labels name fewer than two classes".into());
    }
    if n_train == 0 {
        return Err(SplitError::EmptyTrain);
    }
    if n_val == 0 {
        return Err(SplitError::EmptyVal);
    }
    if n_train.checked_add(n_val).is_none_or(|s| s >= ds.n) {
        return Err(SplitError::TooLarge {
            n_train,
            n_val,
            n: ds.n,
        });
    }
    if !(0.0..=1.0).contains(&noise) {
        return Err(SplitError::BadNoise { noise });
    }
    Ok(())
}
