//! Few-shot data: a reader for the Omniglot folder layout and an N-way K-shot episode
//! sampler (journal §8.3).
//!
//! # Layout
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

use std::fmt;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

/// Side of the images after resizing: 28×28, as in the papers' Omniglot setting.
pub const SIDE: usize = 28;
/// Largest image accepted, in pixels (4096²; Omniglot's are 105²). Checked from the PNG
/// header before any pixel buffer is allocated.
pub const MAX_PIXELS: u64 = 1 << 24;

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
    /// `<alphabet>/<character>`, with `@rot090` etc. for rotated copies.
    pub name: String,
    /// `n × side²` ink values in `[0, 1]`, image after image, each row-major.
    pub images: Vec<f32>,
    /// Number of images.
    pub n: usize,
}

impl ClassImages {
    /// Image `i` (`side²` values), or `None` past the end.
    pub fn image(&self, i: usize, side: usize) -> Option<&[f32]> {
        let d = side * side;
        (i < self.n).then(|| &self.images[i * d..(i + 1) * d])
    }
}

/// A few-shot dataset: classes of equally sized square images.
#[derive(Debug, Clone, PartialEq)]
pub struct FewshotDataset {
    /// The classes, in the order of the sorted folder names (rotations adjacent).
    pub classes: Vec<ClassImages>,
    /// Image side (28).
    pub side: usize,
    /// The files read, in reading order (what a report's data hash covers).
    pub files: Vec<PathBuf>,
}

impl FewshotDataset {
    /// Total number of images over all classes.
    pub fn num_images(&self) -> usize {
        self.classes.iter().map(|c| c.n).sum()
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
    #[error("{}: character folder without .png files", path.display())]
    NoImages { path: PathBuf },
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

fn io_err(path: &Path, e: std::io::Error) -> FewshotDataError {
    FewshotDataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Visible entries of a folder, sorted by file name. `want_dirs` selects folders (following
/// symbolic links) or plain files.
fn sorted_entries(dir: &Path, want_dirs: bool) -> Result<Vec<PathBuf>, FewshotDataError> {
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

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Decodes a PNG held in memory to grey levels (0 = black, 255 = white): returns
/// `(width, height, grey)`. The error is the decoder's message, without the path.
pub fn decode_grey(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    // Checked before allocating: a 40-byte file can claim 2^31 × 2^31 pixels.
    let (w, h) = reader.info().size();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "{w}×{h} pixels is over the {MAX_PIXELS}-pixel limit"
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (info.width as usize, info.height as usize);
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "unexpected bit depth {:?} after expansion",
            info.bit_depth
        ));
    }
    let channels = info.color_type.samples();
    let mut grey = Vec::with_capacity(w * h);
    let rows = buf.chunks(info.line_size).take(h);
    if info.color_type == png::ColorType::Grayscale {
        // The common case (Omniglot): the bytes are the grey levels.
        for row in rows {
            grey.extend_from_slice(&row[..w]);
        }
        return Ok((info.width, info.height, grey));
    }
    for row in rows {
        for px in row.chunks_exact(channels).take(w) {
            let (luma, alpha) = match *px {
                [g, a] => (u32::from(g), u32::from(a)),
                [r, g, b] => (luma601(r, g, b), 255),
                [r, g, b, a] => (luma601(r, g, b), u32::from(a)),
                _ => return Err(format!("unexpected colour type {:?}", info.color_type)),
            };
            // Composite over white, rounded: (a·l + (255 − a)·255) / 255.
            grey.push(((alpha * luma + (255 - alpha) * 255 + 127) / 255) as u8);
        }
    }
    Ok((info.width, info.height, grey))
}

/// Rec. 601 luma, rounded: `(299 r + 587 g + 114 b) / 1000`.
fn luma601(r: u8, g: u8, b: u8) -> u32 {
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000
}

/// Area-averaging weights from `len` source pixels to `side` cells: for each cell, the
/// first source index and the fractions of each source pixel it covers, divided by the
/// cell width (so each cell's weights sum to 1).
fn area_weights(len: usize, side: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / side as f64;
    (0..side)
        .map(|i| {
            let (lo, hi) = (i as f64 * scale, (i + 1) as f64 * scale);
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(len);
            let w = (first..last)
                .map(|p| {
                    let overlap = (hi.min(p as f64 + 1.0) - lo.max(p as f64)).max(0.0);
                    (overlap / scale) as f32
                })
                .collect();
            (first, w)
        })
        .collect()
}

/// Resizes a `width × height` image (row-major) to `side × side` by area averaging: each
/// output cell is the mean of the source over the cell's rectangle, source pixels cut by a
/// cell border counting with the fraction inside. Needs `width, height ≥ 1`.
pub fn resize_area(src: &[f32], width: usize, height: usize, side: usize) -> Vec<f32> {
    assert_eq!(src.len(), width * height, "resize_area: buffer size");
    let wx = area_weights(width, side);
    let wy = area_weights(height, side);
    // Horizontal pass: height × side.
    let mut tmp = vec![0f32; height * side];
    for (row, out) in src.chunks_exact(width).zip(tmp.chunks_exact_mut(side)) {
        for (o, (first, w)) in out.iter_mut().zip(&wx) {
            *o = w.iter().zip(&row[*first..]).map(|(a, b)| a * b).sum();
        }
    }
    // Vertical pass: side × side.
    let mut out = vec![0f32; side * side];
    for (orow, (first, w)) in out.chunks_exact_mut(side).zip(&wy) {
        for (k, wk) in w.iter().enumerate() {
            let trow = &tmp[(first + k) * side..(first + k + 1) * side];
            for (o, t) in orow.iter_mut().zip(trow) {
                *o += wk * t;
            }
        }
    }
    for v in &mut out {
        *v = v.clamp(0.0, 1.0);
    }
    out
}

/// Rotates a `side × side` image by 90° counter-clockwise.
pub fn rotate90(src: &[f32], side: usize) -> Vec<f32> {
    let mut out = vec![0f32; side * side];
    for r in 0..side {
        for c in 0..side {
            out[r * side + c] = src[c * side + (side - 1 - r)];
        }
    }
    out
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
            let pngs: Vec<PathBuf> = sorted_entries(&character, false)?
                .into_iter()
                .filter(|p| is_png(p))
                .collect();
            if pngs.is_empty() {
                return Err(FewshotDataError::NoImages { path: character });
            }
            let name = format!("{}/{}", file_name(alphabet), file_name(&character));
            chars.push((name, pngs));
        }
    }
    let files: Vec<&Path> = chars
        .iter()
        .flat_map(|(_, p)| p.iter().map(PathBuf::as_path))
        .collect();
    let decoded: Vec<Result<Vec<f32>, FewshotDataError>> =
        files.par_iter().map(|p| load_image(p)).collect();
    let read: Vec<PathBuf> = files.iter().map(|p| p.to_path_buf()).collect();
    let mut decoded = decoded.into_iter();
    let per_char = if rotations { 4 } else { 1 };
    let mut classes = Vec::with_capacity(chars.len() * per_char);
    for (name, pngs) in chars {
        let n = pngs.len();
        let mut images = Vec::with_capacity(n * SIDE * SIDE);
        for _ in 0..n {
            // `decoded` has exactly one entry per file; the first error in file order wins.
            images.extend(decoded.next().expect("one result per file")?);
        }
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
        files: read,
    })
}

