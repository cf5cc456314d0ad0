//! Few-shot data: the readers of the two dataset layouts ([`DataFormat`]: Omniglot here,
//! MiniImageNet in [`super::miniimagenet`]) and an N-way K-shot episode sampler (journal
//! §8.3). The pixel code both share is in [`super::image`].
//!
//! # Omniglot layout
//!
//! ```text
//! DIR/images_background/<alphabet>/<character>/*.png
//! DIR/images_evaluation/<alphabet>/<character>/*.png
//! ```
//!
//! Each character folder is one class. Directory entries are sorted by name (byte order),
//! names starting with `.` are skipped, files directly under a split or an alphabet folder
//! are ignored, and in a character folder only `*.png` files (any case) count.
//!
//! # Pixels
//!
//! PNGs are decoded with the `png` crate, normalised to 8-bit samples (`EXPAND | STRIP_16`:
//! 1/2/4-bit grey and palettes are expanded, 16-bit samples are cut to their high byte).
//! Colour is reduced to grey with the Rec. 601 luma weights, and alpha is composited over
//! white. Any size of at least 28×28 is accepted and resized to [`SIDE`]×[`SIDE`] by area
//! averaging (a box filter with fractional coverage at the cell borders, so 105 → 28, a
//! factor of 3.75, is exact). Values are **ink**, `1 − grey/255`, in `[0, 1]`: background
//! 0, stroke 1. Omniglot draws dark strokes on white; inverting makes the background zero,
//! as in MNIST and in the usual Omniglot pipelines, so that zero padding and weight decay
//! act on the background rather than on the strokes.
//!
//! # Classes
//!
//! With `rotations`, each character also yields its 90°, 180° and 270° (counter-clockwise)
//! rotations as three new classes (the standard protocol, 4× the classes). The four
//! rotations of a character are adjacent in [`FewshotDataset::classes`] and are named
//! `<alphabet>/<character>`, `…@rot090`, `…@rot180`, `…@rot270`.
//!
//! # Errors
//!
//! Every [`FewshotDataError`] displays as one line naming the path (or the flags) and the
//! problem, so a command line can print it as is.

use std::borrow::Borrow;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use bda_kernel::fewshot::Task;
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

pub use super::image::{MAX_PIXELS, decode_grey, resize_area, rotate90};

/// Side of the images after resizing: 28×28, as in the papers' Omniglot setting.
pub const SIDE: usize = 28;

/// The folder layouts `--data-dir` reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// `images_background/<alphabet>/<character>/*.png` and `images_evaluation/…`: grey,
    /// resized to 28×28.
    Omniglot,
    /// Ravi & Larochelle's `images/` + `train.csv`/`val.csv`/`test.csv`, or class folders
    /// `train/<class>/*.jpg`, `val/…`, `test/…`: RGB, resized to 84×84.
    Miniimagenet,
}

impl DataFormat {
    /// The layout of `dir`: Omniglot if it holds `images_background/` or
    /// `images_evaluation/`, MiniImageNet if it holds `train.csv` or a `train/` folder.
    pub fn detect(dir: &Path) -> Result<DataFormat, FewshotDataError> {
        if !dir.is_dir() {
            return Err(FewshotDataError::MissingRoot {
                path: dir.to_path_buf(),
            });
        }
        let omniglot = [Split::Background, Split::Evaluation]
            .iter()
            .any(|s| dir.join(s.folder()).is_dir());
        let mini = super::miniimagenet::Layout::detect(dir)?.is_some();
        match (omniglot, mini) {
            (true, true) => Err(FewshotDataError::Ambiguous {
                path: dir.to_path_buf(),
                what: "both the Omniglot layout (images_background/, images_evaluation/) and the MiniImageNet layout: give --format omniglot or --format miniimagenet".into(),
            }),
            (true, false) => Ok(DataFormat::Omniglot),
            (false, true) => Ok(DataFormat::Miniimagenet),
            (false, false) => Err(FewshotDataError::UnknownLayout {
                path: dir.to_path_buf(),
            }),
        }
    }

