//! Few-shot on a CUDA device against f64 references: the conv4 backbone's features and
//! parameter gradient against the kernel's f64 backbone (`fewshot::Network::features`), the
//! batched head run through the kernel's engine (`Hypergrad::unrolled`: BDA, RHG, T-RHG)
//! against per-task runs of `bda_kernel::fewshot::FeatureHead<f64>`, and the whole
//! meta-gradient against central finite differences of the f64 pipeline. Each test prints
//! `skipped: <reason>` and returns when no CUDA device is usable (or fails with the reason
//! when `BDA_REQUIRE_CUDA` is set, as in the GPU kit; device `BDA_GPU_TEST_ORDINAL`, default
//! 0); `all_fewshot_tests_on_a_fake_device` runs them all once more on the CPU stand-ins of
//! `tests/fake_cuda` (so they run on every machine with a C++ compiler). Run with
//! `--nocapture` to see the measured errors.

use bda_gpu::{Episodes, FewshotGpu, GpuDevice, GpuError, HeadDims, HeadGpu, TaskResults};
use bda_kernel::Method;
use bda_kernel::backend::{Backend, Hypergrad, LowerStep, MethodConfig, MethodError, MethodSpec};
use bda_kernel::fewshot::{Conv4Shape, FeatureHead, Network};
use bda_testkit::fd::central_diff;
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// 12 → 6 → 3 → 2 (the last pool exercises ceil mode): 16 features, 348 parameters.
const SHAPE: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 1,
    side: 12,
    blocks: 3,
};

/// Three input channels (MiniImageNet's RGB): 10 → 5 → 3, 36 features.
const RGB: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 3,
    side: 10,
    blocks: 2,
};

/// The opened device, or `None` after printing why there is none (a panic with the reason
/// when `BDA_REQUIRE_CUDA` is set).
fn device() -> Option<GpuDevice> {
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal()))?;
    println!("{}", dev.info());
    Some(dev)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| f64::from(v)).collect()
}

/// The tolerance of a comparison bounded by `hardware` on a GPU (until measured there): 1e-5
/// on the stand-in device, where every comparison of this file measures 5e-7 or less.
fn gpu_tol(hardware: f64) -> f64 {
    cuda::tolerance(1e-5, hardware)
}

fn agree(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("{what}: relative error {e:.2e}");
    assert!(e < tol, "{what}: relative error {e:.3e} ≥ {tol:.0e}");
}

/// PyTorch-like initialisation (uniform ±1/√fan_in), γ and β perturbed around (1, 0) so that
/// their gradients are exercised away from the special values.
fn params(rng: &mut Rng) -> Vec<f64> {
    params_of(SHAPE, rng)
}

fn params_of(a: Conv4Shape, rng: &mut Rng) -> Vec<f64> {
    let mut p = vec![0.0; a.num_params()];
    for l in 0..a.blocks {
        let (w, g, b) = a.offsets(l);
        let bound = 1.0 / ((a.c_in(l) * 9) as f64).sqrt();
        for v in &mut p[w..g] {
            *v = f64::from(rng.range(-bound, bound));
        }
        for v in &mut p[g..b] {
            *v = f64::from(rng.range(0.8, 1.2));
        }
        for v in &mut p[b..b + a.channels] {
            *v = f64::from(rng.range(-0.1, 0.1));
        }
    }
    p
}

/// A meta-batch: `tasks` tasks, 3 ways, 1 shot, 2 queries per class, random images.
struct Batch {
    tasks: usize,
    ways: usize,
    support: usize,
    query: usize,
    images: Vec<f64>,
    images32: Vec<f32>,
    support_labels: Vec<u8>,
    query_labels: Vec<u8>,
}

impl Batch {
    fn new(rng: &mut Rng, tasks: usize) -> Batch {
        let (ways, shots, queries) = (3, 1, 2);
        let labels = |per: usize| -> Vec<u8> {
            (0..tasks)
                .flat_map(|_| (0..ways).flat_map(move |c| std::iter::repeat_n(c as u8, per)))
                .collect()
        };
        let n = tasks * ways * (shots + queries);
        let images = rng.vec64(n * SHAPE.pixels(), 0.0, 1.0);
        Batch {
            tasks,
            ways,
            support: ways * shots,
            query: ways * queries,
            images32: f32s(&images),
            images,
            support_labels: labels(shots),
            query_labels: labels(queries),
        }
    }

