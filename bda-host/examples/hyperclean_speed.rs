//! Throughput of the CPU backend's primitives at Fashion-MNIST sizes on random pixel data
//! (no data files needed): `cargo run --release -p bda-host --example hyperclean_speed`.
//!
//! Prints milliseconds per call and the achieved GFLOP/s (a product of `n × d × c`
//! multiply-adds counts `2ndc` FLOPs).

use std::time::Instant;

use bda_host::hyperclean::HostData;
use bda_host::hyperclean::cpu::Cpu;
use bda_kernel::backend::{LowerStep, StepAdjoint, UpperGradient};

fn main() {
    let (n, d, c) = (5000usize, 784usize, 10usize);
    let h = HostData::synthetic(n, n, 8, d, c, 0.5, 1);
    let p = h.problem(1e-4);
    let mut b = Cpu::new(&p).unwrap();
    eprintln!(
        "kernels: {:?}, threads: {}",
        b.kernels(),
        rayon::current_num_threads()
    );
    let x = vec![0.1f32; n];
    let yv: Vec<f32> = (0..p.y_len())
        .map(|i| ((i % 7) as f32 - 3.0) * 1e-3)
        .collect();
    let y = b.y_from(&yv);
    let mut out = b.y_from(&yv);
    let product = 2.0 * (n * d * c) as f64; // FLOPs of one n×d×c product
    let reps = 20;
    let time = |name: &str, products: f64, f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{name:<28} {:8.3} ms  {:6.1} GFLOP/s",
            s * 1e3,
            products * product / s / 1e9
        );
    };
    let packed = bda_host::hyperclean::cpu::Packed::new(&h.val_x, &h.val_labels, d).unwrap();
    let kern = b.kernels();
    time("predict: logits only (1 prod)", 1.0, &mut || {
        std::hint::black_box(bda_host::hyperclean::cpu::predict(kern, &packed, c, &yv));
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
