//! Reader for the IDX format of MNIST and Fashion-MNIST (idx3 u8 images, idx1 u8 labels),
//! plain or gzip-compressed.
//!
//! The parsers ([`parse_images`], [`parse_labels`]) are pure functions over a byte buffer
//! so that they can be fuzzed without touching the file system; the readers
//! ([`read_images`], [`read_labels`]) add the file, gzip detection and the path in the
//! error. Nothing here panics on any input: every header field is read with bounds-checked
//! slicing, every size is computed with checked arithmetic, and sizes are checked against
//! the buffer and against [`MAX_PAYLOAD_BYTES`] before anything is allocated.

use std::cmp::Ordering;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::{DataError, IdxError, IdxKind, PayloadSize};

/// Magic number of an idx3 file of unsigned bytes (0x08 = u8, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an idx1 file of unsigned bytes (0x08 = u8, 1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest payload (pixel or label bytes) we accept: 1 GiB. The full MNIST training set is
/// 47 MB, so anything near this is a corrupt header or the wrong file; refusing it early
/// keeps a 16-byte file from making us allocate or read gigabytes.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 30;
/// Largest file (after gunzip) we read: the payload limit plus the largest header.
pub const MAX_FILE_BYTES: u64 = MAX_PAYLOAD_BYTES + 16;
/// Worst-case expansion of deflate (about 1032:1), used to cap the capacity hint taken from
/// the gzip trailer so that a lying trailer cannot make us reserve a gigabyte for a few
/// kilobytes of input.
const MAX_DEFLATE_RATIO: usize = 1032;

/// A set of `n` greyscale images of `rows × cols` pixels, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// `n * rows * cols` bytes: image `i` is `pixels[i*rows*cols..(i+1)*rows*cols]`.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels per image.
    pub fn dim(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }

    /// Image `i`, or `None` past the end. Checks `i < n` itself rather than relying on the
    /// slice bounds, which would accept any `i` for zero-pixel images (found by fuzzing).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n {
            return None;
        }
        let d = self.dim();
        self.pixels
            .get(i.checked_mul(d)?..i.checked_add(1)?.checked_mul(d)?)
    }
}

/// A parsed idx3 header with its pixels still borrowed from the file buffer, so that the
/// dataset loader can convert straight to `f32` without an intermediate copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImagesView<'a> {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: &'a [u8],
}

/// Big-endian `u32` at `at`, or `None` if the buffer is too short.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Checks the magic number and the header length; returns the payload after the header.
fn check_header(bytes: &[u8], kind: IdxKind) -> Result<&[u8], IdxError> {
    let too_short = IdxError::TooShort {
        kind,
        len: bytes.len(),
    };
    // Magic first, so that a short file of the wrong kind says "bad magic", which is the
    // more useful message.
    let magic = be_u32(bytes, 0).ok_or(too_short.clone())?;
    if magic != kind.magic() {
        return Err(IdxError::BadMagic { kind, found: magic });
    }
    bytes.get(kind.header_len()..).ok_or(too_short)
}

/// Compares the payload length with what the header promises.
fn check_len(
    kind: IdxKind,
    (n, rows, cols): (u32, u32, u32),
    expected: u64,
    actual: usize,
) -> Result<(), IdxError> {
    // usize -> u64 never loses bits on the platforms Rust supports.
    let actual = actual as u64;
    let size = || PayloadSize {
        kind,
        n,
        rows,
        cols,
        expected,
        actual,
    };
    match actual.cmp(&expected) {
        Ordering::Less => Err(IdxError::Truncated(size())),
        Ordering::Greater => Err(IdxError::TrailingBytes(size())),
        Ordering::Equal => Ok(()),
    }
}

pub(crate) fn parse_images_view(bytes: &[u8]) -> Result<ImagesView<'_>, IdxError> {
    let kind = IdxKind::Images;
    let payload = check_header(bytes, kind)?;
    // check_header guaranteed 16 bytes, but stay panic-free without relying on it.
    let dim = |at| {
        be_u32(bytes, at).ok_or(IdxError::TooShort {
            kind,
            len: bytes.len(),
        })
    };
    let (n, rows, cols) = (dim(4)?, dim(8)?, dim(12)?);
    let too_large = IdxError::TooLarge {
        kind,
        n,
        rows,
        cols,
    };
    // u32 * u32 fits in u64; the third factor can overflow, hence checked_mul.
    let expected = u64::from(n)
        .checked_mul(u64::from(rows))
        .and_then(|x| x.checked_mul(u64::from(cols)))
        .filter(|&x| x <= MAX_PAYLOAD_BYTES)
        .ok_or(too_large.clone())?;
    check_len(kind, (n, rows, cols), expected, payload.len())?;
    let to_usize = |x: u32| usize::try_from(x).map_err(|_| too_large.clone());
    Ok(ImagesView {
        n: to_usize(n)?,
        rows: to_usize(rows)?,
        cols: to_usize(cols)?,
        pixels: payload,
    })
}

pub(crate) fn parse_labels_view(bytes: &[u8]) -> Result<&[u8], IdxError> {
    let kind = IdxKind::Labels;
    let payload = check_header(bytes, kind)?;
    let n = be_u32(bytes, 4).ok_or(IdxError::TooShort {
        kind,
        len: bytes.len(),
    })?;
    let expected = u64::from(n);
    if expected > MAX_PAYLOAD_BYTES {
        return Err(IdxError::TooLarge {
            kind,
            n,
            rows: 1,
            cols: 1,
        });
    }
    check_len(kind, (n, 1, 1), expected, payload.len())?;
    Ok(payload)
}