    fn n(&self) -> usize {
        self.tasks * (self.support + self.query)
    }

    fn episodes(&self) -> Episodes<'_> {
        Episodes {
            tasks: self.tasks,
            ways: self.ways,
            support: self.support,
            query: self.query,
            images: &self.images32,
            support_labels: &self.support_labels,
            query_labels: &self.query_labels,
        }
    }

    /// Task `t`'s features (support rows, then query rows) out of the batch's.
    fn task_x(&self, feats: &[f64], t: usize, nf: usize) -> Vec<f64> {
        let s = &feats[t * self.support * nf..][..self.support * nf];
        let q0 = self.tasks * self.support + t * self.query;
        let q = &feats[q0 * nf..][..self.query * nf];
        s.iter().chain(q).copied().collect()
    }

    /// Task `t`'s head problem, the f64 reference.
    fn task_head(&self, t: usize, nf: usize, l2: f64) -> FeatureHead<f64> {
        FeatureHead::new(
            nf,
            self.ways,
            self.support_labels[t * self.support..][..self.support].to_vec(),
            self.query_labels[t * self.query..][..self.query].to_vec(),
            l2,
        )
    }
}

/// The method's hypergradient of one task's head in f64: `(φ_K, ∂φ_K/∂x, y_K)`.
fn task_run(
    head: &mut FeatureHead<f64>,
    spec: MethodSpec<f64>,
    x: &[f64],
) -> (f64, Vec<f64>, Vec<f64>) {
    let mut hg = Hypergrad::unrolled(head, spec).expect("an unrolled method");
    let y0 = head.new_y().unwrap();
    let (mut gx, mut y) = (head.new_x().unwrap(), head.new_y().unwrap());
    let phi = hg
        .hypergradient(head, &x.to_vec(), &y0, &mut gx, &mut y)
        .unwrap();
    (phi, gx, y)
}

/// The f64 pipeline: per-task `(φ_K, query accuracy)` at `params`.
fn reference_meta(p: &[f64], b: &Batch, spec: MethodSpec<f64>, l2: f64) -> Vec<(f64, f64)> {
    let nf = SHAPE.features();
    let feats = Network::features(&SHAPE, p, &b.images, b.n());
    (0..b.tasks)
        .map(|t| {
            let x = b.task_x(&feats, t, nf);
            let mut head = b.task_head(t, nf, l2);
            let (phi, _, y) = task_run(&mut head, spec, &x);
            (phi, head.accuracy(&x, &y))
        })
        .collect()
}

#[test]
fn backbone_features_agree() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(1);
    let p = params(&mut rng);
    let n = 7;
    let images = rng.vec64(n * SHAPE.pixels(), 0.0, 1.0);
    let want = Network::features(&SHAPE, &p, &images, n);
    let mut gpu = FewshotGpu::new(&dev, SHAPE).expect("open the backend");
    let got = gpu.features(&f32s(&p), &f32s(&images), n).unwrap();
    agree("conv4 features", &f64s(&got), &want, gpu_tol(1e-4));
    // One image per im2col chunk: the same features.
    gpu.set_col_budget(1);
    let chunked = gpu.features(&f32s(&p), &f32s(&images), n).unwrap();
    agree(
        "conv4 features, chunked",
        &f64s(&chunked),
        &want,
        gpu_tol(1e-4),
    );
}

/// Channel-major RGB images: features and parameter gradient against the reference (which
/// reads `[image][channel][row][column]` directly, so a wrong transposition shows).
#[test]
fn rgb_backbone_agrees() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(11);
    let p = params_of(RGB, &mut rng);
    let n = 5;
    let images = rng.vec64(n * RGB.pixels(), 0.0, 1.0);
    let mut gpu = FewshotGpu::new(&dev, RGB).expect("open the backend");
    let got = gpu.features(&f32s(&p), &f32s(&images), n).unwrap();
    agree(
        "rgb features",
        &f64s(&got),
        &Network::features(&RGB, &p, &images, n),
        gpu_tol(1e-4),
    );
    let dfeats = rng.vec64(n * RGB.features(), -1.0, 1.0);
    let loss = |p: &[f64]| -> f64 {
        Network::features(&RGB, p, &images, n)
            .iter()
            .zip(&dfeats)
            .map(|(f, d)| f * d)
            .sum()
    };
    let want = central_diff(loss, &p, 1e-6, p.len());
    let mut grad = vec![0.0f32; p.len()];
    gpu.backbone_gradient(&f32s(&p), &f32s(&images), n, &f32s(&dfeats), &mut grad)
        .unwrap();
    let (w0, g0, _) = RGB.offsets(0);
    agree(
        "rgb block 0 W",
        &f64s(&grad)[w0..g0],
        &want[w0..g0],
        gpu_tol(2e-3),
    );
    agree("rgb gradient", &f64s(&grad), &want, gpu_tol(1e-3));
}

