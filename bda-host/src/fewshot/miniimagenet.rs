//! The MiniImageNet reader (journal Table 4; Vinyals et al.'s subset of ImageNet with Ravi &
//! Larochelle's class split: 64 training, 16 validation and 20 test classes of 600 images).
//!
//! # Layouts
//!
//! ```text
//! DIR/images/*.jpg  +  DIR/train.csv, DIR/val.csv, DIR/test.csv    (Ravi & Larochelle)
//! DIR/train/<class>/*.jpg, DIR/val/<class>/*.jpg, DIR/test/<class>/*.jpg   (class folders)
//! ```
//!
//! A split file starts with the header `filename,label` and has one `file,label` row per
//! image; `file` is a plain file name under `images/` (no folders, no `..`), each listed once.
//! Classes are the labels in byte order; a class's images are in the file's row order. In
//! class folders, classes are the sorted folder names and images the sorted `*.jpg`,
//! `*.jpeg` and `*.png` files; names starting with `.` are skipped.
//!
//! # Pixels
//!
//! JPEG (and PNG, told apart by signature) decoded to RGB ([`super::image::decode_rgb`]),
//! each channel resized to [`SIDE`]×[`SIDE`] by area averaging (aspect ratio not kept, as
//! `torchvision.transforms.Resize((84, 84))`), values `v / 255` in `[0, 1]` without mean or
//! standard-deviation normalisation (batch norm follows the first convolution). Images are
//! held as `f32`: 83 KiB each, about 3.3 GB for the 38,400 training images.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::data::{
    FewshotDataError, FewshotDataset, decode_classes, file_name, images_in, io_err, sorted_entries,
};
use super::image::{decode_rgb, rgb_planes};

/// Side of the images after resizing: 84×84, the standard MiniImageNet size.
pub const SIDE: usize = 84;

/// A split of MiniImageNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Meta-training classes (`train.csv`, `train/`).
    Train,
    /// Validation classes (`val.csv`, `val/`).
    Val,
    /// Meta-test classes (`test.csv`, `test/`).
    Test,
}

impl Split {
    /// The three splits.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// `train`, `val` or `test`: the file stem and the folder name.
    pub const fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Which of the two layouts a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `images/` and one CSV per split.
    Csv,
    /// One folder per split, one folder per class.
    Folders,
}

impl Layout {
    /// `Csv` if `dir` holds any `<split>.csv`, `Folders` if it holds any `<split>/` folder;
    /// both is an error (which one was meant cannot be told).
    pub fn detect(dir: &Path) -> Result<Option<Layout>, FewshotDataError> {
        let csv = Split::ALL
            .iter()
            .find(|s| dir.join(format!("{}.csv", s.name())).is_file());
        let folder = Split::ALL.iter().find(|s| dir.join(s.name()).is_dir());
        match (csv, folder) {
            (Some(c), Some(f)) => Err(FewshotDataError::Ambiguous {
                path: dir.to_path_buf(),
                what: format!(
                    "both split files ({}.csv) and split folders ({}/): remove one",
                    c.name(),
                    f.name()
                ),
            }),
            (Some(_), None) => Ok(Some(Layout::Csv)),
            (None, Some(_)) => Ok(Some(Layout::Folders)),
            (None, None) => Ok(None),
        }
    }
}

/// One row of a split file: 1-based line number, image file name, label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line of the row in the file (the header is line 1).
    pub line: u64,
    /// File name under `images/`.
    pub filename: String,
    /// Class label.
    pub label: String,
}