/// Parses an uncompressed idx3 file of unsigned-byte images.
///
/// Checks the magic number (`0x00000803`), that the header fits within
/// [`MAX_PAYLOAD_BYTES`], and that exactly `n * rows * cols` bytes follow the 16-byte
/// header (fewer: [`IdxError::Truncated`]; more: [`IdxError::TrailingBytes`]). Any image
/// size is accepted.
pub fn parse_images(bytes: &[u8]) -> Result<Images, IdxError> {
    let v = parse_images_view(bytes)?;
    Ok(Images {
        n: v.n,
        rows: v.rows,
        cols: v.cols,
        pixels: v.pixels.to_vec(),
    })
}

/// Parses an uncompressed idx1 file of unsigned-byte class labels.
///
/// Checks the magic number (`0x00000801`) and that exactly `n` bytes follow the 8-byte
/// header. A label is a class index (any byte): the classes of a dataset are
/// `0..=max label` ([`super::load_mnist_dir`]).
pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u8>, IdxError> {
    parse_labels_view(bytes).map(<[u8]>::to_vec)
}

/// Whether the buffer starts with the gzip magic bytes `1f 8b`. The loader decides by
/// content, not by file name, so a `.gz` renamed to the plain name (or the other way round)
/// still loads.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses a gzip buffer (one or more members, as `cat a.gz b.gz` produces).
///
/// The output is capped at [`MAX_FILE_BYTES`] so that a gzip bomb fails with
/// [`IdxError::GzipTooLarge`] instead of exhausting memory. The output vector is sized from
/// the gzip trailer's length field (capped, since it can lie) so that the 47 MB training
/// images decompress without repeated reallocation.
pub fn gunzip(gz: &[u8]) -> Result<Vec<u8>, IdxError> {
    let trailer = gz
        .len()
        .checked_sub(4)
        .and_then(|at| gz.get(at..))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes);
    let cap = usize::try_from(trailer)
        .unwrap_or(usize::MAX)
        .min(gz.len().saturating_mul(MAX_DEFLATE_RATIO))
        .min(usize::try_from(MAX_FILE_BYTES + 1).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(cap);
    MultiGzDecoder::new(gz)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| IdxError::Gzip { msg: e.to_string() })?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(IdxError::GzipTooLarge {
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(out)
}

/// Turns the raw bytes of a file into the bytes of the IDX file they hold: gunzipped if they
/// start with the gzip magic, unchanged (no copy) otherwise. This is the single entry point
/// the file readers use, and the one the fuzz target drives.
pub fn decode_idx_bytes(raw: Vec<u8>) -> Result<Vec<u8>, IdxError> {
    if is_gzip(&raw) { gunzip(&raw) } else { Ok(raw) }
}

/// Reads a whole file (at most [`MAX_FILE_BYTES`] plus one, so that a huge or endless file
/// is not read to the end) and decodes it with [`decode_idx_bytes`].
pub fn read_idx_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    };
    let file = File::open(path).map_err(io)?;
    let size_hint = file
        .metadata()
        .map_or(0, |m| m.len())
        .min(MAX_FILE_BYTES + 1);
    let mut raw = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    // A plain file this large is rejected by the parser anyway (too large or trailing
    // bytes); a compressed one is at most a few bytes per kilobyte larger than its
    // content, so it could not hold a valid file either.
    decode_idx_bytes(raw).map_err(|err| DataError::Idx {
        path: path.to_path_buf(),
        err,
    })
}

/// Reads an idx3 images file, plain or gzip (detected by content).
pub fn read_images(path: &Path) -> Result<Images, DataError> {
    let mut bytes = read_idx_file(path)?;
    let v = parse_images_view(&bytes).map_err(|err| DataError::Idx {
        path: path.to_path_buf(),
        err,
    })?;
    let (n, rows, cols) = (v.n, v.rows, v.cols);
    // Reuse the file buffer: shifting out the header costs one memmove, where copying the
    // payload would cost a second 47 MB allocation for the MNIST training images.
    let header = IdxKind::Images.header_len().min(bytes.len());
    bytes.drain(..header);
    Ok(Images {
        n,
        rows,
        cols,
        pixels: bytes,
    })
}

/// Reads an idx1 labels file, plain or gzip (detected by content).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_idx_file(path)?;
    parse_labels(&bytes).map_err(|err| DataError::Idx {
        path: path.to_path_buf(),
        err,
    })
}

/// The invariants the fuzz target checks on arbitrary input, shared with the test that
/// replays the kept corpus (`tests/fuzz_corpus.rs`): parsing never panics, a successful
/// parse accounts for every byte, and every error is one line.
/// Panics (that is the point) when an invariant fails.
#[doc(hidden)]
pub fn check_invariants(data: &[u8]) {
    fn check(bytes: &[u8]) {
        match parse_images(bytes) {
            Ok(img) => {
                assert_eq!(img.pixels.len(), img.n * img.rows * img.cols);
                assert_eq!(bytes.len(), 16 + img.pixels.len());
                assert_eq!(img.image(img.n), None);
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
        match parse_labels(bytes) {
            Ok(labels) => {
                assert_eq!(bytes.len(), 8 + labels.len());
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    }
    check(data);
    match decode_idx_bytes(data.to_vec()) {
        Ok(decoded) => check(&decoded),
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
}
