//! Times the per-step primitives at MNIST hyper-cleaning scale (`n_tr = n_val = 5000`,
//! `d = 784`, `c = 10`) on random data and compares them with the README's traffic estimate:
//!
//! `cargo run --release -p bda-gpu --example step_timing [ordinal] [steps]`
//!
//! Prints `skipped: <reason>` and exits 0 when no CUDA device is usable; with
//! `BDA_REQUIRE_CUDA` set (as in the GPU kit) prints the reason and exits 1 instead.

use std::time::Instant;

use bda_gpu::{GpuDevice, GpuError, HypercleanGpu};
use bda_kernel::backend::{Backend, LowerStep, StepAdjoint};
use bda_kernel::hyperclean::{Classifier, HypercleanData};

fn main() -> Result<(), GpuError> {
    let mut args = std::env::args().skip(1);
    let ordinal: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let steps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let t = Instant::now();
    let dev = match GpuDevice::open(ordinal) {
        Ok(dev) => dev,
        Err(e) if bda_testkit::cuda::required() => {
            eprintln!("step_timing: {}", bda_testkit::cuda::required_message(&e));
            std::process::exit(1);
        }
        Err(e) => {
            println!("skipped: {e}");
            return Ok(());
        }
    };
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let (n_tr, n_val, d, c) = (5000usize, 5000usize, 784usize, 10usize);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let train_x: Vec<f32> = (0..n_tr * d)
        .map(|_| (next() % 256) as f32 / 255.0)
        .collect();
    let val_x: Vec<f32> = (0..n_val * d)
        .map(|_| (next() % 256) as f32 / 255.0)
        .collect();
    let train_labels: Vec<u8> = (0..n_tr).map(|_| (next() % c as u64) as u8).collect();
    let val_labels: Vec<u8> = (0..n_val).map(|_| (next() % c as u64) as u8).collect();
    let data = HypercleanData {
        dim: d,
        classes: c,
        classifier: Classifier::Linear,
        train_x: &train_x,
        train_labels: &train_labels,
        val_x: &val_x,
        val_labels: &val_labels,
        lambda: 1e-3,
    };

    let t = Instant::now();
    let mut gpu = HypercleanGpu::new(&dev, &data)?;
    println!(
        "{} — open {open_ms:.1} ms, upload {:.1} ms",
        gpu.info(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    gpu.warm_up()?;
    println!(
        "NVRTC compile + load for {}: {:.1} ms",
        gpu.arch(),
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "resident data + scratch: {:.1} MB",
        gpu.resident_bytes() as f64 / 1e6
    );

    let x = gpu.new_x()?;
    let (mut y0, mut y1, mut a, mut gx) = (gpu.new_y()?, gpu.new_y()?, gpu.new_y()?, gpu.new_x()?);
    let ld = (d + 1).div_ceil(4) * 4;
    for (name, w_u, rows) in [
        ("RHG lower step (w_u = 0)", 0.0f32, n_tr),
        ("BDA lower step (w_u ≠ 0)", 0.05, n_tr + n_val),
    ] {
        gpu.lower_step(&x, &y0, w_u, 0.1, &mut y1)?; // warm
        gpu.synchronize()?;
        let t = Instant::now();
        for _ in 0..steps / 2 {
            gpu.lower_step(&x, &y0, w_u, 0.1, &mut y1)?;
            gpu.lower_step(&x, &y1, w_u, 0.1, &mut y0)?;
        }
        gpu.synchronize()?;
        report(
            name,
            t.elapsed().as_secs_f64() / (2 * (steps / 2)) as f64,
            rows,
            ld,
            c,
        );
        let t = Instant::now();
        for _ in 0..steps {
            gpu.step_adjoint(&x, &y0, w_u, 0.1, &mut a, &mut gx)?;
        }
        gpu.synchronize()?;
        report(
            "  its step_adjoint",
            t.elapsed().as_secs_f64() / steps as f64,
            rows,
            ld,
            c,
        );
    }
    Ok(())
}

fn report(name: &str, secs: f64, rows: usize, ld: usize, c: usize) {
    let bytes = rows as f64 * (8.0 * ld as f64 + 16.0 * c as f64 + 9.0);
    println!(
        "{name:<28} {:8.1} µs/step   (≈ {:.0} MB moved: {:.0} GB/s effective)",
        secs * 1e6,
        bytes / 1e6,
        bytes / secs / 1e9
    );
}
