//! ICML 2020 Example 1 solved by BDA on a Cortex-M4F (QEMU `mps2-an386`), with
//! `bda-kernel` and no allocator.
//!
//! Runs the configuration of the kernel's doc example from `y0 = (0, 0)` and `y0 = (2, 2)`,
//! in `f32` (the M4F's FPU is single precision) and, with the default feature `f64`, in `f64`
//! (soft-float, for comparison),
//! records a [`History`] of every iteration, prints the results over semihosting and exits
//! with `EXIT_SUCCESS` only if every run ends within `|x − 1| < 0.05` and
//! `‖y − (1, 1)‖ < 0.1`.
#![no_std]
#![no_main]

mod stack;

use bda_kernel::prelude::*;
use bda_kernel::synthetic::icml_example1;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use nalgebra::{Vector1, Vector2};
use panic_semihosting as _;

/// Lower-level steps per hypergradient (K).
const K: u32 = 64;
/// Upper-level iterations (as in the kernel's doc example).
const UL_ITERS: u32 = 300;
/// One History row per iteration plus the final state: nothing is dropped.
const CAP: usize = UL_ITERS as usize + 1;
/// Pass criteria: `|x − 1| < X_TOL` and `‖y − (1, 1)‖ < Y_TOL`.
const X_TOL: f64 = 0.05;
const Y_TOL: f64 = 0.1;
/// Lower-level starting points.
const STARTS: [[f64; 2]; 2] = [[0.0, 0.0], [2.0, 2.0]];

/// The kernel's doc-example configuration (bda-kernel/src/lib.rs), in precision `T`.
fn solver<T: Real>() -> Solver<T, 1, 2> {
    let c = T::from_f64;
    Solver {
        lower: LowerConfig {
            steps: K,
            dynamics: LowerDynamics::Aggregated {
                mu: c(0.5),
                alpha: Schedule::Proposition1 {
                    gamma: c(1.0),
                    beta: c(0.0),
                    eps: c(0.1),
                },
                beta: Beta::Icml,
                s_u: c(0.7),
                s_l: c(0.2),
            },
            projection: Projection::None,
        },
        upper: UpperConfig {
            projection: Projection::cube(c(-100.0), c(100.0)),
            ..UpperConfig::new(c(0.5), UL_ITERS)
        },
    }
}

/// Solve from `x0 = 0`, `y0`, print the outcome; `true` if it meets the criteria.
#[inline(never)]
fn run<T: Real>(precision: &str, y0: [f64; 2]) -> bool {
    let c = T::from_f64;
    let problem = icml_example1::<T>();
    let mut history = History::<T, 1, 2, CAP>::with_reference(&problem);
    let result = solver::<T>().solve(
        &problem,
        &mut ForwardMode,
        &Vector1::new(c(0.0)),
        &Vector2::new(c(y0[0]), c(y0[1])),
        &mut history,
    );
    // Deepest point of the solve alone (this frame, with the History, included).
    let solve_stack = stack::used();
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            hprintln!("{} y0=({}, {}): error: {}", precision, y0[0], y0[1], e);
            return false;
        }
    };
    let (x, y1, y2) = (out.x[0].to_f64(), out.y[0].to_f64(), out.y[1].to_f64());
    let x_err = (x - 1.0).abs();
    let y_err = Scalar::sqrt((y1 - 1.0) * (y1 - 1.0) + (y2 - 1.0) * (y2 - 1.0));
    let ok = x_err < X_TOL && y_err < Y_TOL;
    hprintln!(
        "{} y0=({}, {}): x = {:.6}  y = ({:.6}, {:.6})  iters = {} ({:?})  F = {:.3e}  |grad| = {:.3e}",
        precision,
        y0[0],
        y0[1],
        x,
        y1,
        y2,
        out.iters,
        out.termination,
        out.upper.to_f64(),
        out.grad_norm.to_f64(),
    );
    let first = history
        .records
        .first()
        .and_then(|r| r.x_err)
        .map_or(f64::NAN, T::to_f64);
    let last = history
        .records
        .last()
        .and_then(|r| r.y_err)
        .map_or(f64::NAN, T::to_f64);
    hprintln!(
        "    |x-1| = {:.2e}  |y-y*| = {:.2e}  history: {} rows, {} dropped, |x-x*| {:.3} at t=0, |y-y*| {:.2e} at the end  stack(solve) = {} B  {}",
        x_err,
        y_err,
        history.records.len(),
        history.dropped,
        first,
        last,
        solve_stack,
        if ok { "ok" } else { "FAIL" },
    );
    ok
}

/// Both starts in precision `T`, the stack painted afresh before each: whether all passed,
/// and the deepest stack use (solve and printing).
fn phase<T: Real>(precision: &str) -> (bool, usize) {
    let (mut ok, mut used) = (true, 0);
    for y0 in STARTS {
        stack::repaint();
        ok &= run::<T>(precision, y0);
        used = used.max(stack::used());
    }
    hprintln!(
        "stack, {} phase: {} bytes (History<{}> on the stack: {} bytes)",
        precision,
        used,
        precision,
        core::mem::size_of::<History<'static, T, 1, 2, CAP>>(),
    );
    (ok, used)
}

#[entry]
fn main() -> ! {
    hprintln!(
        "bda-firmware: ICML Example 1, BDA, K = {}, {} UL iterations, lambda = 0.5, mu = 0.5, s_u = 0.7, s_l = 0.2",
        K,
        UL_ITERS
    );
    let mut all_ok = true;
    // Startup, painted by cortex-m-rt's reset handler (`paint-stack`).
    let mut peak = stack::used();

    let (ok, used) = phase::<f32>("f32");
    all_ok &= ok;
    peak = peak.max(used);

    #[cfg(feature = "f64")]
    {
        let (ok, used) = phase::<f64>("f64");
        all_ok &= ok;
        peak = peak.max(used);
    }

    hprintln!(
        "stack used: {} bytes (of {} available)",
        peak,
        stack::capacity()
    );
    if all_ok {
        hprintln!("PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("FAIL");
        debug::exit(debug::EXIT_FAILURE);
    }
    loop {
        cortex_m::asm::wfi();
    }
}