    /// `(channels, side)` of the images the reader produces.
    pub const fn image_shape(self) -> (usize, usize) {
        match self {
            DataFormat::Omniglot => (1, SIDE),
            DataFormat::Miniimagenet => (3, super::miniimagenet::SIDE),
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::Omniglot => "omniglot",
            DataFormat::Miniimagenet => "miniimagenet",
        })
    }
}

/// Which half of Omniglot to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Split {
    /// `images_background` (Omniglot: 30 alphabets, 964 characters; used for meta-training).
    Background,
    /// `images_evaluation` (Omniglot: 20 alphabets, 659 characters; used for meta-testing).
    Evaluation,
}

impl Split {
    /// The folder name of the split under the dataset root.
    pub const fn folder(self) -> &'static str {
        match self {
            Split::Background => "images_background",
            Split::Evaluation => "images_evaluation",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Background => "background",
            Split::Evaluation => "evaluation",
        })
    }
}

/// The images of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassImages {
    /// Omniglot: `<alphabet>/<character>`, with `@rot090` etc. for rotated copies;
    /// MiniImageNet: the label (a WordNet id such as `n01532829`).
    pub name: String,
    /// `n × channels·side²` values in `[0, 1]`, image after image, each channel-major and
    /// row-major (Omniglot: ink; MiniImageNet: RGB intensities).
    pub images: Vec<f32>,
    /// Number of images.
    pub n: usize,
}

impl ClassImages {
    /// Image `i` (`channels·side²` values), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let d = self.images.len().checked_div(self.n)?;
        (i < self.n).then(|| &self.images[i * d..(i + 1) * d])
    }
}

/// A few-shot dataset: classes of equally sized square images.
#[derive(Debug, Clone, PartialEq)]
pub struct FewshotDataset {
    /// The classes, in the order of the sorted folder names or labels (rotations adjacent).
    pub classes: Vec<ClassImages>,
    /// Image side (28 for Omniglot, 84 for MiniImageNet).
    pub side: usize,
    /// Channels per image (1 for Omniglot, 3 for MiniImageNet).
    pub channels: usize,
    /// The files read, in reading order (what a report's data hash covers).
    pub files: Vec<PathBuf>,
}

impl FewshotDataset {
    /// Total number of images over all classes.
    pub fn num_images(&self) -> usize {
        self.classes.iter().map(|c| c.n).sum()
    }

    /// Values per image (`channels · side²`).
    pub fn image_len(&self) -> usize {
        self.channels * self.side * self.side
    }
}