/// One N-way K-shot task: images (`side²` floats each, row-major) and labels in `0..ways`,
/// support and query both class-major (the images of label 0 first, then label 1, …: the
/// peer's `arange(ways).repeat_interleave(shots)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Classes (N).
    pub ways: usize,
    /// Support images, `n_s × side²`.
    pub support: Vec<f32>,
    /// Support labels (`< ways`).
    pub support_labels: Vec<u8>,
    /// Query images, `n_q × side²`.
    pub query: Vec<f32>,
    /// Query labels.
    pub query_labels: Vec<u8>,
}

impl Task {
    /// Random images in `[0, 1)` with the labels of `ways` classes of `shots` support and
    /// `queries` query images (the peer's timing inputs).
    pub fn synthetic(
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
#[derive(Debug, Clone)]
pub struct EpisodeSampler<'a> {
    dataset: &'a FewshotDataset,
    ways: usize,
    shots: usize,
    queries: usize,
}

impl<'a> EpisodeSampler<'a> {
    /// Checks the episode shape against the dataset: `1 ≤ ways ≤ 256` (labels are `u8`)
    /// and at most the number of classes, `shots ≥ 1`, `queries ≥ 1`, and every class
    /// holds at least `shots + queries` images.
    pub fn new(
        dataset: &'a FewshotDataset,
        ways: usize,
        shots: usize,
        queries: usize,
    ) -> Result<Self, FewshotDataError> {
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
            dataset,
            ways,
            shots,
            queries,
        })
    }

    /// The dataset episodes are drawn from.
    pub fn dataset(&self) -> &'a FewshotDataset {
        self.dataset
    }

    /// Draws one episode. Deterministic for a given generator state (use `ChaCha8Rng`
    /// seeded from the run's seed).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Episode {
        let (ways, shots, queries) = (self.ways, self.shots, self.queries);
        let side = self.dataset.side;
        let d = side * side;
        let mut classes =
            rand::seq::index::sample(rng, self.dataset.classes.len(), ways).into_vec();
        // The label order is random: shuffle explicitly rather than rely on the order
        // `index::sample` happens to return.
        classes.shuffle(rng);
        let mut support = Vec::with_capacity(ways * shots * d);
        let mut query = Vec::with_capacity(ways * queries * d);
        for &c in &classes {
            let class = &self.dataset.classes[c];
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

    #[test]
    fn area_resize_is_exact_on_105() {
        // A constant image stays constant; the mean is preserved.
        let src = vec![0.25f32; 105 * 105];
        let out = resize_area(&src, 105, 105, 28);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let src: Vec<f32> = (0..105 * 105)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        let out = resize_area(&src, 105, 105, 28);
        let m_in = src.iter().sum::<f32>() / src.len() as f32;
        let m_out = out.iter().sum::<f32>() / out.len() as f32;
        assert!((m_in - m_out).abs() < 1e-5, "{m_in} {m_out}");
        // Weights of each cell sum to 1 and cover 3.75 pixels.
        for (_, w) in area_weights(105, 28) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Identity at equal size.
        let out = resize_area(&src[..28 * 28], 28, 28, 28);
        assert_eq!(out, src[..28 * 28].to_vec());
    }

    #[test]
    fn rotation_four_times_is_identity() {
        let img: Vec<f32> = (0..SIDE * SIDE).map(|i| i as f32).collect();
        let r = rotate90(
            &rotate90(&rotate90(&rotate90(&img, SIDE), SIDE), SIDE),
            SIDE,
        );
        assert_eq!(r, img);
        // Counter-clockwise: the top-right corner goes to the top-left.
        let r1 = rotate90(&img, SIDE);
        assert_eq!(r1[0], img[SIDE - 1]);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync::<FewshotDataset>();
        assert_send_sync::<Episode>();
        assert_send_sync::<EpisodeSampler<'static>>();
        assert_send_sync::<FewshotDataError>();
    }
}
