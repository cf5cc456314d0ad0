//! `bda data kanji`: simulated handwriting of kanji in the Omniglot folder layout, a
//! stand-in for Omniglot (NOT Omniglot) when the real data set is not at hand.
//!
//! # Source
//!
//! Debian's `python3-kanjidraw` ships `kanjidraw/data.json`: for each stroke count (a
//! string key, `"1"` … `"30"`) a map from a kanji to its strokes, each stroke the straight
//! line `[x1, y1, x2, y2]` from the start to the end of the KanjiVG stroke, integers in a
//! 0–255 frame (y down). 6394 kanji. The data is derived from KanjiVG (© 2017 Ulrich Apel,
//! 2021 FC Stegerman) under CC BY-SA 3.0, see `/usr/share/doc/python3-kanjidraw/copyright`.
//!
//! # Drawings
//!
//! Each drawing is a 105×105 8-bit grey image, white background, dark strokes. A drawer
//! has a style fixed by `(seed, drawer)` ([`DrawerStyle`]: pen width, slant, size, endpoint
//! jitter, stroke bow). A drawing by that drawer of a character, seeded by
//! `(seed, character, drawer)`, applies a small random affine map (rotation, scale, aspect,
//! shear, translation) to the character, jitters every stroke's endpoints, bows the stroke
//! into a quadratic Bézier curve and draws it with a round pen of a jittered width. Lines
//! are anti-aliased by distance-to-segment coverage: a pixel whose centre lies at distance
//! `d` from the pen's path gets ink `clamp(w/2 + 1/2 − d, 0, 1)`, and overlapping strokes
//! take the maximum ink.
//!
//! Because every drawing has its own generator, the bytes of a file depend only on the seed,
//! the character and the drawer: not on the thread count, on `--limit` or on `--drawers`.
//!
//! # Layout
//!
//! `OUT/images_{background,evaluation}/<alphabet>/u<code point>/<drawer>.png`, drawers
//! numbered from 1 and zero-padded to at least two digits. Alphabets group characters by
//! stroke count ([`alphabet_names`]). The split is fixed, independent of the seed: a
//! character is in the evaluation split iff [`is_evaluation`] (a hash of its code point,
//! about 25 %).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::CliError;

/// Where `python3-kanjidraw` installs its stroke data.
pub const KANJIDRAW_DATA: &str = "/usr/lib/python3/dist-packages/kanjidraw/data.json";
/// Side of the rendered images (Omniglot's).
pub const CANVAS: usize = 105;
/// Most drawers `--drawers` accepts.
pub const MAX_DRAWERS: usize = 999;
/// Adjacent stroke counts are merged into one alphabet until it has at least this many
/// characters.
pub const MIN_ALPHABET: usize = 20;
/// Alphabets with more characters are cut into parts of at most this many.
pub const MAX_ALPHABET: usize = 60;
/// Pixels per unit of the kanjidraw frame (0–255) before the drawer's size factor: the
/// frame's 256 units span 92 of the 105 pixels.
pub const BASE_SCALE: f32 = 0.36;

/// A stroke: the line `[x1, y1, x2, y2]` in kanjidraw's 0–255 frame, y down.
pub type Stroke = [f32; 4];

/// A character and its strokes, in writing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Kanji {
    pub ch: char,
    pub strokes: Vec<Stroke>,
}

