//! The evidence behind the few-shot backbone's convolution choice: the GEMMs of conv4's
//! im2col formulation, at the benchmark's meta-batch (16 tasks × (5 support + 75 query) =
//! 1280 images of 28×28), timed with `matrixmultiply` (what `bda_cpu::conv4` uses) and with
//! the `gemm` crate (the GEMM of candle's and faer's CPU backends).
//!
//! ```text
//! cargo run --release -p bda-cpu --example conv_gemm
//! ```
//!
//! Each line is one GEMM shape of one block (forward `Z = W·cols`, weight gradient
//! `dW = dZ·colsᵀ`, input gradient `dcols = Wᵀ·dZ`), run over all chunks of
//! `conv4::CHUNK` images in parallel with rayon, exactly as the backbone does; "layer" runs
//! one GEMM over all 1280 images with the library's own threading instead.

use std::time::Instant;

use bda_cpu::linalg;

use bda_cpu::conv4::{CHUNK, Conv4Shape};
use rayon::prelude::*;

/// `C = A·B` (row-major, `A` m×k, `B` k×n), one of the two libraries, single-threaded.
#[derive(Clone, Copy, Debug)]
enum Lib {
    MatrixMultiply,
    Gemm,
}

/// `C ← A·B` with strides (`rs`, `cs` per operand), no threading inside.
#[allow(clippy::too_many_arguments)]
fn gemm(
    lib: Lib,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    par: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    match lib {
        // What the backbone runs (`bda_cpu::linalg::gemm`).
        Lib::MatrixMultiply => linalg::gemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, n, 1),
        // SAFETY: as above. gemm computes dst = alpha·dst + beta·lhs·rhs.
        Lib::Gemm => unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                csa as isize,
                rsa as isize,
                b.as_ptr(),
                csb as isize,
                rsb as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                if par {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                },
            )
        },
    }
}

/// One GEMM shape: `m × k · k × n_per_chunk`, operands transposed or not.
struct Shape {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    /// `A` stored transposed (`k × m`).
    ta: bool,
    /// `B` stored transposed (`n × k`).
    tb: bool,
}

fn strides(rows: usize, cols: usize, t: bool) -> (usize, usize) {
    if t { (1, rows) } else { (cols, 1) }
}

fn main() {
    let arch = Conv4Shape::CONV4;
    let images: usize = 16 * (5 + 75);
    let chunks = images.div_ceil(CHUNK);
    let mut shapes = Vec::new();
    for l in 0..arch.blocks {
        let s = arch.side_at(l);
        let (co, k) = (arch.channels, arch.c_in(l) * 9);
        let n = CHUNK * s * s;
        shapes.push(Shape {
            name: format!("block {l} forward  W·cols"),
            m: co,
            k,
            n,
            ta: false,
            tb: false,
        });
        shapes.push(Shape {
            name: format!("block {l} dW = dZ·colsᵀ"),
            m: co,
            k: n,
            n: k,
            ta: false,
            tb: true,
        });
        if l > 0 {
            shapes.push(Shape {
                name: format!("block {l} dcols = Wᵀ·dZ"),
                m: k,
                k: co,
                n,
                ta: true,
                tb: false,
            });
        }
    }
    println!(
        "threads {}, {} images, chunks of {CHUNK}",
        rayon::current_num_threads(),
        images
    );
    println!(
        "{:<26} {:>16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "GEMM",
        "m×k·k×n (chunk)",
        "mm ms",
        "mm GF/s",
        "gemm ms",
        "gemm GF/s",
        "layer mm",
        "layer gemm"
    );
    let (mut tot_mm, mut tot_g, mut flops) = (0.0, 0.0, 0.0);
    for sh in &shapes {
        let a: Vec<f32> = (0..sh.m * sh.k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
            .collect();
        let b: Vec<f32> = (0..chunks * sh.k * sh.n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01)
            .collect();
        let mut c = vec![0.0f32; chunks * sh.m * sh.n];
        let f = 2.0 * (sh.m * sh.k * sh.n * chunks) as f64;
        let sa = strides(sh.m, sh.k, sh.ta);
        let sb = strides(sh.k, sh.n, sh.tb);
        let time = |lib: Lib, c: &mut Vec<f32>| {
            let run = |c: &mut Vec<f32>| {
                c.par_chunks_mut(sh.m * sh.n)
                    .zip(b.par_chunks(sh.k * sh.n))
                    .for_each(|(cc, bb)| gemm(lib, sh.m, sh.k, sh.n, &a, sa, bb, sb, cc, false));
            };
            run(c);
            let reps = 5;
            let t = Instant::now();
            for _ in 0..reps {
                run(c);
            }
            t.elapsed().as_secs_f64() / reps as f64
        };
        let t_mm = time(Lib::MatrixMultiply, &mut c);
        let ref_c = c.clone();
        let t_g = time(Lib::Gemm, &mut c);
        let err = c
            .iter()
            .zip(&ref_c)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-3, "the two GEMMs disagree by {err}");
        // One GEMM over all images (only for the forward shape, where chunks are contiguous
        // columns when B is laid out k × (chunks·n)).
        let (lay_mm, lay_g) = if !sh.ta && !sh.tb {
            let nn = chunks * sh.n;
            let bl: Vec<f32> = (0..sh.k * nn)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01)
                .collect();
            let mut cl = vec![0.0f32; sh.m * nn];
            let mut lt = |lib: Lib, par: bool| {
                // One warm-up call, then five timed ones.
                let mut t = Instant::now();
                for rep in 0..6 {
                    if rep == 1 {
                        t = Instant::now();
                    }
                    gemm(
                        lib,
                        sh.m,
                        sh.k,
                        nn,
                        &a,
                        (sh.k, 1),
                        &bl,
                        (nn, 1),
                        &mut cl,
                        par,
                    );
                }
                t.elapsed().as_secs_f64() / 5.0
            };
            // matrixmultiply is built without its "threading" feature: one thread.
            (
                format!("{:.2}", 1e3 * lt(Lib::MatrixMultiply, false)),
                format!("{:.2}", 1e3 * lt(Lib::Gemm, true)),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<26} {:>16} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9} {:>9}",
            sh.name,
            format!("{}×{}·{}×{}", sh.m, sh.k, sh.k, sh.n),
            1e3 * t_mm,
            f / t_mm / 1e9,
            1e3 * t_g,
            f / t_g / 1e9,
            lay_mm,
            lay_g
        );
        tot_mm += t_mm;
        tot_g += t_g;
        flops += f;
    }
    println!(
        "{:<26} {:>16} {:>9.2} {:>9.1} {:>9.2} {:>9.1}",
        "all (one meta-step's GEMMs)",
        "",
        1e3 * tot_mm,
        flops / tot_mm / 1e9,
        1e3 * tot_g,
        flops / tot_g / 1e9
    );
}