/// Parses a split file held in memory (`path` is only for the messages): the header
/// `filename,label`, then one `file,label` row per line, both fields non-empty, the first a
/// plain file name listed once. A UTF-8 byte-order mark, CRLF line ends, blank lines, spaces
/// around fields and double quotes around a whole field are accepted; a quoted comma is
/// not (no file name or label of the format has one).
///
/// Hand-written rather than with the `csv` crate: its record positions count CRLF and
/// blank lines differently from an editor (measured with csv 1.4), and an error must name
/// the line a user would look at.
pub fn parse_split_csv(bytes: &[u8], path: &Path) -> Result<Vec<Row>, FewshotDataError> {
    let bad = |line: u64, problem: String| FewshotDataError::Csv {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        bad(line as u64, "not UTF-8 text".into())
    })?;
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty());
    let fields = |line: u64, l: &str| -> Result<(String, String), FewshotDataError> {
        let f: Vec<&str> = l.split(',').map(unquote).collect();
        match f[..] {
            [a, b] => Ok((a.to_string(), b.to_string())),
            _ => Err(bad(
                line,
                format!("{} fields, expected filename,label", f.len()),
            )),
        }
    };
    let Some((hline, header)) = lines.next() else {
        return Err(bad(
            1,
            "empty file, expected the header filename,label".into(),
        ));
    };
    match fields(hline, header) {
        Ok((a, b)) if a == "filename" && b == "label" => {}
        _ => {
            return Err(bad(
                hline,
                format!("header is {header:?}, expected filename,label"),
            ));
        }
    }
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (line, l) in lines {
        let (filename, label) = fields(line, l)?;
        for (v, what) in [(&filename, "filename"), (&label, "label")] {
            if v.is_empty() {
                return Err(bad(line, format!("empty {what}")));
            }
        }
        if filename.contains(['/', '\\']) || filename == ".." || filename == "." {
            return Err(bad(
                line,
                format!(
                    "filename {filename:?} must be a file name inside images/, without folders"
                ),
            ));
        }
        if !seen.insert(filename.clone()) {
            return Err(bad(line, format!("{filename} is listed twice")));
        }
        rows.push(Row {
            line,
            filename,
            label,
        });
    }
    if rows.is_empty() {
        return Err(bad(hline + 1, "no rows after the header".into()));
    }
    Ok(rows)
}

/// A field without surrounding spaces and one pair of surrounding double quotes.
fn unquote(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .map_or(f, str::trim)
}

/// What the split-file parser promises on any bytes (the `csv` fuzz target and the corpus
/// test): no panic; rows have non-empty, distinct plain file names and non-empty labels,
/// with increasing line numbers; an error is one non-empty line naming the file.
pub fn check_csv_invariants(bytes: &[u8]) {
    let path = Path::new("fuzz.csv");
    match parse_split_csv(bytes, path) {
        Ok(rows) => {
            assert!(!rows.is_empty());
            let mut seen = HashSet::new();
            let mut last = 0;
            for r in &rows {
                assert!(!r.filename.is_empty() && !r.label.is_empty());
                assert!(!r.filename.contains(['/', '\\']));
                assert!(seen.insert(&r.filename));
                assert!(
                    r.line > last,
                    "line numbers go back: {} after {last}",
                    r.line
                );
                last = r.line;
            }
        }
        Err(e) => {
            let m = e.to_string();
            super::image::assert_one_line(&m);
            assert!(m.starts_with("fuzz.csv: "), "{m}");
        }
    }
}