/// Parses kanjidraw's `data.json` (see the module docs). Returns the characters sorted by
/// stroke count, then code point. The error is one line, without the path.
pub fn parse_kanjidraw(bytes: &[u8]) -> Result<Vec<Kanji>, String> {
    use std::collections::BTreeMap;
    let data: BTreeMap<String, BTreeMap<String, Vec<Vec<f32>>>> =
        serde_json::from_slice(bytes).map_err(|e| format!("not kanjidraw stroke data: {e}"))?;
    let mut out = Vec::new();
    for (count, chars) in data {
        let count: usize = count
            .parse()
            .map_err(|_| format!("stroke count key {count:?} is not a number"))?;
        for (key, strokes) in chars {
            let mut it = key.chars();
            let (Some(ch), None) = (it.next(), it.next()) else {
                return Err(format!("key {key:?} is not a single character"));
            };
            if strokes.len() != count {
                return Err(format!(
                    "{ch} is listed under {count} strokes but has {}",
                    strokes.len()
                ));
            }
            let strokes = strokes
                .into_iter()
                .map(|s| match <[f32; 4]>::try_from(s.as_slice()) {
                    Ok(a) if a.iter().all(|v| v.is_finite()) => Ok(a),
                    _ => Err(format!("{ch}: a stroke is not four finite numbers: {s:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Kanji { ch, strokes });
        }
    }
    if out.is_empty() {
        return Err("no characters".into());
    }
    out.sort_by_key(|k| (k.strokes.len(), k.ch));
    Ok(out)
}

/// Reads and parses the stroke data; a missing file says how to install it.
pub fn read_kanjidraw(path: &Path) -> Result<Vec<Kanji>, CliError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::input(format!(
                "{}: kanjidraw stroke data not found; install it with `apt-get install python3-kanjidraw` (or pass --source)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CliError::input(format!(
                "{}: cannot read: {e}",
                path.display()
            )));
        }
    };
    parse_kanjidraw(&bytes).map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// SplitMix64's output function: a fixed, well-mixed 64-bit hash.
pub const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fixed split rule: a character goes to `images_evaluation` iff
/// `mix64(code point) mod 4 == 0` (about 25 % of the characters), independent of the seed.
pub const fn is_evaluation(ch: char) -> bool {
    mix64(ch as u64) % 4 == 0
}

/// Alphabet names for characters sorted by stroke count: adjacent stroke counts are merged
/// until a group has at least [`MIN_ALPHABET`] characters (a short last group joins the one
/// before), named `strokes-07` or `strokes-01-02`; a group with more than
/// [`MAX_ALPHABET`] characters is cut, in order, into near-equal parts named
/// `strokes-10-p01`, `strokes-10-p02`, … Returns one name per character.
pub fn alphabet_names(sorted: &[Kanji]) -> Vec<String> {
    // Runs of equal stroke count: (count, start, end).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, k) in sorted.iter().enumerate() {
        match runs.last_mut() {
            Some((c, _, end)) if *c == k.strokes.len() => *end = i + 1,
            _ => runs.push((k.strokes.len(), i, i + 1)),
        }
    }
    // Merge runs into groups: (first count, last count, start, end).
    let mut groups: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut open: Option<(usize, usize, usize, usize)> = None;
    for (c, s, e) in runs {
        let g = match open {
            Some((c0, _, s0, _)) => (c0, c, s0, e),
            None => (c, c, s, e),
        };
        if g.3 - g.2 >= MIN_ALPHABET {
            groups.push(g);
            open = None;
        } else {
            open = Some(g);
        }
    }
    if let Some(g) = open {
        match groups.last_mut() {
            Some(last) => {
                last.1 = g.1;
                last.3 = g.3;
            }
            None => groups.push(g),
        }
    }
    let mut names = Vec::with_capacity(sorted.len());
    for (c0, c1, s, e) in groups {
        let base = if c0 == c1 {
            format!("strokes-{c0:02}")
        } else {
            format!("strokes-{c0:02}-{c1:02}")
        };
        let n = e - s;
        let parts = n.div_ceil(MAX_ALPHABET);
        for i in 0..n {
            if parts == 1 {
                names.push(base.clone());
            } else {
                names.push(format!("{base}-p{:02}", i * parts / n + 1));
            }
        }
    }
    names
}

/// A drawer's habits, fixed by `(seed, drawer)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawerStyle {
    /// Pen width in pixels (of 105).
    pub width: f32,
    /// Mean horizontal shear (x += slant · y).
    pub slant: f32,
    /// Size factor on [`BASE_SCALE`].
    pub size: f32,
    /// Standard deviation of the endpoint jitter, pixels.
    pub jitter: f32,
    /// Largest bow of a stroke, as a fraction of its length.
    pub bow: f32,
}

