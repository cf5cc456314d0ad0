//! Image files to pixels: PNG (Omniglot) and JPEG (MiniImageNet) decoding, colour to grey or
//! RGB, area resizing and rotation — what both dataset layouts share, and what the fuzz
//! targets feed arbitrary bytes to ([`check_grey_invariants`], [`check_rgb_invariants`]).
//!
//! Decoding is limited to [`MAX_PIXELS`] pixels, checked from the header before any pixel
//! buffer is allocated, so a 40-byte file claiming 2³¹ × 2³¹ pixels is an error, not an
//! allocation. Errors are the decoders' messages on one line, without the path (the
//! dataset readers add it).

use std::io::Cursor;

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Largest image accepted, in pixels (4096²; Omniglot's are 105², MiniImageNet's originals
/// at most a few hundred a side).
pub const MAX_PIXELS: u64 = 1 << 24;
/// Largest side accepted by the JPEG decoder (its header is read with this limit).
const MAX_SIDE: usize = 1 << 12;

/// 8-bit samples, rows packed without padding.
struct Samples {
    width: u32,
    height: u32,
    /// Samples per pixel (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).
    channels: usize,
    data: Vec<u8>,
}

fn check_size(w: u64, h: u64) -> Result<(), String> {
    if w * h > MAX_PIXELS {
        return Err(format!(
            "{w}×{h} pixels is over the {MAX_PIXELS}-pixel limit"
        ));
    }
    Ok(())
}

/// A PNG's samples, normalised to 8 bits (`EXPAND | STRIP_16`: 1/2/4-bit grey and palettes
/// are expanded, 16-bit samples are cut to their high byte).
fn png_samples(bytes: &[u8]) -> Result<Samples, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (w, h) = reader.info().size();
    check_size(u64::from(w), u64::from(h))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "unexpected bit depth {:?} after expansion",
            info.bit_depth
        ));
    }
    let channels = info.color_type.samples();
    let row = info.width as usize * channels;
    let mut data = Vec::with_capacity(row * info.height as usize);
    for line in buf.chunks(info.line_size).take(info.height as usize) {
        data.extend_from_slice(&line[..row]);
    }
    Ok(Samples {
        width: info.width,
        height: info.height,
        channels,
        data,
    })
}

/// A JPEG's pixels as RGB (grey and CMYK/YCCK files are converted by the decoder).
fn jpeg_samples(bytes: &[u8]) -> Result<Samples, String> {
    // Strict: a file cut short is an error, not grey blocks (the lenient default renders
    // a truncated baseline JPEG as if it were whole, and a class of such files is easy).
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| one_line(&e))?;
    let info = decoder.info().ok_or("no JPEG header")?;
    check_size(u64::from(info.width), u64::from(info.height))?;
    let data = decoder.decode().map_err(|e| one_line(&e))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if data.len() != 3 * width as usize * height as usize {
        return Err(format!(
            "decoder gave {} bytes for {width}×{height} RGB pixels",
            data.len()
        ));
    }
    Ok(Samples {
        width,
        height,
        channels: 3,
        data,
    })
}

