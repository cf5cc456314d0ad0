//! Integration tests of the data layer on the fixtures that `scripts/make_fixtures.py`
//! cuts from real MNIST and Fashion-MNIST, and on its broken-file cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bda_host::data::{
    DataError, Dataset, FASHION_MNIST_DIR, IdxError, IdxKind, MNIST_FILES, PayloadSize, SplitError,
    decode_idx_bytes, hyperclean_split, load_mnist_dir, parse_images, parse_labels, read_images,
    read_labels,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn fx(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

fn class_counts(labels: &[u8]) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for &y in labels {
        *m.entry(y).or_insert(0) += 1;
    }
    m
}

/// Asserts the one-line, names-the-file contract of every `DataError` message.
fn assert_message(err: &DataError, file_name: &str) -> String {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "message spans lines: {msg:?}");
    assert!(
        msg.contains(file_name),
        "message does not name {file_name}: {msg}"
    );
    msg
}

// --- reading the real-data fixtures ---------------------------------------------------------

#[test]
fn reads_gzipped_fashion_mnist_files() {
    let images = read_images(&fx("fmnist-tiny/train-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((images.n, images.rows, images.cols), (200, 28, 28));
    assert_eq!(images.pixels.len(), 200 * 784);
    assert_eq!(images.image(199).map(<[u8]>::len), Some(784));
    assert_eq!(images.image(200), None);
    let labels = read_labels(&fx("fmnist-tiny/train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels.len(), 200);
    // The script draws 20 samples per class.
    assert_eq!(class_counts(&labels), (0..10).map(|c| (c, 20)).collect());
}

#[test]
fn reads_plain_mnist_files() {
    let images = read_images(&fx("mnist-tiny/t10k-images-idx3-ubyte")).unwrap();
    assert_eq!((images.n, images.rows, images.cols), (50, 28, 28));
    let labels = read_labels(&fx("mnist-tiny/t10k-labels-idx1-ubyte")).unwrap();
    assert_eq!(class_counts(&labels), (0..10).map(|c| (c, 5)).collect());
    // Real digits: mostly black background, some ink.
    let ink = images.pixels.iter().filter(|&&p| p > 128).count();
    assert!(ink > 50 * 50 && ink < 50 * 400, "{ink} bright pixels");
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // A gzip file without .gz, and a plain file with .gz.
    let gz_plain_name = dir.path().join("images");
    std::fs::copy(fx("fmnist-tiny/t10k-images-idx3-ubyte.gz"), &gz_plain_name).unwrap();
    let plain_gz_name = dir.path().join("labels.gz");
    std::fs::copy(fx("mnist-tiny/t10k-labels-idx1-ubyte"), &plain_gz_name).unwrap();
    assert_eq!(read_images(&gz_plain_name).unwrap().n, 100);
    assert_eq!(
        read_labels(&plain_gz_name).unwrap(),
        read_labels(&fx("mnist-tiny/t10k-labels-idx1-ubyte")).unwrap()
    );
}

#[test]
fn gzip_and_plain_decode_to_the_same_images() {
    let gz = std::fs::read(fx("fmnist-tiny/t10k-images-idx3-ubyte.gz")).unwrap();
    let plain = decode_idx_bytes(gz.clone()).unwrap();
    assert_ne!(plain, gz);
    assert_eq!(
        parse_images(&plain).unwrap(),
        read_images(&fx("fmnist-tiny/t10k-images-idx3-ubyte.gz")).unwrap()
    );
    // Plain bytes pass through unchanged.
    assert_eq!(decode_idx_bytes(plain.clone()).unwrap(), plain);
}

#[test]
fn loads_both_fixture_folders_train_then_test() {
    for (folder, n_train, n_test) in [("fmnist-tiny", 200, 100), ("mnist-tiny", 100, 50)] {
        let ds = load_mnist_dir(&fx(folder)).unwrap();
        assert_eq!((ds.n, ds.dim), (n_train + n_test, 784), "{folder}");
        assert_eq!(ds.x.len(), ds.n * 784);
        assert_eq!(ds.labels.len(), ds.n);
        assert!(ds.labels.iter().all(|&y| y <= 9));
        assert_eq!(class_counts(&ds.labels).len(), 10, "{folder}: all classes");
        assert!(ds.x.iter().all(|&p| (0.0..=1.0).contains(&p)));
        assert!(ds.x.contains(&1.0) && ds.x.contains(&0.0));

        // Train first, then test, pixels value / 255.
        let find = |base: &str| {
            let p = fx(folder).join(base);
            if p.exists() {
                p
            } else {
                fx(folder).join(format!("{base}.gz"))
            }
        };
        let train = read_images(&find(MNIST_FILES[0])).unwrap();
        let test = read_images(&find(MNIST_FILES[2])).unwrap();
        let expect: Vec<f32> = train
            .pixels
            .iter()
            .chain(&test.pixels)
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        assert!(ds.x == expect, "{folder}: pixels differ");
        let mut labels = read_labels(&find(MNIST_FILES[1])).unwrap();
        labels.extend(read_labels(&find(MNIST_FILES[3])).unwrap());
        assert_eq!(ds.labels, labels);
    }
}

// --- the hyper-cleaning protocol ------------------------------------------------------------

fn fmnist() -> Dataset {
    load_mnist_dir(&fx("fmnist-tiny")).unwrap()
}

#[test]
fn split_sizes_and_partition() {
    let ds = fmnist();
    let s = hyperclean_split(&ds, 120, 80, 0.5, 7).unwrap();
    assert_eq!((s.train.n, s.val.n, s.test.n), (120, 80, 100));
    for sub in [&s.train, &s.val, &s.test] {
        assert_eq!(sub.dim, 784);
        assert_eq!(sub.x.len(), sub.n * 784);
        assert_eq!(sub.labels.len(), sub.n);
    }
    // Together the subsets are a permutation of the pool: same rows, same clean labels.
    let mut pool: Vec<(Vec<u32>, u8)> =
        ds.x.chunks_exact(784)
            .zip(&ds.labels)
            .map(|(x, &y)| (x.iter().map(|v| v.to_bits()).collect(), y))
            .collect();
    let mut got: Vec<(Vec<u32>, u8)> = Vec::new();
    for (sub, labels) in [
        (&s.train, &s.clean_labels_train),
        (&s.val, &s.val.labels),
        (&s.test, &s.test.labels),
    ] {
        for (x, &y) in sub.x.chunks_exact(784).zip(labels.iter()) {
            got.push((x.iter().map(|v| v.to_bits()).collect(), y));
        }
    }
    pool.sort();
    got.sort();
    assert!(pool == got, "split is not a permutation of the dataset");
}

#[test]
fn split_is_deterministic_per_seed() {
    let ds = fmnist();
    let a = hyperclean_split(&ds, 150, 50, 0.3, 42).unwrap();
    let b = hyperclean_split(&ds, 150, 50, 0.3, 42).unwrap();
    assert!(a == b, "same seed, different split");
    assert!(
        a.train
            .x
            .iter()
            .zip(&b.train.x)
            .all(|(p, q)| p.to_bits() == q.to_bits()),
        "not bit for bit"
    );
    let c = hyperclean_split(&ds, 150, 50, 0.3, 43).unwrap();
    assert_ne!(a.train.x, c.train.x, "different seeds, same order");
    assert_ne!(a.corrupted, c.corrupted);
}

#[test]
fn corrupts_exactly_round_noise_n_and_every_flip_is_wrong() {
    let ds = load_mnist_dir(&fx("mnist-tiny")).unwrap();
    // 0.25 * 10 = 2.5 rounds (half away from zero) to 3; 0.33 * 100 = 33; 0.005 * 100 = 0.5 -> 1.
    for (n_train, noise, want) in [
        (10, 0.25, 3),
        (100, 0.33, 33),
        (100, 0.005, 1),
        (100, 0.0, 0),
        (100, 1.0, 100),
        (40, 0.6, 24),
    ] {
        for seed in 0..5 {
            let s = hyperclean_split(&ds, n_train, 20, noise, seed).unwrap();
            assert_eq!(s.corrupted.len(), n_train);
            assert_eq!(s.clean_labels_train.len(), n_train);
            let flipped = s.corrupted.iter().filter(|&&c| c).count();
            assert_eq!(flipped, want, "n_train {n_train} noise {noise} seed {seed}");
            for i in 0..n_train {
                let (noisy, clean) = (s.train.labels[i], s.clean_labels_train[i]);
                assert!(noisy <= 9);
                assert_eq!(noisy != clean, s.corrupted[i], "index {i}");
            }
        }
    }
}

#[test]
fn corrupted_labels_cover_the_other_classes() {
    // Uniform over the nine other classes: with 100 flips every offset 1..=9 should show up.
    let ds = load_mnist_dir(&fx("mnist-tiny")).unwrap();
    let s = hyperclean_split(&ds, 100, 20, 1.0, 3).unwrap();
    let offsets: BTreeMap<u8, usize> = class_counts(
        &s.train
            .labels
            .iter()
            .zip(&s.clean_labels_train)
            .map(|(&n, &c)| (n + 10 - c) % 10)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        offsets.keys().copied().collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
}

#[test]
fn split_rejects_bad_flags() {
    let ds = load_mnist_dir(&fx("mnist-tiny")).unwrap(); // n = 150
    let err = hyperclean_split(&ds, 100, 50, 0.1, 0).unwrap_err();
    assert_eq!(
        err,
        SplitError::TooLarge {
            n_train: 100,
            n_val: 50,
            n: 150
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--n-train") && msg.contains("--n-val"),
        "{msg}"
    );
    assert!(hyperclean_split(&ds, 100, 49, 0.1, 0).is_ok());
    assert!(matches!(
        hyperclean_split(&ds, usize::MAX, 2, 0.1, 0),
        Err(SplitError::TooLarge { .. })
    ));
    assert_eq!(
        hyperclean_split(&ds, 0, 10, 0.1, 0),
        Err(SplitError::EmptyTrain)
    );
    assert_eq!(
        hyperclean_split(&ds, 10, 0, 0.1, 0),
        Err(SplitError::EmptyVal)
    );
    for noise in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            hyperclean_split(&ds, 10, 10, noise, 0),
            Err(SplitError::BadNoise { .. })
        ));
    }
    let mut broken = ds.clone();
    broken.x.pop();
    assert!(matches!(
        hyperclean_split(&broken, 10, 10, 0.1, 0),
        Err(SplitError::BadDataset { .. })
    ));
    // Labels of one class only: nothing to classify, nothing to corrupt into.
    let mut broken = ds.clone();
    broken.labels.iter_mut().for_each(|l| *l = 4);
    assert!(matches!(
        hyperclean_split(&broken, 10, 10, 0.1, 0),
        Err(SplitError::BadDataset { .. })
    ));
    // A label above 9 is one more class: corrupted labels stay below the largest + 1.
    let mut more = ds.clone();
    more.labels[3] = 12;
    let s = hyperclean_split(&more, 90, 40, 1.0, 0).unwrap();
    assert_eq!(s.classes, 13);
    assert!(s.train.labels.iter().all(|&y| y < 13));
    assert!(
        s.train
            .labels
            .iter()
            .zip(&s.clean_labels_train)
            .all(|(a, b)| a != b),
        "every corrupted label is another class"
    );
    let empty = Dataset {
        n: 0,
        dim: 0,
        x: vec![],
        labels: vec![],
    };
    assert!(hyperclean_split(&empty, 1, 1, 0.0, 0).is_err());
}

// --- bad inputs -----------------------------------------------------------------------------

fn idx_err(err: DataError) -> IdxError {
    match err {
        DataError::Idx { err, .. } => err,
        other => panic!("expected DataError::Idx, got {other:?}"),
    }
}

#[test]
fn bad_magic_number() {
    for (file, found) in [
        ("bad-magic-images-idx3-ubyte", 0x0000_0903),
        ("wrong-ndim-images-idx3-ubyte", 0x0000_0802),
        ("labels-as-images-idx3-ubyte", 0x0000_0801),
    ] {
        let err = read_images(&fx("bad-idx").join(file)).unwrap_err();
        let msg = assert_message(&err, file);
        assert!(msg.contains("bad magic"), "{msg}");
        assert_eq!(
            idx_err(err),
            IdxError::BadMagic {
                kind: IdxKind::Images,
                found
            }
        );
    }
    let err = read_images(&fx("bad-idx/not-idx-images-idx3-ubyte")).unwrap_err();
    assert!(assert_message(&err, "not-idx-images-idx3-ubyte").contains("not an IDX file"));
    // An images file given as labels.
    let err = read_labels(&fx("mnist-tiny/t10k-images-idx3-ubyte")).unwrap_err();
    assert_message(&err, "t10k-images-idx3-ubyte");
    assert!(matches!(
        idx_err(err),
        IdxError::BadMagic {
            kind: IdxKind::Labels,
            found: 0x0000_0803
        }
    ));
}

#[test]
fn short_header() {
    let err = read_images(&fx("bad-idx/short-header-images-idx3-ubyte")).unwrap_err();
    assert_message(&err, "short-header-images-idx3-ubyte");
    assert_eq!(
        idx_err(err),
        IdxError::TooShort {
            kind: IdxKind::Images,
            len: 12
        }
    );
}

#[test]
fn truncated_plain_and_gzipped() {
    for file in [
        "truncated-images-idx3-ubyte",
        "truncated-images-idx3-ubyte.gz",
    ] {
        let err = read_images(&fx("bad-idx").join(file)).unwrap_err();
        let msg = assert_message(&err, file);
        assert!(
            msg.contains(
                "truncated: header says 10 images of 28x28 (7840 bytes), file has 2352 bytes"
            ),
            "{msg}"
        );
        assert!(matches!(
            idx_err(err),
            IdxError::Truncated(PayloadSize {
                n: 10,
                expected: 7840,
                actual: 2352,
                ..
            })
        ));
    }
}

#[test]
fn trailing_garbage() {
    let file = "trailing-labels-idx1-ubyte";
    let err = read_labels(&fx("bad-idx").join(file)).unwrap_err();
    assert_message(&err, file);
    assert!(matches!(
        idx_err(err),
        IdxError::TrailingBytes(PayloadSize {
            kind: IdxKind::Labels,
            expected: 5,
            actual: 8,
            ..
        })
    ));
}

#[test]
fn labels_are_class_indices_of_any_value() {
    // A dataset's classes are 0..=max label: 12 is class 12, not an error.
    let labels = read_labels(&fx("bad-idx").join("label-12-labels-idx1-ubyte")).unwrap();
    assert_eq!(labels, [1, 2, 3, 4, 12, 5]);
}

#[test]
fn absurd_header_is_refused() {
    let file = "absurd-images-idx3-ubyte";
    let err = read_images(&fx("bad-idx").join(file)).unwrap_err();
    assert_message(&err, file);
    assert!(matches!(idx_err(err), IdxError::TooLarge { .. }));
    // Just over the 1 GiB limit, and a labels count over it.
    let mut hdr = vec![0, 0, 8, 3];
    for d in [1u32 << 20, 32, 32 + 1] {
        hdr.extend(d.to_be_bytes());
    }
    assert!(matches!(parse_images(&hdr), Err(IdxError::TooLarge { .. })));
    let mut hdr = vec![0, 0, 8, 1];
    hdr.extend(u32::MAX.to_be_bytes());
    assert!(matches!(parse_labels(&hdr), Err(IdxError::TooLarge { .. })));
}

#[test]
fn corrupt_and_cut_gzip() {
    for file in ["corrupt-images-idx3-ubyte.gz", "cut-images-idx3-ubyte.gz"] {
        let err = read_images(&fx("bad-idx").join(file)).unwrap_err();
        let msg = assert_message(&err, file);
        assert!(msg.contains("corrupt gzip"), "{msg}");
        assert!(matches!(idx_err(err), IdxError::Gzip { .. }));
    }
}

#[test]
fn images_of_any_one_size_load_and_both_files_must_agree() {
    // 27x27 images in both files: a dataset of 729 features.
    let images = read_images(&fx("bad-idx/dims-27x27/train-images-idx3-ubyte")).unwrap();
    assert_eq!((images.rows, images.cols), (27, 27));
    let m = bda_host::data::load_mnist(&fx("bad-idx/dims-27x27")).unwrap();
    assert_eq!((m.samples.n, m.samples.dim, m.train_file), (5, 729, 3));
    assert!(m.samples.classes() >= 2);
    // 28x28 training images and 27x27 test images: one line naming both files.
    let err = load_mnist_dir(&fx("bad-idx/dims-mixed")).unwrap_err();
    let msg = assert_message(&err, "t10k-images-idx3-ubyte");
    assert!(
        msg.contains("images are 27x27, but")
            && msg.contains("train-images-idx3-ubyte holds 28x28"),
        "{msg}"
    );
    assert!(matches!(
        err,
        DataError::Dims {
            rows: 27,
            cols: 27,
            other_rows: 28,
            other_cols: 28,
            ..
        }
    ));
}

#[test]
fn count_mismatch_names_both_files() {
    let err = load_mnist_dir(&fx("bad-idx/count-mismatch")).unwrap_err();
    assert_message(&err, "train-images-idx3-ubyte");
    assert_message(&err, "train-labels-idx1-ubyte");
    assert!(matches!(
        err,
        DataError::CountMismatch {
            n_images: 6,
            n_labels: 5,
            ..
        }
    ));
}

#[test]
fn missing_files_are_listed_with_a_hint() {
    let dir = fx("bad-idx/missing-test");
    let err = load_mnist_dir(&dir).unwrap_err();
    let msg = assert_message(&err, "missing-test");
    match &err {
        DataError::MissingFiles { missing, .. } => {
            assert_eq!(
                missing,
                &["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
            );
        }
        other => panic!("expected MissingFiles, got {other:?}"),
    }
    assert!(msg.contains("missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz];"));
    assert!(msg.contains("put the four MNIST-format files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in"), "{msg}");
    assert!(!msg.contains("apt-get"));

    // A folder that does not exist: all four missing.
    let err = load_mnist_dir(&fx("no-such-folder")).unwrap_err();
    let msg = assert_message(&err, "no-such-folder");
    assert!(msg.contains("no such folder"), "{msg}");
    assert!(matches!(&err, DataError::MissingFiles { missing, .. } if missing.len() == 4));

    // The default Fashion-MNIST folder points at the Debian package. Built by hand so that
    // the test does not depend on whether the package is installed here.
    let err = DataError::MissingFiles {
        dir: PathBuf::from(FASHION_MNIST_DIR),
        missing: MNIST_FILES.iter().map(|s| s.to_string()).collect(),
    };
    let msg = assert_message(&err, FASHION_MNIST_DIR);
    assert!(
        msg.ends_with("install them with: apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
}

#[test]
fn unreadable_file_is_an_io_error() {
    let file = fx("bad-idx/nothing-here-idx3-ubyte");
    let err = read_images(&file).unwrap_err();
    assert_message(&err, "nothing-here-idx3-ubyte");
    assert!(matches!(err, DataError::Io { .. }));
    assert_eq!(err.path(), file.as_path());
}

// --- never panic --------------------------------------------------------------------------

/// A cheap, always-run stand-in for the fuzz target: every prefix and many single-byte
/// mutations of real files must give `Ok` or `Err`, never a panic.
#[test]
fn parsers_survive_prefixes_and_mutations() {
    let images = std::fs::read(fx("bad-idx/count-mismatch/t10k-images-idx3-ubyte")).unwrap();
    let labels = std::fs::read(fx("mnist-tiny/t10k-labels-idx1-ubyte")).unwrap();
    let gz = std::fs::read(fx("fmnist-tiny/t10k-labels-idx1-ubyte.gz")).unwrap();
    for file in [&images, &labels, &gz] {
        for len in 0..=file.len().min(200) {
            let cut = &file[..len];
            let _ = parse_images(cut);
            let _ = parse_labels(cut);
            let _ = decode_idx_bytes(cut.to_vec()).map(|b| (parse_images(&b), parse_labels(&b)));
        }
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            // xorshift: deterministic positions and values.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut m = file.clone();
            let at = x as usize % m.len().min(64);
            m[at] = (x >> 8) as u8;
            let _ = parse_images(&m);
            let _ = parse_labels(&m);
            let _ = decode_idx_bytes(m).map(|b| (parse_images(&b), parse_labels(&b)));
        }
    }
}

/// Regression (found by the fuzzer): with zero pixels per image every slice is empty and
/// in bounds, so `image(i)` must check `i < n` itself.
#[test]
fn image_past_the_end_of_zero_pixel_images_is_none() {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [0u32, 28, 0] {
        bytes.extend(d.to_be_bytes());
    }
    let img = parse_images(&bytes).unwrap();
    assert_eq!((img.n, img.dim()), (0, 0));
    assert_eq!(img.image(0), None);
    bytes[7] = 3; // n = 3
    let img = parse_images(&bytes).unwrap();
    assert_eq!(img.image(2), Some(&[][..]));
    assert_eq!(img.image(3), None);
}

// --- the real dataset, when present ---------------------------------------------------------

/// Loads the full Fashion-MNIST from the Debian package and prints the time. Ignored by
/// default (it needs `apt-get install dataset-fashion-mnist`, and is slow in debug builds):
/// `cargo test --release -p bda-host --test data_idx -- --ignored --nocapture`.
#[test]
#[ignore]
fn real_fashion_mnist() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        eprintln!("{FASHION_MNIST_DIR} not installed; skipping");
        return;
    }
    let t = std::time::Instant::now();
    let ds = load_mnist_dir(dir).unwrap();
    eprintln!("loaded {} samples in {:?}", ds.n, t.elapsed());
    assert_eq!((ds.n, ds.dim), (70_000, 784));
    assert_eq!(
        class_counts(&ds.labels),
        (0..10).map(|c| (c, 7000)).collect()
    );
    let t = std::time::Instant::now();
    let s = hyperclean_split(&ds, 5000, 5000, 0.5, 0).unwrap();
    eprintln!("split in {:?}", t.elapsed());
    assert_eq!(s.test.n, 60_000);
    assert_eq!(s.corrupted.iter().filter(|&&c| c).count(), 2500);
}