#[test]
fn backbone_gradient_matches_finite_differences() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(2);
    let p = params(&mut rng);
    let n = 6;
    let images = rng.vec64(n * SHAPE.pixels(), 0.0, 1.0);
    let dfeats = rng.vec64(n * SHAPE.features(), -1.0, 1.0);
    // L(p) = ⟨dfeats, features(p)⟩, every parameter by central differences in f64.
    let loss = |p: &[f64]| -> f64 {
        Network::features(&SHAPE, p, &images, n)
            .iter()
            .zip(&dfeats)
            .map(|(f, d)| f * d)
            .sum()
    };
    let want = central_diff(loss, &p, 1e-6, p.len());
    let mut gpu = FewshotGpu::new(&dev, SHAPE).expect("open the backend");
    for budget in [usize::MAX, 200] {
        gpu.set_col_budget(budget);
        let mut grad = vec![0.0f32; p.len()];
        gpu.backbone_gradient(&f32s(&p), &f32s(&images), n, &f32s(&dfeats), &mut grad)
            .unwrap();
        let got = f64s(&grad);
        agree(
            &format!("conv4 parameter gradient (col budget {budget})"),
            &got,
            &want,
            gpu_tol(1e-3),
        );
        // Each block's weights, γ and β separately (a small block must not hide in the max).
        for l in 0..SHAPE.blocks {
            let (w, g, b) = SHAPE.offsets(l);
            for (name, r) in [("W", w..g), ("γ", g..b), ("β", b..b + SHAPE.channels)] {
                agree(
                    &format!("  block {l} {name}"),
                    &got[r.clone()],
                    &want[r],
                    gpu_tol(2e-3),
                );
            }
        }
    }
}

fn head_dims() -> HeadDims {
    HeadDims {
        tasks: 3,
        ways: 4,
        support: 8,
        query: 12,
        dim: 10,
    }
}

