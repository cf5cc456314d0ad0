//! Errors of the data layer.
//!
//! Two levels, because the IDX parser works on an in-memory buffer and does not know which
//! file the bytes came from ([`IdxError`]), while everything a user sees names the file
//! ([`DataError`]). Every `Display` is a single line that a command line can print as is:
//! the user is told the file and the problem without a backtrace or an error chain. For the
//! same reason none of the variants reports a `source()`: the cause is already part of the
//! line, and error-chain printers would otherwise repeat it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::idx::{IMAGES_MAGIC, LABELS_MAGIC, MAX_PAYLOAD_BYTES};
use super::{FASHION_MNIST_DIR, MNIST_FILES};

/// Which of the two IDX layouts a parser expected, so that a message can say what the file
/// should have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdxKind {
    /// idx3, unsigned bytes, dims `n × rows × cols`, magic `0x00000803`.
    Images,
    /// idx1, unsigned bytes, dims `n`, magic `0x00000801`.
    Labels,
}

impl IdxKind {
    /// The magic number a file of this kind starts with.
    pub const fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    /// Length of the header (magic plus one big-endian `u32` per dimension).
    pub const fn header_len(self) -> usize {
        match self {
            IdxKind::Images => 16,
            IdxKind::Labels => 8,
        }
    }
}

impl fmt::Display for IdxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdxKind::Images => "idx3 u8 images",
            IdxKind::Labels => "idx1 u8 labels",
        })
    }
}

/// What is wrong with a buffer that should hold one IDX file (after gunzip).
///
/// Carries numbers, not text, so that tests and callers can match on them; `Display` turns
/// them into one line without the file name ([`DataError::Idx`] adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    /// Fewer bytes than the fixed-size header.
    #[error("too short for an {kind} header: {len} bytes, need {}", kind.header_len())]
    TooShort { kind: IdxKind, len: usize },
    /// The first four bytes are not the expected magic number (wrong data type byte, wrong
    /// number of dimensions, or not an IDX file at all).
    #[error(
        "bad magic number 0x{found:08x} ({}), expected 0x{:08x} ({kind})",
        describe_magic(*found),
        kind.magic()
    )]
    BadMagic { kind: IdxKind, found: u32 },
    /// The header promises more data than we are willing to hold. Checked before any
    /// allocation, so a hostile 16-byte header cannot make us reserve gigabytes.
    #[error(
        "absurd header: {} would be {} bytes, over the {} byte limit",
        describe_items(*kind, *n, *rows, *cols),
        payload_bytes(*kind, *n, *rows, *cols),
        MAX_PAYLOAD_BYTES
    )]
    TooLarge {
        kind: IdxKind,
        n: u32,
        rows: u32,
        cols: u32,
    },
    /// Fewer bytes after the header than the header says.
    #[error("truncated: {0}")]
    Truncated(PayloadSize),
    /// More bytes after the header than the header says. Rejected rather than ignored:
    /// trailing data usually means a wrong header or two files glued together, and silently
    /// dropping it would hide that.
    #[error("trailing garbage: {0}")]
    TrailingBytes(PayloadSize),
    /// The buffer starts with the gzip magic bytes but does not decompress.
    #[error("corrupt gzip: {msg}")]
    Gzip { msg: String },
    /// The gzip stream decompresses to more than any valid file can hold (a gzip bomb, or
    /// the wrong file).
    #[error("gzip stream decompresses to more than {limit} bytes")]
    GzipTooLarge { limit: u64 },
}

/// A problem loading a data file or folder. `Display` is one line that starts with the file
/// (or folder) path.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system could not open or read the file.
    #[error("{}: cannot read: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// The file's content is not a valid IDX file of the expected kind.
    #[error("{}: {err}", path.display())]
    Idx { path: PathBuf, err: IdxError },
    /// The two images files of a folder hold images of different sizes (any one size is
    /// fine: the classifier's input size comes from the data).
    #[error(
        "{}: images are {rows}x{cols}, but {} holds {other_rows}x{other_cols} images",
        path.display(),
        other.display()
    )]
    Dims {
        path: PathBuf,
        rows: usize,
        cols: usize,
        other: PathBuf,
        other_rows: usize,
        other_cols: usize,
    },
    /// Images without pixels, or labels of a single class: nothing to classify.
    #[error("{}: {what}", dir.display())]
    Degenerate { dir: PathBuf, what: String },
    /// An images file and its labels file disagree on the number of samples.
    #[error(
        "{}: {n_images} images, but {} has {n_labels} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    /// Some of the four standard files are not in the folder (neither plain nor `.gz`).
    /// `missing` holds their base names; the message says how to get them.
    #[error("{}", missing_files_message(dir, missing))]
    MissingFiles { dir: PathBuf, missing: Vec<String> },
}

