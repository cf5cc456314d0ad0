//! Image classification data in the IDX format of MNIST, written at test time: any number of
//! samples and any image side, so that a test can have more rows than the committed fixtures
//! (several of the backends' row chunks) without a file in the repository.

use std::io;
use std::path::Path;

use crate::Rng;

/// Writes `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte` into `dir`: `n_train` and `n_test` images of `side × side`
/// pixels, 10 classes, each class a bright band at its own rows plus noise, so that a
/// classifier has something to learn.
pub fn write_dataset(
    dir: &Path,
    n_train: usize,
    n_test: usize,
    side: usize,
    seed: u64,
) -> io::Result<()> {
    let mut r = Rng::new(seed);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut images = header(0x0803, &[n, side, side]);
        let mut labels = header(0x0801, &[n]);
        for i in 0..n {
            let class = (i * 7 + r.below(10)) % 10;
            labels.push(class as u8);
            for row in 0..side {
                let band = row * 10 / side.max(1) == class;
                for _ in 0..side {
                    let base = if band { 170.0 } else { 30.0 };
                    images.push((base + 80.0 * r.uniform()).min(255.0) as u8);
                }
            }
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images)?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels)?;
    }
    Ok(())
}

/// The IDX header: the magic number, then each dimension, big-endian.
fn header(magic: u32, dims: &[usize]) -> Vec<u8> {
    let mut h = magic.to_be_bytes().to_vec();
    for &d in dims {
        h.extend((d as u32).to_be_bytes());
    }
    h
}