/// BDA (`s_u = 0.5`), RHG and T-RHG (T = `truncate`), all with `s_l` = `step` and K = `steps`.
fn unrolled_methods(
    steps: u32,
    step: f64,
    truncate: u32,
) -> [(&'static str, MethodConfig<f64>); 3] {
    let rhg = MethodConfig::new(Method::Rhg, steps, step);
    [
        (
            "BDA",
            MethodConfig {
                s_u: 0.5,
                ..rhg.with_method(Method::Bda)
            },
        ),
        ("RHG", rhg),
        (
            "T-RHG",
            MethodConfig {
                truncate: Some(truncate),
                ..rhg.with_method(Method::Trhg)
            },
        ),
    ]
}

#[test]
fn batched_head_equals_per_task_runs() {
    let Some(dev) = device() else { return };
    let d = head_dims();
    let mut rng = Rng::new(3);
    let x = rng.vec64(d.x_len(), -1.0, 1.0);
    let lab =
        |rng: &mut Rng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.below(d.ways) as u8).collect() };
    let support = lab(&mut rng, d.tasks * d.support);
    let query = lab(&mut rng, d.tasks * d.query);
    let l2 = 0.05;
    let mut gpu = HeadGpu::open(&dev, d, l2 as f32).expect("open the head");
    gpu.set_labels(&support, &query).unwrap();
    let mut xb = gpu.new_x().unwrap();
    gpu.upload_x(&f32s(&x), &mut xb).unwrap();
    let batch = Batch {
        tasks: d.tasks,
        ways: d.ways,
        support: d.support,
        query: d.query,
        images: Vec::new(),
        images32: Vec::new(),
        support_labels: support.clone(),
        query_labels: query.clone(),
    };
    for (name, cfg) in unrolled_methods(6, 0.8, 2) {
        let spec32 = cfg.cast::<f32>().build().expect("a valid method");
        let mut hg = Hypergrad::unrolled(&mut gpu, spec32).expect("an unrolled method");
        let y0 = gpu.new_y().unwrap();
        let (mut gx, mut y_out) = (gpu.new_x().unwrap(), gpu.new_y().unwrap());
        let phi = hg
            .hypergradient(&mut gpu, &xb, &y0, &mut gx, &mut y_out)
            .unwrap();
        let losses = f64s(gpu.task_losses());
        let hits = gpu.task_hits().to_vec();
        let mut y_host = vec![0.0f32; d.y_len()];
        gpu.download_y(&y_out, &mut y_host).unwrap();
        let mut gx_host = vec![0.0f32; d.x_len()];
        gpu.download_x(&gx, &mut gx_host).unwrap();
        let (y_host, gx_host) = (f64s(&y_host), f64s(&gx_host));

        let spec64 = cfg.build().expect("a valid method");
        let per = (d.dim + 1) * d.ways;
        let mut want_loss = Vec::new();
        for t in 0..d.tasks {
            let xt = batch.task_x(&x, t, d.dim);
            let mut head = batch.task_head(t, d.dim, l2);
            let (v, gxt, y) = task_run(&mut head, spec64, &xt);
            want_loss.push(v);
            agree(
                &format!("{name} task {t} y_K"),
                &y_host[t * per..][..per],
                &y,
                gpu_tol(1e-4),
            );
            let got_gx = batch.task_x(&gx_host, t, d.dim);
            agree(
                &format!("{name} task {t} hypergradient"),
                &got_gx,
                &gxt,
                gpu_tol(1e-4),
            );
            assert_eq!(
                f64::from(hits[t]) / d.query as f64,
                head.accuracy(&xt, &y),
                "{name} task {t}: query hits"
            );
        }
        agree(&format!("{name} φ_K per task"), &losses, &want_loss, 1e-5);
        let total: f64 = want_loss.iter().sum();
        assert!(
            (f64::from(phi) - total).abs() < 1e-5 * total,
            "{name}: Σ φ {phi} vs {total}"
        );
    }
}

#[test]
fn meta_gradient_matches_finite_differences() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(4);
    let p = params(&mut rng);
    let b = Batch::new(&mut rng, 2);
    let (steps, l2) = (3, 0.01);
    let mut gpu = FewshotGpu::new(&dev, SHAPE).expect("open the backend");
    let ep = b.episodes();
    let meta = |gpu: &mut FewshotGpu, cfg: &MethodConfig<f64>, grad: &mut [f32]| -> TaskResults {
        let spec = cfg.cast::<f32>().build().expect("a valid method");
        gpu.meta_gradient(&f32s(&p), &ep, &spec, l2 as f32, grad)
            .unwrap()
    };
    for (name, cfg) in unrolled_methods(steps, 0.5, 1) {
        let mut grad = vec![0.0f32; p.len()];
        let res = meta(&mut gpu, &cfg, &mut grad);
        let spec64 = cfg.build().expect("a valid method");
        let want = reference_meta(&p, &b, spec64, l2);
        let want_loss: Vec<f64> = want.iter().map(|w| w.0).collect();
        agree(
            &format!("{name} φ_K per task"),
            &f64s(&res.loss),
            &want_loss,
            gpu_tol(1e-4),
        );
        let want_acc: Vec<f64> = want.iter().map(|w| w.1).collect();
        assert_eq!(res.accuracy, want_acc, "{name}: query accuracy per task");
        if cfg.method == Method::Trhg {
            // T-RHG's gradient is not the gradient of φ_K: only values are compared.
            continue;
        }
        // ∂(mean φ)/∂p by central differences of the f64 pipeline, every parameter.
        let mean_phi = |q: &[f64]| -> f64 {
            let r = reference_meta(q, &b, spec64, l2);
            r.iter().map(|v| v.0).sum::<f64>() / b.tasks as f64
        };
        let fd = central_diff(mean_phi, &p, 1e-6, p.len());
        agree(
            &format!("{name} meta-gradient"),
            &f64s(&grad),
            &fd,
            gpu_tol(2e-3),
        );
    }
    // T-RHG with T = K is RHG.
    let rhg = MethodConfig::new(Method::Rhg, steps, 0.5);
    let full = MethodConfig {
        truncate: Some(steps),
        ..rhg.with_method(Method::Trhg)
    };
    let (mut g1, mut g2) = (vec![0.0f32; p.len()], vec![0.0f32; p.len()]);
    meta(&mut gpu, &rhg, &mut g1);
    meta(&mut gpu, &full, &mut g2);
    agree("T-RHG with T = K vs RHG", &f64s(&g2), &f64s(&g1), 1e-6);
}