/// What went wrong while loading a few-shot dataset or setting up episodes. Each variant
/// displays as a single line naming the path or the flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FewshotDataError {
    /// The dataset root does not exist or is not a folder.
    #[error("{}: no such folder (expected an Omniglot-layout dataset root)", path.display())]
    MissingRoot { path: PathBuf },
    /// The split folder is missing under the root.
    #[error(
        "{}: missing {split} split folder (expected {}/<alphabet>/<character>/*.png)",
        path.display(),
        split.folder()
    )]
    MissingSplit { path: PathBuf, split: Split },
    /// The folder is in neither layout.
    #[error(
        "{}: unknown dataset layout (expected images_background/ and images_evaluation/ for Omniglot, or images/ + train.csv/val.csv/test.csv or train/ val/ test/ class folders for MiniImageNet)",
        path.display()
    )]
    UnknownLayout { path: PathBuf },
    /// The folder can be read two ways, or its splits overlap.
    #[error("{}: {what}", path.display())]
    Ambiguous { path: PathBuf, what: String },
    /// A file or folder of the layout is missing.
    #[error("{}: missing {what}", path.display())]
    Missing { path: PathBuf, what: &'static str },
    /// A split file of the MiniImageNet layout is malformed.
    #[error("{}: line {line}: {problem}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        problem: String,
    },
    /// A split file names an image that does not exist.
    #[error("{}: line {line}: no such image {}", csv.display(), image.display())]
    MissingImage {
        csv: PathBuf,
        line: u64,
        image: PathBuf,
    },
    /// A file is not an image the decoders can read (JPEG or PNG).
    #[error("{}: undecodable image: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A folder or file could not be read.
    #[error("{}: cannot read: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The split folder holds no alphabet folders.
    #[error("{}: empty tree, no <alphabet>/<character>/*.png folders", path.display())]
    EmptyTree { path: PathBuf },
    /// An alphabet folder holds no character folders.
    #[error("{}: alphabet folder without character folders", path.display())]
    EmptyAlphabet { path: PathBuf },
    /// A character folder holds no PNG files.
    #[error("{}: {what} folder without image files", path.display())]
    NoImages { path: PathBuf, what: &'static str },
    /// A file is not a PNG the decoder can read (truncated, corrupt, not a PNG).
    #[error("{}: unreadable PNG: {message}", path.display())]
    Png { path: PathBuf, message: String },
    /// An image smaller than the output side (zero-sized included).
    #[error(
        "{}: image is {width}×{height} pixels, need at least {min}×{min}",
        path.display()
    )]
    ImageSize {
        path: PathBuf,
        width: u32,
        height: u32,
        min: usize,
    },
    /// A flag of the episode shape is out of range.
    #[error("--{flag} {value}: {problem}")]
    BadFlag {
        flag: &'static str,
        value: usize,
        problem: &'static str,
    },
    /// Fewer classes than `--ways`.
    #[error("--ways {ways} needs {ways} classes, the dataset has {classes}")]
    TooFewClasses { ways: usize, classes: usize },
    /// A class with fewer images than `--shots` + `--queries`.
    #[error(
        "--shots {shots} + --queries {queries} need {} images per class, class {class} has {n}",
        shots + queries
    )]
    TooFewSamples {
        class: String,
        n: usize,
        shots: usize,
        queries: usize,
    },
}

/// Every few-shot data error is bad input for the command line (exit code 2), printed as
/// its one line.
impl From<FewshotDataError> for crate::error::CliError {
    fn from(e: FewshotDataError) -> Self {
        crate::error::CliError::input(e.to_string())
    }
}

