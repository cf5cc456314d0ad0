//! Throughput of the kernel: lower-level steps per second and hypergradients per second,
//! for (N, M) = (1, 2) (ICML Example 1) and (50, 100) (journal Eq. 40), in f32 and f64,
//! with analytic derivatives and with dual numbers ([`AutoDiff`]).
//!
//! `cargo bench -p bda-kernel --bench kernel`

use std::hint::black_box;

use bda_kernel::HypergradientMethod;
use bda_kernel::prelude::*;
use bda_kernel::synthetic::{Eq40Lower, Eq40Upper, Example1Lower, Example1Upper};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nalgebra::SVector;

/// LL steps per solve: long enough that the call overhead disappears.
const LL_STEPS: u32 = 1000;
/// K of the hypergradient benchmark.
const HG_STEPS: u32 = 16;

fn lower<T: Real, const M: usize>(steps: u32) -> LowerConfig<T, M> {
    LowerConfig {
        steps,
        dynamics: LowerDynamics::bda(T::from_f64(0.01), T::from_f64(0.2)),
        projection: Projection::None,
    }
}

fn bench_problem<T, U, L, const N: usize, const M: usize>(
    c: &mut Criterion,
    name: &str,
    problem: &Bilevel<U, L>,
    x: SVector<T, N>,
    y0: SVector<T, M>,
) where
    T: Real,
    U: Objective<T, N, M> + Gradient<T, N, M> + SecondOrder<T, N, M>,
    L: Objective<T, N, M> + Gradient<T, N, M> + SecondOrder<T, N, M>,
{
    let mut g = c.benchmark_group("ll_steps");
    g.throughput(Throughput::Elements(LL_STEPS as u64));
    let cfg = lower::<T, M>(LL_STEPS);
    g.bench_function(name, |b| {
        b.iter(|| {
            cfg.solve(problem, black_box(&x), black_box(&y0), 0)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hypergradients");
    g.throughput(Throughput::Elements(1));
    let cfg = lower::<T, M>(HG_STEPS);
    g.bench_function(format!("{name}/K={HG_STEPS}"), |b| {
        b.iter(|| {
            ForwardMode
                .hypergradient(problem, &cfg, black_box(&x), black_box(&y0), 0)
                .unwrap()
        })
    });
    g.finish();
}

fn small(c: &mut Criterion) {
    macro_rules! run {
        ($t:ty) => {{
            let x = SVector::<$t, 1>::new(0.3);
            let y0 = SVector::<$t, 2>::new(0.0, 2.0);
            let analytic = Bilevel::new(Example1Upper, Example1Lower::<$t> { eps: 0.0 });
            let dual = Bilevel::new(
                AutoDiff(Example1Upper),
                AutoDiff(Example1Lower::<$t> { eps: 0.0 }),
            );
            bench_problem(
                c,
                concat!("(1,2)/", stringify!($t), "/analytic"),
                &analytic,
                x,
                y0,
            );
            bench_problem(c, concat!("(1,2)/", stringify!($t), "/dual"), &dual, x, y0);
        }};
    }
    run!(f64);
    run!(f32);
}

fn large(c: &mut Criterion) {
    macro_rules! run {
        ($t:ty) => {{
            let x = SVector::<$t, 50>::from_fn(|i, _| 0.01 * i as $t);
            let y0 = SVector::<$t, 100>::repeat(0.5);
            let analytic = Bilevel::new(Eq40Upper::<50, 100>, Eq40Lower::<50, 100>);
            let dual = Bilevel::new(
                AutoDiff(Eq40Upper::<50, 100>),
                AutoDiff(Eq40Lower::<50, 100>),
            );
            bench_problem(
                c,
                concat!("(50,100)/", stringify!($t), "/analytic"),
                &analytic,
                x,
                y0,
            );
            bench_problem(
                c,
                concat!("(50,100)/", stringify!($t), "/dual"),
                &dual,
                x,
                y0,
            );
        }};
    }
    run!(f64);
    run!(f32);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = small, large
}
criterion_main!(benches);