impl DataError {
    /// The file or folder the error is about (for a count mismatch, the images file).
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::Idx { path, .. }
            | DataError::Dims { path, .. } => path,
            DataError::Degenerate { dir, .. } => dir,
            DataError::CountMismatch { images, .. } => images,
            DataError::MissingFiles { dir, .. } => dir,
        }
    }
}

/// Errors of [`hyperclean_split`](super::hyperclean_split). They name the command-line flags,
/// since the numbers come straight from them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// Train plus validation would use the whole dataset (or more), leaving no test set.
    #[error(
        "--n-train {n_train} + --n-val {n_val} must be less than the {n} samples in the dataset, to leave a test set"
    )]
    TooLarge {
        n_train: usize,
        n_val: usize,
        n: usize,
    },
    /// `--n-train 0`: nothing to train (or corrupt).
    #[error("--n-train must be at least 1")]
    EmptyTrain,
    /// `--n-val 0`: the upper-level objective of hyper-cleaning is the validation loss.
    #[error("--n-val must be at least 1")]
    EmptyVal,
    /// The noise level is a fraction of the training labels.
    #[error("--noise {noise} must be a fraction in [0, 1]")]
    BadNoise { noise: f64 },
    /// A hand-built [`Dataset`](super::Dataset) whose fields disagree; the loader never
    /// produces one.
    #[error("inconsistent dataset: {what}")]
    BadDataset { what: String },
}

/// What an IDX header promises and what the file holds after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSize {
    /// Images or labels.
    pub kind: IdxKind,
    /// Items the header declares.
    pub n: u32,
    /// Rows per image (images only).
    pub rows: u32,
    /// Columns per image (images only).
    pub cols: u32,
    /// Payload bytes the header promises.
    pub expected: u64,
    /// Payload bytes the file holds.
    pub actual: u64,
}

impl fmt::Display for PayloadSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "header says {} ({} bytes), file has {} bytes after the {}-byte header",
            describe_items(self.kind, self.n, self.rows, self.cols),
            self.expected,
            self.actual,
            self.kind.header_len()
        )
    }
}

fn describe_items(kind: IdxKind, n: u32, rows: u32, cols: u32) -> String {
    match kind {
        IdxKind::Images => format!("{n} images of {rows}x{cols}"),
        IdxKind::Labels => format!("{n} labels"),
    }
}

/// Payload size in `u128`: three `u32` factors cannot overflow it, so the message can show
/// the real number even for absurd headers.
fn payload_bytes(kind: IdxKind, n: u32, rows: u32, cols: u32) -> u128 {
    match kind {
        IdxKind::Images => u128::from(n) * u128::from(rows) * u128::from(cols),
        IdxKind::Labels => u128::from(n),
    }
}

/// Says what a wrong magic number would have meant, so that "bad magic" points at the
/// cause (a labels file given as images, floats instead of bytes, not IDX at all).
fn describe_magic(found: u32) -> String {
    let [z0, z1, dtype, ndim] = found.to_be_bytes();
    if z0 != 0 || z1 != 0 {
        return "not an IDX file".to_string();
    }
    let ty = match dtype {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown type",
    };
    let s = if ndim == 1 { "" } else { "s" };
    format!("{ty}, {ndim} dim{s}")
}

fn missing_files_message(dir: &Path, missing: &[String]) -> String {
    let list = missing
        .iter()
        .map(|m| format!("{m}[.gz]"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = if dir == Path::new(FASHION_MNIST_DIR) {
        "install them with: apt-get install dataset-fashion-mnist".to_string()
    } else {
        let all = MNIST_FILES
            .iter()
            .map(|m| format!("{m}[.gz]"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("put the four MNIST-format files {all} in {}", dir.display())
    };
    let note = if dir.is_dir() {
        ""
    } else {
        " (no such folder)"
    };
    format!("{}{note}: missing {list}; {hint}", dir.display())
}
