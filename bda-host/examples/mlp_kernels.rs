//! The network's two large products (`U·W₁` and `Uᵀ·G_a`, [`sparse`]) on the Fashion-MNIST
//! training set (seed-0 split, samples ordered by zero mask), in three layouts: the
//! backend's (pixels reordered, buffers on a cache line), pixels in raster order, and
//! buffers 16 bytes off a line (where the allocator puts a large `Vec<f32>`):
//!
//! ```text
//! cargo run --release -p bda-host --example mlp_kernels -- /usr/share/datasets/fashion-mnist
//! RAYON_NUM_THREADS=1 cargo run --release -p bda-host --example mlp_kernels -- DIR
//! ```
//!
//! The layouts alternate call by call (40 rounds) so that the VM's drift hits all of
//! them; prints the share of blocks each product multiplies, the best and median
//! milliseconds and the dense-equivalent GFLOP/s of the median (`2·n·d·H` FLOPs per
//! product). The measurements behind [`bda_cpu::aligned`] and [`GroupPixels`].
//!
//! [`sparse`]: bda_cpu::hyperclean::sparse

use std::time::Instant;

use bda_cpu::aligned::AlignedVec;
use bda_cpu::hyperclean::packed::Packed;
use bda_cpu::hyperclean::simd::Kernels;
use bda_cpu::hyperclean::sparse::{GroupPixels, padded_width};
use bda_host::hyperclean::HostData;

/// A copy of `src` starting `off` floats past a cache line, and that start.
fn buffer(src: &[f32], off: usize) -> (AlignedVec, usize) {
    let mut v = AlignedVec::zeros(src.len() + off);
    v[off..].copy_from_slice(src);
    (v, off)
}

/// Best and median.
fn best_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// One layout's operands and timings.
struct Layout {
    name: &'static str,
    px: GroupPixels,
    w: (AlignedVec, usize),
    g: (AlignedVec, usize),
    a: (AlignedVec, usize),
    o: (AlignedVec, usize),
    fwd: Vec<f64>,
    bwd: Vec<f64>,
}

fn main() {
    let (n, d, h) = (5000usize, 784usize, 300usize);
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: mlp_kernels DIR (a folder of Fashion-MNIST IDX files)");
        std::process::exit(2)
    };
    let data =
        HostData::load_mnist(dir.as_ref(), "fashion-mnist", n, n, 0.5, 0).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let set = Packed::ordered(&data.train.x, &data.train.labels, d).expect("MNIST pixels");
    let (hp, rows) = (padded_width(h), n.div_ceil(8) * 8); // groups of 8 samples
    let w: Vec<f32> = (0..d * h).map(|i| ((i % 13) as f32 - 6.0) * 1e-2).collect();
    let g: Vec<f32> = (0..rows * hp)
        .map(|i| ((i % 11) as f32 - 5.0) * 1e-2)
        .collect();
    let gflop = 2.0 * (n * d * h) as f64 / 1e9;
    let mut layouts: Vec<Layout> = [
        ("pixels reordered, aligned", true, 0),
        ("raster pixels, aligned", false, 0),
        ("pixels reordered, 16 B off", true, 4),
    ]
    .into_iter()
    .map(|(name, spectral, off)| {
        let px = GroupPixels::with_pixel_order(&set, Kernels::Avx2, spectral);
        let mut wt = AlignedVec::default();
        px.pack(&w, h, hp, &mut wt);
        Layout {
            name,
            w: buffer(&wt, off),
            g: buffer(&g, off),
            a: buffer(&vec![0.0; rows * hp], off),
            o: buffer(&vec![0.0; d * hp], off),
            px,
            fwd: Vec::new(),
            bwd: Vec::new(),
        }
    })
    .collect();
    for _ in 0..40 {
        for l in layouts.iter_mut() {
            let t = Instant::now();
            l.px.times(&l.w.0[l.w.1..], hp, 0, &mut l.a.0[l.a.1..]);
            l.fwd.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let chunks = 0..rows.div_ceil(256);
            l.px.transpose_times(&l.g.0[l.g.1..], hp, chunks, false, &mut l.o.0[l.o.1..]);
            l.bwd.push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "threads: {}, blocks multiplied: U·W {:.1} % (of 4 samples; {:.1} % of 8)",
        rayon::current_num_threads(),
        100.0 * layouts[0].px.times_density(),
        100.0 * set.density()
    );
    for l in layouts.iter_mut() {
        let ((bf, mf), (bb, mb)) = (best_median(&mut l.fwd), best_median(&mut l.bwd));
        println!(
            "{:<27} U·W best {:6.2} median {:6.2} ms ({:5.1} GFLOP/s) | Uᵀ·G ({:.1} % of blocks) \
             best {:6.2} median {:6.2} ms ({:5.1} GFLOP/s)",
            l.name,
            bf * 1e3,
            mf * 1e3,
            gflop / mf,
            100.0 * l.px.transpose_density(),
            bb * 1e3,
            mb * 1e3,
            gflop / mb
        );
    }
}