#[test]
fn evaluation_agrees() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(5);
    let p = params(&mut rng);
    let b = Batch::new(&mut rng, 3);
    let (steps, lr, l2) = (4, 0.5, 0.0);
    let mut gpu = FewshotGpu::new(&dev, SHAPE).expect("open the backend");
    // The evaluation procedure: plain steps on the support set (whatever the method trains).
    let cfg = MethodConfig {
        s_u: 0.3,
        ..MethodConfig::new(Method::Bda, steps, lr)
    };
    let spec = cfg
        .cast::<f32>()
        .build()
        .expect("a valid method")
        .lower_only();
    let got = gpu
        .evaluate(&f32s(&p), &b.episodes(), &spec, l2 as f32)
        .unwrap();
    let nf = SHAPE.features();
    let feats = Network::features(&SHAPE, &p, &b.images, b.n());
    let want: Vec<f64> = (0..b.tasks)
        .map(|t| {
            let x = b.task_x(&feats, t, nf);
            let mut head = b.task_head(t, nf, l2);
            let mut y = head.new_y().unwrap();
            let mut next = y.clone();
            for _ in 1..=steps {
                // y ← y − lr·∇_y f: the support set alone.
                head.lower_step(&x, &y, 0.0, lr, &mut next).unwrap();
                std::mem::swap(&mut y, &mut next);
            }
            head.accuracy(&x, &y)
        })
        .collect();
    println!("evaluation accuracies {got:?} (reference {want:?})");
    assert_eq!(got, want);
}

#[test]
fn bad_inputs_are_errors() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(6);
    let b = Batch::new(&mut rng, 2);
    let p = vec![0.1f32; SHAPE.num_params()];
    let mut gpu = FewshotGpu::new(&dev, SHAPE).expect("open the backend");
    let spec = MethodConfig::new(Method::Rhg, 2, 0.1f32)
        .build()
        .expect("a valid method");
    let bad_labels: Vec<u8> = b.support_labels.iter().map(|_| 7).collect();
    let ep = Episodes {
        support_labels: &bad_labels,
        ..b.episodes()
    };
    let err = gpu.evaluate(&p, &ep, &spec, 0.0).unwrap_err();
    assert_eq!(
        err,
        MethodError::Backend(GpuError::Data("a label is not below the number of classes"))
    );
    let short = Episodes {
        images: &b.images32[1..],
        ..b.episodes()
    };
    assert!(matches!(
        gpu.evaluate(&p, &short, &spec, 0.0),
        Err(MethodError::Backend(GpuError::Shape { .. }))
    ));
    assert!(matches!(
        gpu.features(&p[1..], &b.images32, b.n()),
        Err(GpuError::Shape { .. })
    ));
    let mut small = vec![0.0f32; 3];
    assert!(
        gpu.meta_gradient(&p, &b.episodes(), &spec, 0.0, &mut small)
            .is_err()
    );
    // IHG and O-BDA need Hessian products, which the batched head does not provide.
    let ihg = MethodConfig::new(Method::Ihg, 2, 0.1f32).build().unwrap();
    let mut grad = vec![0.0f32; SHAPE.num_params()];
    assert_eq!(
        gpu.meta_gradient(&p, &b.episodes(), &ihg, 0.0, &mut grad),
        Err(MethodError::Unsupported {
            method: Method::Ihg
        })
    );
}

/// With `BDA_REQUIRE_CUDA` set, a test that finds no usable device fails with the reason.
#[test]
fn a_required_device_that_is_missing_fails() {
    cuda::assert_required_fails("backbone_features_agree");
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries.
#[test]
fn all_fewshot_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda_fewshot",
        "all_fewshot_tests_on_a_fake_device",
    );
}
