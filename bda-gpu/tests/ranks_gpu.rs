//! Both hyper-cleaning backends on CUDA split over ranks (`with_ranks`), the ranks being
//! threads of one process behind the kernel's collective trait (`bda_cpu::ranks::LocalRanks`,
//! the semantics of the MPI ranks): every product and a whole hypergradient of BDA and RHG give
//! the same bits on every rank and for every number of ranks, and agree with one plain
//! backend. Skips without a CUDA device, and runs once more on the CPU stand-ins of
//! `tests/fake_cuda`, as `gpu.rs`.

use std::sync::Arc;

use bda_cpu::ranks::LocalRanks;
use bda_gpu::{CHUNK_ROWS, GpuDevice, GpuError, GpuVec, HypercleanGpu, HypercleanMlpGpu};
use bda_kernel::Method;
use bda_kernel::backend::{
    Backend, Hypergrad, LowerHessian, LowerStep, MethodConfig, StepAdjoint, UpperGradient,
};
use bda_kernel::collective::Collective;
use bda_testkit::instance::Problem;
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// Chunks of both sets, the last ones short: 3 training chunks, 3 validation chunks.
fn problem(hidden: usize) -> Problem {
    let (n_tr, n_val) = (2 * CHUNK_ROWS + 276, 2 * CHUNK_ROWS + 76);
    Problem::random(99, 13, 5, n_tr, n_val, 0.01).with_hidden(hidden)
}

/// What a backend under test is: either network, plain or split.
trait Under:
    Backend<T = f32, X = GpuVec, Y = GpuVec, Error = GpuError>
    + LowerStep
    + UpperGradient
    + StepAdjoint
    + LowerHessian
{
}
impl<B> Under for B where
    B: Backend<T = f32, X = GpuVec, Y = GpuVec, Error = GpuError>
        + LowerStep
        + UpperGradient
        + StepAdjoint
        + LowerHessian
{
}

fn rand(r: &mut Rng, n: usize, s: f64) -> Vec<f32> {
    (0..n).map(|_| r.range(-s, s)).collect()
}

fn up_y<B: Under>(g: &mut B, v: &[f32]) -> GpuVec {
    let mut b = g.new_y().unwrap();
    g.upload_y(v, &mut b).unwrap();
    b
}

fn up_x<B: Under>(g: &mut B, v: &[f32]) -> GpuVec {
    let mut b = g.new_x().unwrap();
    g.upload_x(v, &mut b).unwrap();
    b
}

fn down_y<B: Under>(g: &mut B, b: &GpuVec) -> Vec<f32> {
    let mut h = vec![0.0; b.len()];
    g.download_y(b, &mut h).unwrap();
    h
}

fn down_x<B: Under>(g: &mut B, b: &GpuVec) -> Vec<f32> {
    let mut h = vec![0.0; b.len()];
    g.download_x(b, &mut h).unwrap();
    h
}

/// Named results, in the order they were computed.
type Record = Vec<(String, Vec<f32>)>;

/// Every product's result, named, on fixed random inputs; then a hypergradient of BDA and
/// of RHG (K = 4).
fn record<B: Under>(g: &mut B, y_len: usize, n_tr: usize) -> Record {
    let mut r = Rng::new(5);
    let (x, y, a, gx0) = (
        rand(&mut r, n_tr, 2.0),
        rand(&mut r, y_len, 0.3),
        rand(&mut r, y_len, 1.0),
        rand(&mut r, n_tr, 0.01),
    );
    let (xb, yb) = (up_x(g, &x), up_y(g, &y));
    let mut out = Vec::new();
    for (w_u, w_l) in [(0.3, 0.7), (0.0, 1.0), (1.0, 0.0)] {
        let mut y_out = g.new_y().unwrap();
        g.lower_step(&xb, &yb, w_u, w_l, &mut y_out).unwrap();
        out.push((format!("lower_step {w_u} {w_l}"), down_y(g, &y_out)));
    }
    let (mut gy, mut gx) = (g.new_y().unwrap(), up_x(g, &gx0));
    let f = g.upper_grad(&xb, &yb, &mut gy, &mut gx, 1.0).unwrap();
    out.push(("F".into(), vec![f]));
    out.push(("upper_grad gy".into(), down_y(g, &gy)));
    for (w_u, w_l) in [(0.3, 0.7), (0.0, 1.0), (1.0, 0.0)] {
        let (mut ab, mut gx) = (up_y(g, &a), up_x(g, &gx0));
        g.step_adjoint(&xb, &yb, w_u, w_l, &mut ab, &mut gx)
            .unwrap();
        out.push((format!("step_adjoint a {w_u} {w_l}"), down_y(g, &ab)));
        out.push((format!("step_adjoint gx {w_u} {w_l}"), down_x(g, &gx)));
    }
    let (vb, mut hv) = (up_y(g, &a), g.new_y().unwrap());
    g.lower_hvp(&xb, &yb, &vb, &mut hv).unwrap();
    out.push(("lower_hvp".into(), down_y(g, &hv)));
    let mut gx = up_x(g, &gx0);
    g.lower_mixed_vjp(&xb, &yb, &vb, 0.5, &mut gx).unwrap();
    out.push(("lower_mixed_vjp".into(), down_x(g, &gx)));
    let mut gx = up_x(g, &gx0);
    g.lower_grad_x(&xb, &yb, 0.5, &mut gx).unwrap();
    out.push(("lower_grad_x".into(), down_x(g, &gx)));
    let bda = MethodConfig {
        s_u: 0.5,
        ..MethodConfig::new(Method::Bda, 4, 0.8f32)
    };
    for (name, cfg) in [("BDA", bda), ("RHG", bda.with_method(Method::Rhg))] {
        let mut hg = Hypergrad::new(g, cfg.build().unwrap()).unwrap();
        let (mut gx, mut y_k) = (g.new_x().unwrap(), g.new_y().unwrap());
        let phi = hg.hypergradient(g, &xb, &yb, &mut gx, &mut y_k).unwrap();
        out.push((format!("{name} φ"), vec![phi]));
        out.push((format!("{name} y_K"), down_y(g, &y_k)));
        out.push((format!("{name} hypergradient"), down_x(g, &gx)));
    }
    out
}

