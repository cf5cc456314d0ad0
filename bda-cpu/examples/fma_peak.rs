//! This machine's f32 FMA peak, measured rather than taken from a clock rate: every thread
//! runs 12 independent chains of 8-lane FMAs (more than the 2 units × 5 cycles of latency
//! need), nothing but registers. The bounds in docs/ divide by what it prints.
//!
//! ```text
//! cargo run --release -p bda-cpu --example fma_peak          # 1 thread, then 2, ... up to the cores
//! ```
//!
//! On a machine without AVX2 and FMA it says so and exits.

use std::time::Instant;

/// FMAs per chain per thread.
const ITERS: usize = 200_000_000;
/// Independent accumulators (vectors) per thread.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    // The results are used, so the loop is not removed.
    acc.iter()
        .map(|&a| {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
            lanes[0]
        })
        .sum()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            println!("no AVX2 + FMA on this CPU");
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for threads in 1..=cores {
            let t = Instant::now();
            let handles: Vec<_> = (0..threads)
                // SAFETY: AVX2 and FMA were detected above.
                .map(|_| std::thread::spawn(|| unsafe { chains(ITERS) }))
                .collect();
            let check: f32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let secs = t.elapsed().as_secs_f64();
            let flops = (threads * ITERS * CHAINS * 16) as f64; // 8 lanes × 2 FLOPs
            println!(
                "{threads} thread(s): {:.1} GFLOP/s f32 FMA ({:.1} per thread; check {check:.3})",
                flops / secs / 1e9,
                flops / secs / 1e9 / threads as f64
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("the measured kernel is x86-64 AVX2 + FMA");
}