impl DrawerStyle {
    /// The style of drawer `drawer` (0-based) under `seed`.
    pub fn new(seed: u64, drawer: usize) -> Self {
        // Tag u64::MAX keeps this stream apart from the per-drawing ones (code points are
        // below 2^21).
        let mut rng = ChaCha8Rng::seed_from_u64(mix3(seed, u64::MAX, drawer as u64));
        DrawerStyle {
            width: rng.random_range(2.0..3.6),
            slant: rng.random_range(-0.12..0.12),
            size: rng.random_range(0.86..1.0),
            jitter: rng.random_range(1.0..2.6),
            bow: rng.random_range(0.02..0.10),
        }
    }
}

fn mix3(a: u64, b: u64, c: u64) -> u64 {
    mix64(mix64(mix64(a) ^ b) ^ c)
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Distance from `p` to the segment `a`–`b`.
fn dist_to_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (ex, ey) = (p[0] - a[0] - t * dx, p[1] - a[1] - t * dy);
    (ex * ex + ey * ey).sqrt()
}

/// Adds the round-pen segment `a`–`b` of width `w` to the ink buffer (`side × side`), each
/// pixel keeping the maximum of its ink and the segment's coverage.
fn draw_segment(ink: &mut [f32], side: usize, a: [f32; 2], b: [f32; 2], w: f32) {
    let r = w / 2.0 + 0.5;
    let lo = |u: f32, v: f32| ((u.min(v) - r - 0.5).floor().max(0.0)) as usize;
    let hi = |u: f32, v: f32| ((u.max(v) + r + 0.5).ceil().max(0.0) as usize).min(side);
    let (x0, x1) = (lo(a[0], b[0]), hi(a[0], b[0]));
    let (y0, y1) = (lo(a[1], b[1]), hi(a[1], b[1]));
    for y in y0..y1 {
        for x in x0..x1 {
            let d = dist_to_segment([x as f32 + 0.5, y as f32 + 0.5], a, b);
            let cov = (r - d).clamp(0.0, 1.0);
            let px = &mut ink[y * side + x];
            if cov > *px {
                *px = cov;
            }
        }
    }
}

/// Renders one drawing of `strokes` by a drawer of `style`, drawing the drawing's own
/// randomness from `rng`. Returns `CANVAS²` grey levels (255 white, 0 full ink).
pub fn render(strokes: &[Stroke], style: &DrawerStyle, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let side = CANVAS;
    let c = side as f32 / 2.0;
    // The drawing's affine map: p ↦ c + R·S·D·(p − 128) + t.
    let k = BASE_SCALE * style.size * rng.random_range(0.92..1.06);
    let aspect: f32 = rng.random_range(0.94..1.06);
    let (sx, sy) = (k * aspect, k / aspect);
    let shear = style.slant + rng.random_range(-0.05..0.05);
    let angle = rng.random_range(-6.0f32..6.0).to_radians();
    let (sin, cos) = angle.sin_cos();
    let t = [rng.random_range(-4.0..4.0), rng.random_range(-4.0..4.0)];
    let map = |x: f32, y: f32| -> [f32; 2] {
        let (u, v) = ((x - 128.0) * sx, (y - 128.0) * sy);
        let u = u + shear * v;
        [c + cos * u - sin * v + t[0], c + sin * u + cos * v + t[1]]
    };
    let mut ink = vec![0f32; side * side];
    for s in strokes {
        let mut p0 = map(s[0], s[1]);
        let mut p2 = map(s[2], s[3]);
        for v in p0.iter_mut().chain(p2.iter_mut()) {
            *v += style.jitter * normal(rng);
        }
        let w = style.width * rng.random_range(0.85..1.15);
        let (dx, dy) = (p2[0] - p0[0], p2[1] - p0[1]);
        let len = (dx * dx + dy * dy).sqrt();
        let bow = len * rng.random_range(-style.bow..style.bow);
        let (nx, ny) = if len > 0.0 {
            (-dy / len, dx / len)
        } else {
            (0.0, 0.0)
        };
        let p1 = [
            (p0[0] + p2[0]) / 2.0 + nx * bow,
            (p0[1] + p2[1]) / 2.0 + ny * bow,
        ];
        let segs = ((len / 5.0).ceil() as usize).clamp(1, 16);
        let at = |t: f32| -> [f32; 2] {
            let (a, b, cc) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
            [
                a * p0[0] + b * p1[0] + cc * p2[0],
                a * p0[1] + b * p1[1] + cc * p2[1],
            ]
        };
        let mut prev = p0;
        for i in 1..=segs {
            let next = at(i as f32 / segs as f32);
            draw_segment(&mut ink, side, prev, next, w);
            prev = next;
        }
    }
    ink.iter()
        .map(|&v| (255.0 * (1.0 - v)).round() as u8)
        .collect()
}

