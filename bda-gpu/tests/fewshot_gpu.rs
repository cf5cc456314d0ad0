//! Few-shot on a CUDA device against the f64 references of `tests/fewshot_ref`: the conv4
//! backbone's features and parameter gradient, the batched head run through the kernel's
//! `unrolled` (BDA, RHG, T-RHG) against per-task runs, and the whole meta-gradient against
//! central finite differences of the f64 pipeline. Each test prints `skipped: <reason>` and
//! returns when no CUDA device is usable; `all_fewshot_tests_on_a_fake_device` runs them all
//! once more on the CPU stand-ins of `tests/fake_cuda` (so they run on every machine with a
//! C++ compiler). Run with `--nocapture` to see the measured errors.

mod cxx;
mod fewshot_ref;

use bda_gpu::{
    Conv4Shape, Episodes, FewshotGpu, GpuError, GpuVec, HeadDims, HeadGpu, HeadProcedure, probe,
};
use bda_kernel::backend::{Backend, tape_len, unrolled};
use bda_kernel::schedule::LowerDynamics;
use fewshot_ref::{Rng, TaskHead, conv4_forward, rel_err};

/// 12 → 6 → 3 → 2 (the last pool exercises ceil mode): 16 features, 348 parameters.
const SHAPE: Conv4Shape = Conv4Shape {
    channels: 4,
    side: 12,
    blocks: 3,
};

fn skip_without_device() -> bool {
    match probe(0) {
        Ok(info) => {
            println!("{info}");
            false
        }
        Err(e) => {
            println!("skipped: {e}");
            true
        }
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| f64::from(v)).collect()
}

fn agree(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    println!("{what}: relative error {e:.2e}");
    assert!(e < tol, "{what}: relative error {e:.3e} ≥ {tol:.0e}");
}