/// Reads one image file and returns its `3·SIDE²` values.
fn load_image(path: &Path) -> Result<Vec<f32>, FewshotDataError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let (w, h, rgb) = decode_rgb(&bytes).map_err(|message| FewshotDataError::Image {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(rgb_planes(w as usize, h as usize, &rgb, SIDE))
}

fn is_image(path: &Path) -> bool {
    path.extension().is_some_and(|e| {
        ["jpg", "jpeg", "png"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Loads one split of a MiniImageNet-layout folder (either layout, detected): every label
/// (or class folder) becomes a class of 3×84×84 images. Images are decoded in parallel; the
/// result does not depend on the thread count, and the first error in file order is the
/// one reported.
pub fn load_miniimagenet(dir: &Path, split: Split) -> Result<FewshotDataset, FewshotDataError> {
    if !dir.is_dir() {
        return Err(FewshotDataError::MissingRoot {
            path: dir.to_path_buf(),
        });
    }
    let layout = Layout::detect(dir)?.ok_or_else(|| FewshotDataError::UnknownLayout {
        path: dir.to_path_buf(),
    })?;
    let classes_of = |split| match layout {
        Layout::Csv => csv_classes(dir, split),
        Layout::Folders => folder_classes(dir, split),
    };
    let classes: Vec<(String, Vec<PathBuf>)> = classes_of(split)?;
    // A class in two splits leaks test classes into training (or validation).
    for other in Split::ALL.into_iter().filter(|&o| o != split) {
        let exists = match layout {
            Layout::Csv => dir.join(format!("{}.csv", other.name())).is_file(),
            Layout::Folders => dir.join(other.name()).is_dir(),
        };
        if !exists {
            continue;
        }
        let names: std::collections::BTreeSet<String> =
            classes_of(other)?.into_iter().map(|(n, _)| n).collect();
        if let Some((class, _)) = classes.iter().find(|(n, _)| names.contains(n)) {
            return Err(FewshotDataError::Ambiguous {
                path: dir.to_path_buf(),
                what: format!(
                    "class {class} is in both the {} and the {} split (a class belongs to one split)",
                    split.name(),
                    other.name()
                ),
            });
        }
    }
    let (out, read) = decode_classes(classes, load_image)?;
    Ok(FewshotDataset {
        classes: out,
        side: SIDE,
        channels: 3,
        files: read,
    })
}

/// `(label, image paths)` of a split file, labels in byte order, each checked to exist.
fn csv_classes(dir: &Path, split: Split) -> Result<Vec<(String, Vec<PathBuf>)>, FewshotDataError> {
    let csv = dir.join(format!("{}.csv", split.name()));
    if !csv.is_file() {
        return Err(FewshotDataError::Missing {
            path: csv,
            what: "split file (header filename,label)",
        });
    }
    let images = dir.join("images");
    if !images.is_dir() {
        return Err(FewshotDataError::Missing {
            path: images,
            what: "images folder named by the split files",
        });
    }
    let bytes = fs::read(&csv).map_err(|e| io_err(&csv, e))?;
    let mut classes: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for row in parse_split_csv(&bytes, &csv)? {
        let image = images.join(&row.filename);
        if !image.is_file() {
            return Err(FewshotDataError::MissingImage {
                csv,
                line: row.line,
                image,
            });
        }
        classes.entry(row.label).or_default().push(image);
    }
    Ok(classes.into_iter().collect())
}

/// `(class folder name, image paths)` of a split folder, both sorted.
fn folder_classes(
    dir: &Path,
    split: Split,
) -> Result<Vec<(String, Vec<PathBuf>)>, FewshotDataError> {
    let root = dir.join(split.name());
    if !root.is_dir() {
        return Err(FewshotDataError::Missing {
            path: root,
            what: "split folder (expected <split>/<class>/*.jpg)",
        });
    }
    let folders = sorted_entries(&root, true)?;
    if folders.is_empty() {
        return Err(FewshotDataError::EmptyTree { path: root });
    }
    let mut classes = Vec::with_capacity(folders.len());
    for folder in folders {
        let images = images_in(&folder, is_image, "class (.jpg, .jpeg or .png)")?;
        classes.push((file_name(&folder), images));
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Row>, String> {
        parse_split_csv(text.as_bytes(), Path::new("t.csv")).map_err(|e| e.to_string())
    }

    #[test]
    fn split_files_parse() {
        let rows =
            parse("\u{feff}filename,label\r\na.jpg,n01\r\n\r\n \"b 1.jpg\" , n02\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].filename.as_str()), (2, "a.jpg"));
        assert_eq!(
            (rows[1].filename.as_str(), rows[1].label.as_str()),
            ("b 1.jpg", "n02")
        );
        assert_eq!(rows[1].line, 4);
        let rows = parse("filename,label\na.jpg,n01\nb.jpg,n01").unwrap();
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn bad_split_files_name_the_line() {
        for (text, want) in [
            ("", "t.csv: line 1: empty file"),
            ("file,label\na.jpg,n01\n", "t.csv: line 1: header is"),
            ("filename,label\n", "t.csv: line 2: no rows"),
            (
                "filename,label\na.jpg,n01\nb.jpg\n",
                "t.csv: line 3: 1 fields",
            ),
            ("filename,label\na.jpg,n01,x\n", "t.csv: line 2: 3 fields"),
            ("filename,label\na.jpg,\n", "t.csv: line 2: empty label"),
            (
                "filename,label\n../a.jpg,n01\n",
                "t.csv: line 2: filename \"../a.jpg\"",
            ),
            (
                "filename,label\na.jpg,n01\na.jpg,n02\n",
                "t.csv: line 3: a.jpg is listed twice",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains('\n'));
        }
        let e = parse_split_csv(
            b"filename,label\na.jpg,n01\n\xff.jpg,n02\n",
            Path::new("t.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.csv: line 3: not UTF-8"), "{e}");
    }
}