/// The drawing of `strokes` (character `ch`) by drawer `drawer` (0-based) under `seed`:
/// the same arguments give the same pixels.
pub fn render_drawing(strokes: &[Stroke], seed: u64, ch: char, drawer: usize) -> Vec<u8> {
    let style = DrawerStyle::new(seed, drawer);
    let mut rng = ChaCha8Rng::seed_from_u64(mix3(seed, ch as u64, drawer as u64));
    render(strokes, &style, &mut rng)
}

/// Encodes a `side × side` 8-bit grey image as PNG (no metadata, so the bytes depend only
/// on the pixels).
pub fn encode_png(grey: &[u8], side: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Balanced);
        enc.set_filter(png::Filter::NoFilter);
        let mut w = enc.write_header().expect("PNG header into a Vec");
        w.write_image_data(grey).expect("PNG data into a Vec");
    }
    out
}

/// Parameters of a generator run, as recorded in `README.txt`.
#[derive(Debug, Clone)]
pub struct KanjiParams {
    pub drawers: usize,
    pub seed: u64,
    pub limit: Option<usize>,
    /// The source path as given, for the README.
    pub source: String,
}

/// What a run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Characters in `images_background`.
    pub background: usize,
    /// Characters in `images_evaluation`.
    pub evaluation: usize,
    /// Distinct alphabet names.
    pub alphabets: usize,
    /// Images per character.
    pub drawers: usize,
}

impl Summary {
    /// All characters.
    pub fn characters(&self) -> usize {
        self.background + self.evaluation
    }
    /// All images.
    pub fn images(&self) -> usize {
        self.characters() * self.drawers
    }
}

fn write_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::input(format!("{}: cannot write: {e}", path.display()))
}

