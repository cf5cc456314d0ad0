//! The network's two large products (`U·W₁` and `Uᵀ·G_a`, [`sparse`]) on the Fashion-MNIST
//! training set (seed-0 split, ordered packing), with their buffers on a cache line and 16
//! bytes off one (where the allocator puts a large `Vec<f32>`):
//!
//! ```text
//! cargo run --release -p bda-host --example mlp_kernels -- /usr/share/datasets/fashion-mnist
//! RAYON_NUM_THREADS=1 cargo run --release -p bda-host --example mlp_kernels -- DIR
//! ```
//!
//! The layouts alternate call by call (15 rounds) so that the VM's drift hits both; prints
//! the best and median milliseconds and the dense-equivalent GFLOP/s of the median
//! (`2·n·d·H` FLOPs per product). The measurement behind [`bda_host::aligned`].
//!
//! [`sparse`]: bda_host::hyperclean::cpu::sparse

use std::time::Instant;

use bda_host::aligned::AlignedVec;
use bda_host::hyperclean::HostData;
use bda_host::hyperclean::cpu::sparse::{GroupPixels, pack_tiles, padded_width};
use bda_host::hyperclean::packed::Packed;
use bda_host::hyperclean::simd::Kernels;

/// `len` floats starting `off` floats past a cache line: a buffer and the start index.
fn buffer(src: &[f32], off: usize) -> (AlignedVec, usize) {
    let mut v = AlignedVec::zeros(src.len() + off);
    v[off..].copy_from_slice(src);
    (v, off)
}

fn median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
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
    let px = GroupPixels::new(&set, Kernels::Avx2);
    let (hp, rows) = (padded_width(h), px.rows());
    let w: Vec<f32> = (0..d * h).map(|i| ((i % 13) as f32 - 6.0) * 1e-2).collect();
    let mut wt = AlignedVec::default();
    pack_tiles(&w, h, hp, &mut wt);
    let g: Vec<f32> = (0..rows * hp)
        .map(|i| ((i % 11) as f32 - 5.0) * 1e-2)
        .collect();
    let gflop = 2.0 * (n * d * h) as f64 / 1e9;
    let mut layouts: Vec<_> = [0usize, 4]
        .into_iter()
        .map(|off| {
            let (w, g) = (buffer(&wt, off), buffer(&g, off));
            let (a, o) = (
                buffer(&vec![0.0; rows * hp], off),
                buffer(&vec![0.0; d * hp], off),
            );
            (off, w, g, a, o, Vec::new(), Vec::new())
        })
        .collect();
    for _ in 0..15 {
        for (_, (w, wo), (g, go), (a, ao), (o, oo), t_fwd, t_bwd) in layouts.iter_mut() {
            let t = Instant::now();
            px.times(&set, &w[*wo..], hp, &mut a[*ao..]);
            t_fwd.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            px.transpose_times(&set, &g[*go..], hp, &mut o[*oo..]);
            t_bwd.push(t.elapsed().as_secs_f64());
        }
    }
    println!("threads: {}", rayon::current_num_threads());
    for (off, .., t_fwd, t_bwd) in layouts.iter_mut() {
        let ((bf, mf), (bb, mb)) = (median(t_fwd), median(t_bwd));
        println!(
            "offset {:2} B: U·W best {:6.2} median {:6.2} ms ({:5.1} GFLOP/s)   Uᵀ·G best {:6.2} \
             median {:6.2} ms ({:5.1} GFLOP/s)",
            4 * *off,
            bf * 1e3,
            mf * 1e3,
            gflop / mf,
            bb * 1e3,
            mb * 1e3,
            gflop / mb
        );
    }
}