/// PyTorch-like initialisation (uniform ±1/√fan_in), γ and β perturbed around (1, 0) so that
/// their gradients are exercised away from the special values.
fn params(rng: &mut Rng) -> Vec<f64> {
    let a = SHAPE;
    let mut p = vec![0.0; a.num_params()];
    for l in 0..a.blocks {
        let (w, g, b) = a.offsets(l);
        let bound = 1.0 / ((a.c_in(l) * 9) as f64).sqrt();
        for v in &mut p[w..g] {
            *v = rng.range(-bound, bound);
        }
        for v in &mut p[g..b] {
            *v = rng.range(0.8, 1.2);
        }
        for v in &mut p[b..b + a.channels] {
            *v = rng.range(-0.1, 0.1);
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
        Batch {
            tasks,
            ways,
            support: ways * shots,
            query: ways * queries,
            images: rng.vec(n * SHAPE.pixels(), 0.0, 1.0),
            support_labels: labels(shots),
            query_labels: labels(queries),
        }
    }

    fn n(&self) -> usize {
        self.tasks * (self.support + self.query)
    }

    /// Task `t`'s features (support rows, then query rows) out of the batch's.
    fn task_x(&self, feats: &[f64], t: usize, nf: usize) -> Vec<f64> {
        let s = &feats[t * self.support * nf..][..self.support * nf];
        let q0 = self.tasks * self.support + t * self.query;
        let q = &feats[q0 * nf..][..self.query * nf];
        s.iter().chain(q).copied().collect()
    }

    fn task_head(&self, t: usize, nf: usize, l2: f64) -> TaskHead {
        TaskHead {
            dim: nf,
            ways: self.ways,
            support_labels: self.support_labels[t * self.support..][..self.support].to_vec(),
            query_labels: self.query_labels[t * self.query..][..self.query].to_vec(),
            l2,
        }
    }
}

/// The f64 pipeline: per-task `(φ_K, query hits)` at `params`.
fn reference_meta(
    p: &[f64],
    b: &Batch,
    dynamics: &LowerDynamics<f64>,
    steps: u32,
    truncate: Option<u32>,
    l2: f64,
) -> Vec<(f64, usize)> {
    let nf = SHAPE.features();
    let feats = conv4_forward(&SHAPE, p, &b.images, b.n());
    (0..b.tasks)
        .map(|t| {
            let x = b.task_x(&feats, t, nf);
            let mut head = b.task_head(t, nf, l2);
            let y0 = head.new_y().unwrap();
            let mut tape = vec![y0.clone(); tape_len(steps, truncate)];
            let (mut adj, mut y) = (y0.clone(), y0.clone());
            let mut gx = head.new_x().unwrap();
            let phi = unrolled(
                &mut head, &x, &y0, dynamics, steps, truncate, &mut tape, &mut adj, &mut gx, &mut y,
            )
            .unwrap();
            (phi, head.hits(&x, &y))
        })
        .collect()
}

#[test]
fn backbone_features_agree() {
    if skip_without_device() {
        return;
    }
    let mut rng = Rng::new(1);
    let p = params(&mut rng);
    let n = 7;
    let images = rng.vec(n * SHAPE.pixels(), 0.0, 1.0);
    let want = conv4_forward(&SHAPE, &p, &images, n);
    let mut gpu = FewshotGpu::new(0, SHAPE).expect("open the device");
    let got = gpu.features(&f32s(&p), &f32s(&images), n).unwrap();
    agree("conv4 features", &f64s(&got), &want, 1e-4);
    // One image per im2col chunk: the same features.
    gpu.set_col_budget(1);
    let chunked = gpu.features(&f32s(&p), &f32s(&images), n).unwrap();
    agree("conv4 features, chunked", &f64s(&chunked), &want, 1e-4);
}

#[test]
fn backbone_gradient_matches_finite_differences() {
    if skip_without_device() {
        return;
    }
    let mut rng = Rng::new(2);
    let p = params(&mut rng);
    let n = 6;
    let images = rng.vec(n * SHAPE.pixels(), 0.0, 1.0);
    let dfeats = rng.vec(n * SHAPE.features(), -1.0, 1.0);
    // L(p) = ⟨dfeats, features(p)⟩, every parameter by central differences in f64.
    let loss = |p: &[f64]| -> f64 {
        conv4_forward(&SHAPE, p, &images, n)
            .iter()
            .zip(&dfeats)
            .map(|(f, d)| f * d)
            .sum()
    };
    let h = 1e-6;
    let mut q = p.clone();
    let want: Vec<f64> = (0..p.len())
        .map(|i| {
            q[i] = p[i] + h;
            let up = loss(&q);
            q[i] = p[i] - h;
            let down = loss(&q);
            q[i] = p[i];
            (up - down) / (2.0 * h)
        })
        .collect();
    let mut gpu = FewshotGpu::new(0, SHAPE).expect("open the device");
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
            1e-3,
        );
        // Each block's weights, γ and β separately (a small block must not hide in the max).
        for l in 0..SHAPE.blocks {
            let (w, g, b) = SHAPE.offsets(l);
            for (name, r) in [("W", w..g), ("γ", g..b), ("β", b..b + SHAPE.channels)] {
                agree(
                    &format!("  block {l} {name}"),
                    &got[r.clone()],
                    &want[r],
                    2e-3,
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

#[test]
fn batched_head_equals_per_task_runs() {
    if skip_without_device() {
        return;
    }
    let d = head_dims();
    let mut rng = Rng::new(3);
    let x = rng.vec(d.x_len(), -1.0, 1.0);
    let lab = |rng: &mut Rng, n: usize| -> Vec<u8> {
        (0..n).map(|_| (rng.next() % d.ways as u64) as u8).collect()
    };
    let support = lab(&mut rng, d.tasks * d.support);
    let query = lab(&mut rng, d.tasks * d.query);
    let l2 = 0.05;
    let mut gpu = HeadGpu::open(0, d, l2 as f32).expect("open the device");
    gpu.set_labels(&support, &query).unwrap();
    let mut xb = gpu.new_x().unwrap();
    gpu.upload_x(&f32s(&x), &mut xb).unwrap();
    let batch = Batch {
        tasks: d.tasks,
        ways: d.ways,
        support: d.support,
        query: d.query,
        images: Vec::new(),
        support_labels: support.clone(),
        query_labels: query.clone(),
    };
    let k = 6;
    let cases = [
        ("BDA", LowerDynamics::bda(0.5f64, 0.8), None),
        ("RHG", LowerDynamics::LowerOnly { s_l: 0.8 }, None),
        ("T-RHG", LowerDynamics::LowerOnly { s_l: 0.8 }, Some(2)),
    ];
    for (name, dyn64, truncate) in cases {
        let dyn32 = match dyn64 {
            LowerDynamics::LowerOnly { s_l } => LowerDynamics::LowerOnly { s_l: s_l as f32 },
            _ => LowerDynamics::bda(0.5f32, 0.8),
        };
        let n = tape_len(k, truncate);
        let mut tape: Vec<GpuVec> = (0..n).map(|_| gpu.new_y().unwrap()).collect();
        let (y0, mut adj, mut y_out) = (
            gpu.new_y().unwrap(),
            gpu.new_y().unwrap(),
            gpu.new_y().unwrap(),
        );
        let mut gx = gpu.new_x().unwrap();
        let phi = unrolled(
            &mut gpu, &xb, &y0, &dyn32, k, truncate, &mut tape, &mut adj, &mut gx, &mut y_out,
        )
        .unwrap();
        let losses = f64s(gpu.task_losses());
        let hits = gpu.task_hits().to_vec();
        let mut y_host = vec![0.0f32; d.y_len()];
        gpu.download_y(&y_out, &mut y_host).unwrap();
        let mut gx_host = vec![0.0f32; d.x_len()];
        gpu.download_x(&gx, &mut gx_host).unwrap();
        let (y_host, gx_host) = (f64s(&y_host), f64s(&gx_host));

        let per = (d.dim + 1) * d.ways;
        let mut want_loss = Vec::new();
        for t in 0..d.tasks {
            let xt = batch.task_x(&x, t, d.dim);
            let mut head = batch.task_head(t, d.dim, l2);
            let y0 = head.new_y().unwrap();
            let mut tape = vec![y0.clone(); n];
            let (mut adj, mut y) = (y0.clone(), y0.clone());
            let mut gxt = head.new_x().unwrap();
            let v = unrolled(
                &mut head, &xt, &y0, &dyn64, k, truncate, &mut tape, &mut adj, &mut gxt, &mut y,
            )
            .unwrap();
            want_loss.push(v);
            agree(
                &format!("{name} task {t} y_K"),
                &y_host[t * per..][..per],
                &y,
                1e-4,
            );
            let got_gx = batch.task_x(&gx_host, t, d.dim);
            agree(
                &format!("{name} task {t} hypergradient"),
                &got_gx,
                &gxt,
                1e-4,
            );
            assert_eq!(
                hits[t] as usize,
                head.hits(&xt, &y),
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
    if skip_without_device() {
        return;
    }
    let mut rng = Rng::new(4);
    let p = params(&mut rng);
    let b = Batch::new(&mut rng, 2);
    let (steps, l2) = (3, 0.01);
    let mut gpu = FewshotGpu::new(0, SHAPE).expect("open the device");
    let cases = [
        ("BDA", LowerDynamics::bda(0.5f64, 0.5), None),
        ("RHG", LowerDynamics::LowerOnly { s_l: 0.5 }, None),
        ("T-RHG", LowerDynamics::LowerOnly { s_l: 0.5 }, Some(1)),
    ];
    let images = f32s(&b.images);
    let ep = Episodes {
        tasks: b.tasks,
        ways: b.ways,
        support: b.support,
        query: b.query,
        images: &images,
        support_labels: &b.support_labels,
        query_labels: &b.query_labels,
    };
    for (name, dyn64, truncate) in cases {
        let dyn32 = match dyn64 {
            LowerDynamics::LowerOnly { s_l } => LowerDynamics::LowerOnly { s_l: s_l as f32 },
            _ => LowerDynamics::bda(0.5f32, 0.5),
        };
        let proc = HeadProcedure {
            dynamics: dyn32,
            steps,
            truncate,
            l2: l2 as f32,
        };
        let mut grad = vec![0.0f32; p.len()];
        let res = gpu.meta_gradient(&f32s(&p), &ep, &proc, &mut grad).unwrap();
        let want = reference_meta(&p, &b, &dyn64, steps, truncate, l2);
        let want_loss: Vec<f64> = want.iter().map(|w| w.0).collect();
        agree(
            &format!("{name} φ_K per task"),
            &f64s(&res.loss),
            &want_loss,
            1e-4,
        );
        let want_acc: Vec<f64> = want.iter().map(|w| w.1 as f64 / b.query as f64).collect();
        assert_eq!(res.accuracy, want_acc, "{name}: query accuracy per task");
        if truncate.is_some() {
            // T-RHG's gradient is not the gradient of φ_K: only values are compared.
            continue;
        }
        // ∂(mean φ)/∂p by central differences of the f64 pipeline, every parameter.
        let mean_phi = |q: &[f64]| -> f64 {
            let r = reference_meta(q, &b, &dyn64, steps, truncate, l2);
            r.iter().map(|v| v.0).sum::<f64>() / b.tasks as f64
        };
        let h = 1e-6;
        let mut q = p.clone();
        let fd: Vec<f64> = (0..p.len())
            .map(|i| {
                q[i] = p[i] + h;
                let up = mean_phi(&q);
                q[i] = p[i] - h;
                let down = mean_phi(&q);
                q[i] = p[i];
                (up - down) / (2.0 * h)
            })
            .collect();
        agree(&format!("{name} meta-gradient"), &f64s(&grad), &fd, 2e-3);
    }
    // T-RHG with T = K is RHG.
    let rhg = HeadProcedure {
        dynamics: LowerDynamics::LowerOnly { s_l: 0.5 },
        steps,
        truncate: None,
        l2: l2 as f32,
    };
    let (mut g1, mut g2) = (vec![0.0f32; p.len()], vec![0.0f32; p.len()]);
    gpu.meta_gradient(&f32s(&p), &ep, &rhg, &mut g1).unwrap();
    let full = HeadProcedure {
        truncate: Some(steps),
        ..rhg
    };
    gpu.meta_gradient(&f32s(&p), &ep, &full, &mut g2).unwrap();
    agree("T-RHG with T = K vs RHG", &f64s(&g2), &f64s(&g1), 1e-6);
}

#[test]
fn evaluation_agrees() {
    if skip_without_device() {
        return;
    }
    let mut rng = Rng::new(5);
    let p = params(&mut rng);
    let b = Batch::new(&mut rng, 3);
    let (steps, lr, l2) = (4, 0.5, 0.0);
    let mut gpu = FewshotGpu::new(0, SHAPE).expect("open the device");
    let images = f32s(&b.images);
    let ep = Episodes {
        tasks: b.tasks,
        ways: b.ways,
        support: b.support,
        query: b.query,
        images: &images,
        support_labels: &b.support_labels,
        query_labels: &b.query_labels,
    };
    let got = gpu
        .evaluate(&f32s(&p), &ep, steps, lr as f32, l2 as f32)
        .unwrap();
    let nf = SHAPE.features();
    let feats = conv4_forward(&SHAPE, &p, &b.images, b.n());
    let dynamics = LowerDynamics::LowerOnly { s_l: lr };
    let want: Vec<f64> = (0..b.tasks)
        .map(|t| {
            use bda_kernel::backend::LowerStep;
            let x = b.task_x(&feats, t, nf);
            let mut head = b.task_head(t, nf, l2);
            let mut y = head.new_y().unwrap();
            let mut next = y.clone();
            for k in 1..=steps {
                let (wu, wl) = dynamics.weights(k);
                head.lower_step(&x, &y, wu, wl, &mut next).unwrap();
                std::mem::swap(&mut y, &mut next);
            }
            head.hits(&x, &y) as f64 / b.query as f64
        })
        .collect();
    println!("evaluation accuracies {got:?} (reference {want:?})");
    assert_eq!(got, want);
}

#[test]
fn bad_inputs_are_errors() {
    if skip_without_device() {
        return;
    }
    let mut rng = Rng::new(6);
    let b = Batch::new(&mut rng, 2);
    let p = vec![0.1f32; SHAPE.num_params()];
    let images = f32s(&b.images);
    let mut gpu = FewshotGpu::new(0, SHAPE).expect("open the device");
    let bad_labels: Vec<u8> = b.support_labels.iter().map(|_| 7).collect();
    let ep = Episodes {
        tasks: b.tasks,
        ways: b.ways,
        support: b.support,
        query: b.query,
        images: &images,
        support_labels: &bad_labels,
        query_labels: &b.query_labels,
    };
    let err = gpu.evaluate(&p, &ep, 2, 0.1, 0.0).unwrap_err();
    assert_eq!(
        err,
        GpuError::Data("a label is not below the number of classes")
    );
    let short = Episodes {
        images: &images[1..],
        support_labels: &b.support_labels,
        ..ep
    };
    assert!(matches!(
        gpu.evaluate(&p, &short, 2, 0.1, 0.0),
        Err(GpuError::Shape { .. })
    ));
    assert!(matches!(
        gpu.features(&p[1..], &images, b.n()),
        Err(GpuError::Shape { .. })
    ));
    let proc = HeadProcedure {
        dynamics: LowerDynamics::LowerOnly { s_l: 0.1 },
        steps: 2,
        truncate: None,
        l2: 0.0,
    };
    let mut small = vec![0.0f32; 3];
    assert!(gpu.meta_gradient(&p, &ep, &proc, &mut small).is_err());
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries.
#[test]
fn all_fewshot_tests_on_a_fake_device() {
    cxx::run_on_fake_device("fake_cuda_fewshot", "all_fewshot_tests_on_a_fake_device");
}
