//! Regenerates `fixtures/miniimagenet-tiny/` (the split-file layout) and
//! `fixtures/miniimagenet-tiny-folders/` (the class-folder layout): small synthetic RGB
//! images in MiniImageNet's two layouts, for the reader's and the command's tests. No
//! MiniImageNet data exists on the machines these tests run on; these images are drawn here.
//!
//! ```sh
//! cargo run -p bda-host --example miniimagenet_fixture -- fixtures
//! ```
//!
//! Every class has its own colour and stripe direction, every image its own phase and
//! noise, so a backbone can tell the classes apart. Most images are 84×84; some are 96×64
//! (downsized and squashed), some 40×48 (upsized), one is a grey JPEG and one a PNG, so
//! that every decoding and resizing path runs. The output is the same bytes for every run
//! (fixed seed; the encoders are deterministic).

use std::fs;
use std::path::Path;

use jpeg_encoder::{ColorType, Encoder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (split, classes, images per class) of the split-file layout.
const SPLITS: [(&str, usize, usize); 3] = [("train", 6, 5), ("val", 5, 4), ("test", 5, 4)];

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "fixtures".into());
    let root = Path::new(&out).join("miniimagenet-tiny");
    let folders = Path::new(&out).join("miniimagenet-tiny-folders");
    for d in [&root, &folders] {
        if d.exists() {
            fs::remove_dir_all(d).expect("remove the old fixture");
        }
    }
    fs::create_dir_all(root.join("images")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(20261129);
    let mut class_id = 0usize;
    for (split, classes, per) in SPLITS {
        let mut csv = String::from("filename,label\n");
        for c in 0..classes {
            // WordNet-like ids, as in the real files.
            let label = format!("n{:08}", 1_000_000 + 7919 * class_id);
            for i in 0..per {
                let k = class_id * 10 + i;
                let (w, h) = match k % 7 {
                    3 => (96, 64),
                    5 => (40, 48),
                    _ => (84, 84),
                };
                let rgb = draw(class_id, w, h, &mut rng);
                let (name, bytes) = if k == 12 {
                    (format!("{label}{i:04}.png"), png(&rgb, w, h))
                } else if k == 21 {
                    let grey: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
                    (
                        format!("{label}{i:04}.jpg"),
                        jpeg(&grey, w, h, ColorType::Luma),
                    )
                } else {
                    (
                        format!("{label}{i:04}.jpg"),
                        jpeg(&rgb, w, h, ColorType::Rgb),
                    )
                };
                fs::write(root.join("images").join(&name), &bytes).unwrap();
                csv.push_str(&format!("{name},{label}\n"));
                // The class-folder copy: 3 classes of 3 images per split.
                if c < 3 && i < 3 {
                    let dir = folders.join(split).join(&label);
                    fs::create_dir_all(&dir).unwrap();
                    fs::write(dir.join(&name), &bytes).unwrap();
                }
            }
            class_id += 1;
        }
        fs::write(root.join(format!("{split}.csv")), csv).unwrap();
    }
    fs::write(root.join("README.md"), README).unwrap();
    fs::write(folders.join("README.md"), README).unwrap();
    println!("wrote {} and {}", root.display(), folders.display());
}

const README: &str = "# MiniImageNet-layout test fixture (synthetic)\n\n\
Not MiniImageNet: synthetic stripes, one colour and direction per class, drawn by\n\
`cargo run -p bda-host --example miniimagenet_fixture -- fixtures` (same bytes every run).\n\
`miniimagenet-tiny/` has the split-file layout (images/ + train.csv, val.csv, test.csv);\n\
`miniimagenet-tiny-folders/` the class-folder layout (train/<class>/*.jpg, ...).\n";

/// A `w × h` RGB image of class `class`: stripes in the class's colour and direction, a
/// random phase, and noise.
fn draw(class: usize, w: usize, h: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let hue = class as f32 * 2.399; // golden angle: distinct colours
    let colour = [0.0f32, 2.094, 4.189].map(|s| 0.5 + 0.45 * (hue + s).cos());
    let angle = class as f32 * 0.7;
    let (dx, dy) = (angle.cos(), angle.sin());
    let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let period = 6.0 + (class % 4) as f32 * 3.0;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let t =
                ((x as f32 * dx + y as f32 * dy) * std::f32::consts::TAU / period + phase).sin();
            for c in colour {
                let noise: f32 = rng.random_range(-0.08..0.08);
                let v = (c * (0.6 + 0.4 * t) + noise).clamp(0.0, 1.0);
                out.push((v * 255.0).round() as u8);
            }
        }
    }
    out
}

fn jpeg(data: &[u8], w: usize, h: usize, colour: ColorType) -> Vec<u8> {
    let mut bytes = Vec::new();
    Encoder::new(&mut bytes, 85)
        .encode(data, w as u16, h as u16, colour)
        .expect("encode the JPEG");
    bytes
}

fn png(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().expect("PNG header");
    writer.write_image_data(rgb).expect("PNG data");
    writer.finish().expect("PNG end");
    bytes
}