/// Renders `all` (any order; sorted by stroke count, then code point, before alphabets
/// are assigned and `limit` applies) into `out` in the Omniglot layout, with `README.txt`
/// and `characters.tsv`. Refuses an `out` that already holds a split folder.
pub fn generate(
    all: &[Kanji],
    out: &Path,
    params: &KanjiParams,
    progress: bool,
) -> Result<Summary, CliError> {
    let mut sorted = all.to_vec();
    sorted.sort_by_key(|k| (k.strokes.len(), k.ch));
    let names = alphabet_names(&sorted);
    let n = params.limit.unwrap_or(sorted.len()).min(sorted.len());
    let (chars, names) = (&sorted[..n], &names[..n]);
    for split in ["images_background", "images_evaluation"] {
        let p = out.join(split);
        if p.exists() {
            return Err(CliError::input(format!(
                "{}: already exists; remove it or choose another --out",
                p.display()
            )));
        }
    }
    // Both split folders, even when one gets no character (a reader then says "empty").
    for split in ["images_background", "images_evaluation"] {
        let p = out.join(split);
        fs::create_dir_all(&p).map_err(|e| write_err(&p, e))?;
    }
    let digits = params.drawers.to_string().len().max(2);
    let dir_of = |k: &Kanji, alphabet: &str| -> PathBuf {
        let split = if is_evaluation(k.ch) {
            "images_evaluation"
        } else {
            "images_background"
        };
        out.join(split)
            .join(alphabet)
            .join(format!("u{:04x}", k.ch as u32))
    };
    let bar = if progress {
        indicatif::ProgressBar::new(n as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    chars.par_iter().zip(names.par_iter()).try_for_each(
        |(k, alphabet)| -> Result<(), CliError> {
            let dir = dir_of(k, alphabet);
            fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
            for d in 0..params.drawers {
                let grey = render_drawing(&k.strokes, params.seed, k.ch, d);
                let path = dir.join(format!("{:0digits$}.png", d + 1));
                fs::write(&path, encode_png(&grey, CANVAS)).map_err(|e| write_err(&path, e))?;
            }
            bar.inc(1);
            Ok(())
        },
    )?;
    bar.finish_and_clear();

    let evaluation = chars.iter().filter(|k| is_evaluation(k.ch)).count();
    let mut distinct: Vec<&String> = names.iter().collect();
    distinct.dedup();
    let summary = Summary {
        background: n - evaluation,
        evaluation,
        alphabets: distinct.len(),
        drawers: params.drawers,
    };
    let mut tsv = String::from("split\talphabet\tfolder\tcharacter\tstrokes\n");
    for (k, a) in chars.iter().zip(names) {
        let split = if is_evaluation(k.ch) {
            "evaluation"
        } else {
            "background"
        };
        let _ = writeln!(
            tsv,
            "{split}\t{a}\tu{:04x}\t{}\t{}",
            k.ch as u32,
            k.ch,
            k.strokes.len()
        );
    }
    let p = out.join("characters.tsv");
    fs::write(&p, tsv).map_err(|e| write_err(&p, e))?;
    let p = out.join("README.txt");
    fs::write(&p, readme(params, &summary, sorted.len())).map_err(|e| write_err(&p, e))?;
    Ok(summary)
}

/// The `README.txt` written with the data (no timestamps: same arguments, same bytes).
fn readme(p: &KanjiParams, s: &Summary, available: usize) -> String {
    let limit = match p.limit {
        Some(l) => format!(
            "--limit {l} (the first {l} of {available} characters by stroke count, then code point)"
        ),
        None => format!("none (all {available} characters)"),
    };
    format!(
        "\
SIMULATED KANJI HANDWRITING IN THE OMNIGLOT LAYOUT
==================================================

This is a STAND-IN for Omniglot, NOT Omniglot. It has Omniglot's folder layout and
image format so that few-shot code can run where Omniglot is not available; results
on it are not comparable with published Omniglot numbers.

Generated by `bda data kanji` (bda {version}).

Parameters
  --drawers {drawers}   images per character (simulated drawers)
  --seed {seed}
  --source {source}
  limit: {limit}

Contents
  images_background/<alphabet>/<character>/<drawer>.png   {bg} characters
  images_evaluation/<alphabet>/<character>/<drawer>.png   {ev} characters
  {alphabets} alphabet names, {images} images in all.
  characters.tsv: split, alphabet, folder, character, stroke count.
  <character> is `u` and the hexadecimal Unicode code point; <drawer> counts from 1.

Images
  105x105 8-bit greyscale PNG, white background (255), dark strokes (0 at full ink).
  Each drawer has a style fixed by (seed, drawer): pen width 2.0-3.6 px, slant (shear)
  -0.12..0.12, size 0.86-1.0, endpoint jitter sd 1.0-2.6 px, stroke bow up to 2-10 %
  of the stroke length. Each drawing, seeded by (seed, character, drawer), applies a
  random affine map (rotation +-6 degrees, scale 0.92-1.06, aspect 0.94-1.06, shear
  +-0.05 around the drawer's slant, translation +-4 px), jitters both endpoints of
  every stroke, bows it into a quadratic Bezier curve and draws it with a round pen
  (width x 0.85-1.15), anti-aliased by distance-to-segment coverage. The kanji frame
  (0-255) maps to about 92 px of the 105.

Alphabets and split
  Alphabets group characters by stroke count: adjacent counts are merged until an
  alphabet has at least {min_a} characters (strokes-01-02, strokes-05, ...), and larger
  groups are cut into parts of at most {max_a} (strokes-10-p01, ...).
  The split is fixed and does not depend on the seed: a character is in
  images_evaluation iff SplitMix64(code point) mod 4 == 0 (about 25 %), else in
  images_background. Alphabet names therefore occur in both splits, with different
  characters (Omniglot instead splits whole alphabets).

Source and license
  Stroke data: kanjidraw/data.json of the Debian package python3-kanjidraw
  (https://github.com/obfusk/kanjidraw), one straight line per stroke from the start
  to the end of the KanjiVG stroke. Per /usr/share/doc/python3-kanjidraw/copyright:
    Files: kanjidraw/data.json
    Copyright: 2017 Ulrich Apel, 2021 FC Stegerman <flx@obfusk.net>
    License: CC-BY-SA-3.0
  The data derives from KanjiVG (https://kanjivg.tagaini.net, (c) Ulrich Apel,
  CC BY-SA 3.0). These images are an adaptation of that data and are distributed
  under the same license, CC BY-SA 3.0
  (https://creativecommons.org/licenses/by-sa/3.0/).
",
        version = env!("CARGO_PKG_VERSION"),
        drawers = p.drawers,
        seed = p.seed,
        source = p.source,
        bg = s.background,
        ev = s.evaluation,
        alphabets = s.alphabets,
        images = s.images(),
        min_a = MIN_ALPHABET,
        max_a = MAX_ALPHABET,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(ch: char, n: usize) -> Kanji {
        Kanji {
            ch,
            strokes: vec![[0.0, 0.0, 1.0, 1.0]; n],
        }
    }

    #[test]
    fn alphabets_merge_small_and_cut_large_groups() {
        let mut chars = Vec::new();
        let mut cp = 0x4e00u32;
        for (count, how_many) in [(1, 6), (2, 10), (3, 25), (4, 130), (5, 3)] {
            for _ in 0..how_many {
                chars.push(k(char::from_u32(cp).unwrap(), count));
                cp += 1;
            }
        }
        let names = alphabet_names(&chars);
        assert_eq!(names.len(), chars.len());
        assert_eq!(names[0], "strokes-01-03");
        assert_eq!(names[40], "strokes-01-03");
        // 130 + 3 merged (the short tail joins), cut in three parts of ≤ 60.
        assert_eq!(names[41], "strokes-04-05-p01");
        assert_eq!(names.last().unwrap(), "strokes-04-05-p03");
        let mut counts = std::collections::BTreeMap::new();
        for n in &names {
            *counts.entry(n.as_str()).or_insert(0) += 1;
        }
        assert!(
            counts
                .values()
                .all(|&c| (MIN_ALPHABET..=MAX_ALPHABET).contains(&c))
        );
    }

    #[test]
    fn split_is_about_a_quarter() {
        let ev = (0x4e00u32..0x4e00 + 4000)
            .filter(|&c| is_evaluation(char::from_u32(c).unwrap()))
            .count();
        assert!((900..1100).contains(&ev), "{ev}");
    }

    #[test]
    fn parse_rejects_inconsistent_data() {
        assert!(parse_kanjidraw(br#"{"1": {"a": [[1,2,3,4]]}}"#).is_ok());
        for bad in [
            &br#"{"2": {"a": [[1,2,3,4]]}}"#[..],
            br#"{"1": {"ab": [[1,2,3,4]]}}"#,
            br#"{"1": {"a": [[1,2,3]]}}"#,
            br#"{"x": {"a": [[1,2,3,4]]}}"#,
            br#"{}"#,
            br#"[1, 2]"#,
        ] {
            let e = parse_kanjidraw(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
