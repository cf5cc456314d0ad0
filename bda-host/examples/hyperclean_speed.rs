//! Throughput of the CPU backend's primitives at Fashion-MNIST sizes:
//!
//! ```text
//! cargo run --release -p bda-host --example hyperclean_speed                 # random pixels
//! cargo run --release -p bda-host --example hyperclean_speed -- /usr/share/datasets/fashion-mnist
//! ```
//!
//! With a folder of MNIST-format files it times the real split (seed 0), whose all-zero
//! pixel blocks the products skip; without, random pixels with no zero blocks. Prints the
//! best of 5 × 20 calls in milliseconds, the GFLOP/s of the dense product (`2ndc` FLOPs per
//! `n × d × c` product: what a dense implementation would need to match) and the GFLOP/s
//! actually executed (the non-zero blocks only). A closed output pipe (`| head`) ends it
//! quietly.

use std::io::Write;
use std::time::Instant;

use bda_cpu::hyperclean::LinearCpu;
use bda_cpu::hyperclean::packed::{Packed, predict};
use bda_host::hyperclean::HostData;
use bda_kernel::backend::{LowerStep, StepAdjoint, UpperGradient};

/// One line on stdout; a closed pipe ends the program (exit 0), it is not an error.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn main() {
    let (n, d, c) = (5000usize, 784usize, 10usize);
    let h = match std::env::args().nth(1) {
        Some(dir) => HostData::load_mnist(dir.as_ref(), "fashion-mnist", n, n, 0.5, 0)
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            }),
        None => HostData::synthetic(n, n, 8, d, c, 0.5, 1),
    };
    let p = h.problem(1e-4);
    let t = Instant::now();
    let mut b = LinearCpu::new(&p).unwrap();
    let setup = t.elapsed().as_secs_f64();
    let (dt, dv) = b.block_density();
    say(format_args!(
        "data: {}, kernels: {:?}, threads: {}, non-zero blocks: train {:.1} %, val {:.1} %, \
         packing + ordering both sets: {:.0} ms",
        h.dataset,
        b.kernels(),
        rayon::current_num_threads(),
        100.0 * dt,
        100.0 * dv,
        setup * 1e3
    ));
    let x = vec![0.1f32; n];
    let yv: Vec<f32> = (0..p.y_len())
        .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
        .collect();
    let y = b.y_from(&yv);
    let mut out = b.y_from(&yv);
    let product = 2.0 * (n * d * c) as f64; // FLOPs of one dense n×d×c product
    let density = (dt + dv) / 2.0;
    let reps = 20;
    let time = |name: &str, products: f64, f: &mut dyn FnMut()| {
        f();
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let dense = products * product / best / 1e9;
        say(format_args!(
            "{name:<36} {:8.3} ms  {:6.1} GFLOP/s dense-equivalent  {:6.1} executed",
            best * 1e3,
            dense,
            dense * density
        ));
    };
    let kern = b.kernels();
    let packed = Packed::ordered(&h.val.x, &h.val.labels, d).unwrap();
    time("predict: logits only (1 prod)", 1.0, &mut || {
        std::hint::black_box(predict(kern, &packed, c, &yv));
    });
    time("lower_step rhg (2 prod)", 2.0, &mut || {
        b.lower_step(&x, &y, 0.0, 1.0, &mut out).unwrap()
    });
    time("lower_step bda (4 prod)", 4.0, &mut || {
        b.lower_step(&x, &y, 0.1, 0.5, &mut out).unwrap()
    });
    let mut gy = b.y_from(&yv);
    let mut gx = x.clone();
    time("upper_grad (2 prod)", 2.0, &mut || {
        b.upper_grad(&x, &y, &mut gy, &mut gx, 1.0).unwrap();
    });
    let mut a = b.y_from(&yv);
    time("step_adjoint rhg (2 prod, cached p)", 2.0, &mut || {
        b.step_adjoint(&x, &y, 0.0, 1.0, &mut a, &mut gx).unwrap();
    });
    time("step_adjoint bda (4 prod, cached p)", 4.0, &mut || {
        b.step_adjoint(&x, &y, 0.1, 0.5, &mut a, &mut gx).unwrap();
    });
}
