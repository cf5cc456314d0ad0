//! Draws a held-out set of procedural colour textures in MiniImageNet's split-file layout
//! (84×84 RGB JPEGs, `images/` + `train.csv`, `val.csv`, `test.csv`), for measuring the
//! few-shot defaults at MiniImageNet shapes on data they were not chosen on.
//!
//! ```sh
//! cargo run --release -p bda-host --example texture_set -- /tmp/textures [SEED]
//! ```
//!
//! Each class is the sum of three gratings with its own orientations, periods and colours;
//! each image draws its own phases, a rotation of up to ±1 rad, periods −20…+25 %, a
//! brightness and strong noise over a near-grey base, so telling two classes apart takes more than a colour. The split
//! sizes are MiniImageNet's (64/16/20 classes), with 30 images per class.

use std::f32::consts::TAU;
use std::fs;
use std::path::Path;

use jpeg_encoder::{ColorType, Encoder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SPLITS: [(&str, usize); 3] = [("train", 64), ("val", 16), ("test", 20)];
const PER_CLASS: usize = 30;
const SIDE: usize = 84;

/// One grating of a class: direction, period (pixels), colour.
struct Grating {
    angle: f32,
    period: f32,
    colour: [f32; 3],
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "textures".into());
    let seed: u64 = args
        .next()
        .map_or(1, |s| s.parse().expect("SEED: an integer"));
    let root = Path::new(&out);
    fs::create_dir_all(root.join("images")).expect("create the output folder");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut class_id = 0usize;
    for (split, classes) in SPLITS {
        let mut csv = String::from("filename,label\n");
        for _ in 0..classes {
            let label = format!("t{class_id:05}");
            let gratings: Vec<Grating> = (0..3)
                .map(|_| Grating {
                    angle: rng.random_range(0.0..TAU / 2.0),
                    period: rng.random_range(3.0..24.0),
                    colour: [0; 3].map(|_| rng.random_range(-0.2..0.2)),
                })
                .collect();
            let base = [0; 3].map(|_| rng.random_range(0.45..0.55));
            for i in 0..PER_CLASS {
                let rgb = draw(&gratings, base, &mut rng);
                let name = format!("{label}{i:04}.jpg");
                fs::write(root.join("images").join(&name), jpeg(&rgb)).expect("write image");
                csv.push_str(&format!("{name},{label}\n"));
            }
            class_id += 1;
        }
        fs::write(root.join(format!("{split}.csv")), csv).expect("write split file");
    }
    println!("wrote {class_id} classes to {}", root.display());
}

/// One image of the class `gratings` over the colour `base`.
fn draw(gratings: &[Grating], base: [f32; 3], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let turn: f32 = rng.random_range(-1.0..1.0);
    let drawn: Vec<(f32, f32, f32, [f32; 3])> = gratings
        .iter()
        .map(|g| {
            let a = g.angle + turn;
            let period = g.period * rng.random_range(0.8..1.25);
            let k = TAU / period;
            (
                k * a.cos(),
                k * a.sin(),
                rng.random_range(0.0..TAU),
                g.colour,
            )
        })
        .collect();
    let bright: f32 = rng.random_range(-0.15..0.15);
    let mut out = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let mut v = base.map(|b| b + bright);
            for &(kx, ky, phase, colour) in &drawn {
                let t = (kx * x as f32 + ky * y as f32 + phase).sin();
                for (c, w) in v.iter_mut().zip(colour) {
                    *c += w * t;
                }
            }
            for c in v {
                let noise: f32 = rng.random_range(-0.25..0.25);
                out.push(((c + noise).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    out
}

fn jpeg(rgb: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    Encoder::new(&mut bytes, 90)
        .encode(rgb, SIDE as u16, SIDE as u16, ColorType::Rgb)
        .expect("encode the JPEG");
    bytes
}