pub(super) fn io_err(path: &Path, e: std::io::Error) -> FewshotDataError {
    FewshotDataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Visible entries of a folder, sorted by file name. `want_dirs` selects folders (following
/// symbolic links) or plain files.
pub(super) fn sorted_entries(
    dir: &Path,
    want_dirs: bool,
) -> Result<Vec<PathBuf>, FewshotDataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().first() == Some(&b'.') {
            continue;
        }
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(|e| io_err(&path, e))?;
        if meta.is_dir() == want_dirs {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// Decodes every class's files with `load`, in parallel: the classes in the same order,
/// and the files read in reading order (what a report's data hash covers). The result does
/// not depend on the thread count, and the first error in file order is the one returned.
pub(super) fn decode_classes(
    classes: Vec<(String, Vec<PathBuf>)>,
    load: fn(&Path) -> Result<Vec<f32>, FewshotDataError>,
) -> Result<(Vec<ClassImages>, Vec<PathBuf>), FewshotDataError> {
    let files: Vec<PathBuf> = classes
        .iter()
        .flat_map(|(_, p)| p.iter().cloned())
        .collect();
    let decoded: Vec<Result<Vec<f32>, FewshotDataError>> =
        files.par_iter().map(|p| load(p)).collect();
    let mut decoded = decoded.into_iter();
    let mut out = Vec::with_capacity(classes.len());
    for (name, paths) in classes {
        let n = paths.len();
        let mut images = Vec::new();
        for _ in 0..n {
            // `decoded` has exactly one entry per file.
            images.extend(decoded.next().expect("one result per file")?);
        }
        out.push(ClassImages { name, images, n });
    }
    Ok((out, files))
}

/// The files of a class folder that `keep` accepts, sorted; none is an error naming the
/// folder as `what`.
pub(super) fn images_in(
    folder: &Path,
    keep: fn(&Path) -> bool,
    what: &'static str,
) -> Result<Vec<PathBuf>, FewshotDataError> {
    let files: Vec<PathBuf> = sorted_entries(folder, false)?
        .into_iter()
        .filter(|p| keep(p))
        .collect();
    if files.is_empty() {
        return Err(FewshotDataError::NoImages {
            path: folder.to_path_buf(),
            what,
        });
    }
    Ok(files)
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads one PNG file and returns its `SIDE²` ink values.
fn load_image(path: &Path) -> Result<Vec<f32>, FewshotDataError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let (w, h, grey) = decode_grey(&bytes).map_err(|message| FewshotDataError::Png {
        path: path.to_path_buf(),
        message,
    })?;
    if (w as usize) < SIDE || (h as usize) < SIDE {
        return Err(FewshotDataError::ImageSize {
            path: path.to_path_buf(),
            width: w,
            height: h,
            min: SIDE,
        });
    }
    let ink: Vec<f32> = grey.iter().map(|&g| 1.0 - f32::from(g) / 255.0).collect();
    Ok(resize_area(&ink, w as usize, h as usize, SIDE))
}

/// Loads one split of an Omniglot-layout tree: every character folder becomes a class of
/// 28×28 ink images in `[0, 1]`; with `rotations`, each character also gives three rotated
/// classes. PNGs are decoded in parallel; the result does not depend on the thread count.
pub fn load_omniglot(
    dir: &Path,
    split: Split,
    rotations: bool,
) -> Result<FewshotDataset, FewshotDataError> {
    if !dir.is_dir() {
        return Err(FewshotDataError::MissingRoot {
            path: dir.to_path_buf(),
        });
    }
    let root = dir.join(split.folder());
    if !root.is_dir() {
        return Err(FewshotDataError::MissingSplit { path: root, split });
    }
    // (class name, image paths), in sorted order.
    let mut chars: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let alphabets = sorted_entries(&root, true)?;
    if alphabets.is_empty() {
        return Err(FewshotDataError::EmptyTree { path: root });
    }
    for alphabet in &alphabets {
        let characters = sorted_entries(alphabet, true)?;
        if characters.is_empty() {
            return Err(FewshotDataError::EmptyAlphabet {
                path: alphabet.clone(),
            });
        }
        for character in characters {
            let pngs = images_in(&character, is_png, "character (.png)")?;
            let name = format!("{}/{}", file_name(alphabet), file_name(&character));
            chars.push((name, pngs));
        }
    }
    let (decoded, read) = decode_classes(chars, load_image)?;
    let per_char = if rotations { 4 } else { 1 };
    let mut classes = Vec::with_capacity(decoded.len() * per_char);
    for ClassImages { name, images, n } in decoded {
        if rotations {
            let rotate = |imgs: &[f32]| -> Vec<f32> {
                imgs.chunks_exact(SIDE * SIDE)
                    .flat_map(|img| rotate90(img, SIDE))
                    .collect()
            };
            let r090 = rotate(&images);
            let r180 = rotate(&r090);
            let r270 = rotate(&r180);
            for (suffix, images) in [
                ("", images),
                ("@rot090", r090),
                ("@rot180", r180),
                ("@rot270", r270),
            ] {
                classes.push(ClassImages {
                    name: format!("{name}{suffix}"),
                    images,
                    n,
                });
            }
        } else {
            classes.push(ClassImages { name, images, n });
        }
    }
    Ok(FewshotDataset {
        classes,
        side: SIDE,
        channels: 1,
        files: read,
    })
}

/// Random images in `[0, 1)` with the labels of `ways` classes of `shots` support and
/// `queries` query images (the peer's timing inputs). A [`Task`] is class-major (the images
/// of label 0 first, then label 1, …: the peer's `arange(ways).repeat_interleave(shots)`).
pub fn synthetic_task(
    ways: usize,
    shots: usize,
    queries: usize,
    pixels: usize,
    rng: &mut impl Rng,
) -> Task {
    let mut img = |n: usize| -> Vec<f32> { (0..n * pixels).map(|_| rng.random()).collect() };
    let (support, query) = (img(ways * shots), img(ways * queries));
    Task {
        ways,
        support,
        support_labels: class_major(ways, shots),
        query,
        query_labels: class_major(ways, queries),
    }
}

/// `per` labels of each of `ways` classes, class by class.
fn class_major(ways: usize, per: usize) -> Vec<u8> {
    (0..ways)
        .flat_map(|k| std::iter::repeat_n(k as u8, per))
        .collect()
}

/// One episode drawn from a dataset: the task, and the dataset class behind each label.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// The task (label `k` is the class `classes[k]` of the dataset).
    pub task: Task,
    /// Dataset class index of each label (`ways` entries, distinct).
    pub classes: Vec<usize>,
}

/// Draws episodes from a dataset: `ways` distinct classes, then `shots + queries` distinct
/// images of each, the first `shots` for support and the rest for query.
///
/// `D` is the dataset or a reference to it: a sampler checked once can own its data.
#[derive(Debug, Clone)]
pub struct EpisodeSampler<D = &'static FewshotDataset> {
    dataset: D,
    ways: usize,
    shots: usize,
    queries: usize,
}

impl<D: Borrow<FewshotDataset>> EpisodeSampler<D> {
    /// Checks the episode shape against the dataset: `1 ≤ ways ≤ 256` (labels are `u8`)
    /// and at most the number of classes, `shots ≥ 1`, `queries ≥ 1`, and every class
    /// holds at least `shots + queries` images.
    pub fn new(
        data: D,
        ways: usize,
        shots: usize,
        queries: usize,
    ) -> Result<Self, FewshotDataError> {
        let dataset = data.borrow();
        let bad = |flag, value, problem| FewshotDataError::BadFlag {
            flag,
            value,
            problem,
        };
        if ways == 0 {
            return Err(bad("ways", ways, "need at least 1 class per episode"));
        }
        if ways > 256 {
            return Err(bad("ways", ways, "labels are u8, at most 256 ways"));
        }
        if shots == 0 {
            return Err(bad(
                "shots",
                shots,
                "need at least 1 support image per class",
            ));
        }
        if queries == 0 {
            return Err(bad(
                "queries",
                queries,
                "need at least 1 query image per class",
            ));
        }
        if dataset.classes.len() < ways {
            return Err(FewshotDataError::TooFewClasses {
                ways,
                classes: dataset.classes.len(),
            });
        }
        let need = shots.saturating_add(queries);
        if let Some(c) = dataset
            .classes
            .iter()
            .filter(|c| c.n < need)
            .min_by_key(|c| c.n)
        {
            return Err(FewshotDataError::TooFewSamples {
                class: c.name.clone(),
                n: c.n,
                shots,
                queries,
            });
        }
        Ok(EpisodeSampler {
            dataset: data,
            ways,
            shots,
            queries,
        })
    }

    /// The dataset episodes are drawn from.
    pub fn dataset(&self) -> &FewshotDataset {
        self.dataset.borrow()
    }

    /// Draws one episode. Deterministic for a given generator state (use `ChaCha8Rng`
    /// seeded from the run's seed).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Episode {
        let (ways, shots, queries) = (self.ways, self.shots, self.queries);
        let dataset = self.dataset();
        let d = dataset.image_len();
        let mut classes = rand::seq::index::sample(rng, dataset.classes.len(), ways).into_vec();
        // The label order is random: shuffle explicitly rather than rely on the order
        // `index::sample` happens to return.
        classes.shuffle(rng);
        let mut support = Vec::with_capacity(ways * shots * d);
        let mut query = Vec::with_capacity(ways * queries * d);
        for &c in &classes {
            let class = &dataset.classes[c];
            let picks = rand::seq::index::sample(rng, class.n, shots + queries).into_vec();
            for (j, &i) in picks.iter().enumerate() {
                let img = &class.images[i * d..(i + 1) * d];
                if j < shots {
                    support.extend_from_slice(img);
                } else {
                    query.extend_from_slice(img);
                }
            }
        }
        let task = Task {
            ways,
            support,
            support_labels: class_major(ways, shots),
            query,
            query_labels: class_major(ways, queries),
        };
        Episode { task, classes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync::<FewshotDataset>();
        assert_send_sync::<Episode>();
        assert_send_sync::<EpisodeSampler>();
        assert_send_sync::<EpisodeSampler<FewshotDataset>>();
        assert_send_sync::<FewshotDataError>();
    }
}