/// One backend per rank of `ranks` (all on the device `cuda::ordinal()`), each recording;
/// `None` without a device.
fn on_ranks<B: Under>(
    ranks: usize,
    open: impl Fn(&GpuDevice, Arc<dyn Collective>) -> B + Sync,
    y_len: usize,
    n_tr: usize,
) -> Option<Vec<Record>> {
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal()))?;
    println!("{}", dev.info());
    Some(LocalRanks::run(ranks, |comm| {
        let mut g = open(&dev, comm);
        record(&mut g, y_len, n_tr)
    }))
}

/// Every rank of every P in 1..=4 has the bits of one rank; one rank agrees with the plain
/// backend.
fn same_bits_for_every_p<B: Under>(
    p: &Problem,
    plain: impl Fn(&GpuDevice) -> B + Sync,
    split: impl Fn(&GpuDevice, Arc<dyn Collective>) -> B + Sync,
    tol: f64,
) {
    let (y_len, n_tr) = (p.y_len(), p.n_tr());
    let Some(one) = on_ranks(1, &split, y_len, n_tr) else {
        return;
    };
    let one = &one[0];
    for ranks in 2..=4 {
        let all = on_ranks(ranks, &split, y_len, n_tr).unwrap();
        for (r, got) in all.iter().enumerate() {
            for ((name, a), (_, b)) in got.iter().zip(one) {
                let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}: rank {r} of {ranks} differs from one rank");
            }
        }
        println!("{ranks} ranks: every result has the bits of one rank");
    }
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal())).unwrap();
    let want = record(&mut plain(&dev), y_len, n_tr);
    for ((name, a), (_, b)) in one.iter().zip(&want) {
        let e = rel_err(
            &a.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
            &b.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        );
        println!("{name}: chunked against plain, relative error {e:.2e}");
        assert!(e < tol, "{name}: {e:.3e} ≥ {tol:.0e}");
    }
}

#[test]
fn softmax_split_over_ranks_has_the_bits_of_one_rank() {
    let p = problem(0);
    let data = p.data();
    same_bits_for_every_p(
        &p,
        |dev| HypercleanGpu::new(dev, &data).unwrap(),
        |dev, comm| {
            HypercleanGpu::new(dev, &data)
                .unwrap()
                .with_ranks(comm)
                .unwrap()
        },
        cuda::tolerance(1e-5, 1e-4),
    );
}

#[test]
fn network_split_over_ranks_has_the_bits_of_one_rank() {
    let p = problem(6);
    let data = p.data();
    same_bits_for_every_p(
        &p,
        |dev| HypercleanMlpGpu::new(dev, &data).unwrap(),
        |dev, comm| {
            HypercleanMlpGpu::new(dev, &data)
                .unwrap()
                .with_ranks(comm)
                .unwrap()
        },
        cuda::tolerance(1e-5, 1e-4),
    );
}

#[test]
fn partial_sums_are_counted_as_resident() {
    let p = problem(0);
    let Some(dev) = cuda::or_skip(GpuDevice::open(cuda::ordinal())) else {
        return;
    };
    let plain = HypercleanGpu::new(&dev, &p.data()).unwrap();
    let before = plain.resident_bytes();
    let split = plain
        .with_ranks(Arc::new(bda_kernel::collective::Solo))
        .unwrap();
    // One rank: 6 chunks' slots and the segment buffer, y_len floats each.
    assert_eq!(split.resident_bytes() - before, 7 * p.y_len() * 4);
    let p = problem(6);
    let plain = HypercleanMlpGpu::new(&dev, &p.data()).unwrap();
    let before = plain.resident_bytes();
    let split = plain
        .with_ranks(Arc::new(bda_kernel::collective::Solo))
        .unwrap();
    assert_eq!(split.resident_bytes() - before, 7 * p.y_len() * 4);
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries.
#[test]
fn all_rank_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda_ranks",
        "all_rank_tests_on_a_fake_device",
    );
}