/// A decoder's error message on one line.
fn one_line(e: &dyn std::fmt::Debug) -> String {
    format!("{e:?}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rec. 601 luma, rounded: `(299 r + 587 g + 114 b) / 1000`.
fn luma601(r: u8, g: u8, b: u8) -> u32 {
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000
}

/// `v` with opacity `a` composited over white, rounded: `(a·v + (255 − a)·255) / 255`.
fn over_white(v: u32, a: u32) -> u8 {
    ((a * v + (255 - a) * 255 + 127) / 255) as u8
}

/// Decodes a PNG held in memory to grey levels (0 = black, 255 = white): returns
/// `(width, height, grey)`. Colour is reduced with the Rec. 601 luma weights and alpha is
/// composited over white. The error is the decoder's message, without the path.
pub fn decode_grey(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let s = png_samples(bytes)?;
    let grey = match s.channels {
        // The common case (Omniglot): the bytes are the grey levels.
        1 => s.data,
        2 => s
            .data
            .chunks_exact(2)
            .map(|p| over_white(u32::from(p[0]), u32::from(p[1])))
            .collect(),
        3 => s
            .data
            .chunks_exact(3)
            .map(|p| luma601(p[0], p[1], p[2]) as u8)
            .collect(),
        4 => s
            .data
            .chunks_exact(4)
            .map(|p| over_white(luma601(p[0], p[1], p[2]), u32::from(p[3])))
            .collect(),
        c => return Err(format!("unexpected {c} samples per pixel")),
    };
    Ok((s.width, s.height, grey))
}

/// Decodes a JPEG or a PNG held in memory (told apart by their signatures) to RGB, three
/// bytes per pixel, row-major: returns `(width, height, rgb)`. Grey is replicated to the
/// three channels and alpha is composited over white.
pub fn decode_rgb(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let s = if bytes.starts_with(&[0xff, 0xd8]) {
        jpeg_samples(bytes)?
    } else if bytes.starts_with(b"\x89PNG") {
        png_samples(bytes)?
    } else {
        return Err("not a JPEG or PNG file (unknown signature)".to_string());
    };
    let rgb = match s.channels {
        3 => s.data,
        1 => s.data.iter().flat_map(|&g| [g; 3]).collect(),
        2 => s
            .data
            .chunks_exact(2)
            .flat_map(|p| [over_white(u32::from(p[0]), u32::from(p[1])); 3])
            .collect(),
        4 => s
            .data
            .chunks_exact(4)
            .flat_map(|p| {
                let a = u32::from(p[3]);
                [0, 1, 2].map(|c| over_white(u32::from(p[c]), a))
            })
            .collect(),
        c => return Err(format!("unexpected {c} samples per pixel")),
    };
    Ok((s.width, s.height, rgb))
}

/// Area-averaging weights from `len` source pixels to `side` cells: for each cell, the
/// first source index and the fractions of each source pixel it covers, divided by the
/// cell width (so each cell's weights sum to 1). Works both ways: a cell narrower than a
/// pixel takes the pixels it lies on, blended at their borders.
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
/// cell border counting with the fraction inside. Needs `width, height ≥ 1`; values in
/// `[0, 1]` stay there.
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

/// RGB bytes (`width × height × 3`) to three `side × side` planes of values in `[0, 1]`
/// (`v / 255`, then [`resize_area`] per channel), channel-major: the backbone's input.
pub fn rgb_planes(width: usize, height: usize, rgb: &[u8], side: usize) -> Vec<f32> {
    assert_eq!(rgb.len(), 3 * width * height, "rgb_planes: buffer size");
    let mut out = Vec::with_capacity(3 * side * side);
    for c in 0..3 {
        let plane: Vec<f32> = rgb
            .iter()
            .skip(c)
            .step_by(3)
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        out.extend(resize_area(&plane, width, height, side));
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

/// What the grey path promises on any bytes (the `png` fuzz target and the corpus test):
/// no panic; a decoded image has `width·height ≤ MAX_PIXELS` grey levels and, inverted and
/// resized to 28×28 as the Omniglot reader does, 784 values in `[0, 1]`; an error is one
/// non-empty line.
pub fn check_grey_invariants(bytes: &[u8]) {
    match decode_grey(bytes) {
        Ok((w, h, grey)) => {
            let (w, h) = (w as usize, h as usize);
            assert!(w >= 1 && h >= 1, "decoded an empty image");
            assert!((w * h) as u64 <= MAX_PIXELS);
            assert_eq!(grey.len(), w * h);
            let ink: Vec<f32> = grey.iter().map(|&g| 1.0 - f32::from(g) / 255.0).collect();
            let out = resize_area(&ink, w, h, 28);
            assert_eq!(out.len(), 28 * 28);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        Err(m) => assert_one_line(&m),
    }
}

/// What the RGB path promises on any bytes (the `rgb` fuzz target and the corpus test): no
/// panic; a decoded image has `3·width·height` bytes and gives, resized to 84×84, three
/// planes of values in `[0, 1]`; an error is one non-empty line.
pub fn check_rgb_invariants(bytes: &[u8]) {
    match decode_rgb(bytes) {
        Ok((w, h, rgb)) => {
            let (w, h) = (w as usize, h as usize);
            assert!(w >= 1 && h >= 1, "decoded an empty image");
            assert!((w * h) as u64 <= MAX_PIXELS);
            assert_eq!(rgb.len(), 3 * w * h);
            let out = rgb_planes(w, h, &rgb, 84);
            assert_eq!(out.len(), 3 * 84 * 84);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        Err(m) => assert_one_line(&m),
    }
}

/// An error message as a command line prints it: one non-empty line.
pub(crate) fn assert_one_line(m: &str) {
    assert!(!m.is_empty(), "empty error message");
    assert!(!m.contains('\n'), "multi-line error: {m:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_cut_short_is_an_error() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/miniimagenet-tiny/images/n010000000000.jpg"
        );
        let whole = std::fs::read(path).unwrap();
        let (w, h, rgb) = decode_rgb(&whole).unwrap();
        assert_eq!(rgb.len(), 3 * (w * h) as usize);
        for cut in [whole.len() / 2, 3 * whole.len() / 4] {
            let e = decode_rgb(&whole[..cut]).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

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
    fn upsizing_keeps_values_and_weights() {
        // 2 × 3 → 84 × 84: each cell lies on one or two source pixels, weights sum to 1.
        for (_, w) in area_weights(3, 84) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let src = [0.0, 1.0, 0.5, 0.25, 0.75, 1.0];
        let out = resize_area(&src, 2, 3, 84);
        let near = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(near(out[0], 0.0) && near(out[83], 1.0));
        assert!(near(out[42 * 84], 0.5) && near(out[83 * 84 + 83], 1.0));
    }

    #[test]
    fn rgb_planes_are_channel_major() {
        // A 2×1 image: red then blue.
        let rgb = [255, 0, 0, 0, 0, 255];
        let p = rgb_planes(2, 1, &rgb, 2);
        assert_eq!(
            p,
            [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn rotation_four_times_is_identity() {
        let side = 28;
        let img: Vec<f32> = (0..side * side).map(|i| i as f32).collect();
        let r = rotate90(
            &rotate90(&rotate90(&rotate90(&img, side), side), side),
            side,
        );
        assert_eq!(r, img);
        // Counter-clockwise: the top-right corner goes to the top-left.
        let r1 = rotate90(&img, side);
        assert_eq!(r1[0], img[side - 1]);
    }

    #[test]
    fn unknown_signatures_and_truncation_are_one_line_errors() {
        for bytes in [
            &b""[..],
            b"GIF89a",
            &[0xff, 0xd8, 0xff],
            b"\x89PNG\r\n\x1a\n",
        ] {
            let e = decode_rgb(bytes).unwrap_err();
            assert_one_line(&e);
        }
    }
}
