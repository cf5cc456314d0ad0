//! Few-shot on CUDA split over ranks (`FewshotGpu::with_ranks`), the ranks being threads of one
//! process behind the kernel's collective trait (`bda_cpu::ranks::LocalRanks`): the
//! meta-gradient (per-task losses, accuracies, the backbone's gradient), the evaluation and
//! the features have the same bits on every rank and for 1 to 5 ranks (with more ranks than
//! chunks of images too), grey and RGB, and agree with one plain backend. Skips without a CUDA
//! device, and runs once more on the CPU stand-ins of `tests/fake_cuda`.

use std::sync::Arc;

use bda_cpu::ranks::LocalRanks;
use bda_gpu::{CHUNK_IMAGES, Episodes, FewshotGpu, GpuDevice};
use bda_kernel::Method;
use bda_kernel::backend::{MethodConfig, MethodSpec};
use bda_kernel::collective::Collective;
use bda_kernel::fewshot::Conv4Shape;
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// 12 → 6 → 3 → 2 (the last pool exercises ceil mode).
const GREY: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 1,
    side: 12,
    blocks: 3,
};

/// Three input channels: 10 → 5 → 3.
const RGB: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 3,
    side: 10,
    blocks: 2,
};

/// A meta-batch of 3 tasks, 3-way 1-shot with 2 queries per class: 27 images, chunks of 8
/// (the last of 3).
struct Batch {
    images: Vec<f32>,
    support_labels: Vec<u8>,
    query_labels: Vec<u8>,
    params: Vec<f32>,
}

const TASKS: usize = 3;
const WAYS: usize = 3;
const QUERIES: usize = 2;

impl Batch {
    fn new(shape: Conv4Shape, seed: u64) -> Batch {
        let mut rng = Rng::new(seed);
        let n = TASKS * WAYS * (1 + QUERIES);
        let images = (0..n * shape.pixels())
            .map(|_| rng.range(0.0, 1.0))
            .collect();
        let labels = |per: usize| -> Vec<u8> {
            (0..TASKS)
                .flat_map(|_| (0..WAYS).flat_map(move |c| std::iter::repeat_n(c as u8, per)))
                .collect()
        };
        let mut params = vec![0.0f32; shape.num_params()];
        for l in 0..shape.blocks {
            let (w, g, b) = shape.offsets(l);
            let bound = 1.0 / ((shape.c_in(l) * 9) as f64).sqrt();
            params[w..g]
                .iter_mut()
                .for_each(|v| *v = rng.range(-bound, bound));
            params[g..b]
                .iter_mut()
                .for_each(|v| *v = rng.range(0.8, 1.2));
            let e = b + shape.channels;
            params[b..e]
                .iter_mut()
                .for_each(|v| *v = rng.range(-0.1, 0.1));
        }
        Batch {
            images,
            support_labels: labels(1),
            query_labels: labels(QUERIES),
            params,
        }
    }

    fn episodes(&self) -> Episodes<'_> {
        Episodes {
            tasks: TASKS,
            ways: WAYS,
            support: WAYS,
            query: WAYS * QUERIES,
            images: &self.images,
            support_labels: &self.support_labels,
            query_labels: &self.query_labels,
        }
    }
}

/// Named results of one backend, in the order computed.
type Record = Vec<(&'static str, Vec<f64>)>;

/// A meta-gradient with BDA, one with RHG, an evaluation and the features, on `gpu`.
fn record(gpu: &mut FewshotGpu, shape: Conv4Shape, b: &Batch) -> Record {
    let ep = b.episodes();
    let bda: MethodSpec<f32> = MethodConfig {
        s_u: 0.5,
        ..MethodConfig::new(Method::Bda, 3, 0.3f32)
    }
    .build()
    .unwrap();
    let rhg = MethodConfig::new(Method::Rhg, 3, 0.3f32).build().unwrap();
    let mut out = Record::new();
    let f64s = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    for (name, spec) in [("BDA", bda), ("RHG", rhg)] {
        let mut grad = vec![0.0f32; shape.num_params()];
        let r = gpu
            .meta_gradient(&b.params, &ep, &spec, 0.01, &mut grad)
            .unwrap();
        out.push((name, f64s(&grad)));
        out.push(("losses", f64s(&r.loss)));
        out.push(("accuracies", r.accuracy));
    }
    let acc = gpu
        .evaluate(&b.params, &ep, &rhg.lower_only(), 0.01)
        .unwrap();
    out.push(("evaluation", acc));
    let n = ep.images_count();
    let feats = gpu.features(&b.params, &b.images, n).unwrap();
    out.push(("features", f64s(&feats)));
    out
}

fn same_bits_for_every_p(shape: Conv4Shape) {
    let Some(dev) = cuda::or_skip(GpuDevice::open(cuda::ordinal())) else {
        return;
    };
    println!("{}", dev.info());
    let b = Batch::new(shape, 3);
    assert_eq!((TASKS * WAYS * (1 + QUERIES)).div_ceil(CHUNK_IMAGES), 4);
    let on = |ranks: usize| -> Vec<Record> {
        LocalRanks::run(ranks, |comm| {
            let gpu = FewshotGpu::new(&dev, shape).unwrap();
            let mut gpu = gpu.with_ranks(comm as Arc<dyn Collective>).unwrap();
            record(&mut gpu, shape, &b)
        })
    };
    let one = on(1).remove(0);
    for ranks in [2, 3, 5] {
        for (r, got) in on(ranks).iter().enumerate() {
            for ((name, a), (_, b)) in got.iter().zip(&one) {
                let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{name}: rank {r} of {ranks} differs from one rank");
            }
        }
        println!("{ranks} ranks: every result has the bits of one rank");
    }
    let mut plain = FewshotGpu::new(&dev, shape).unwrap();
    let want = record(&mut plain, shape, &b);
    for ((name, a), (_, b)) in one.iter().zip(&want) {
        let e = rel_err(a, b);
        println!("{name}: chunked against plain, relative error {e:.2e}");
        assert!(e < cuda::tolerance(1e-5, 1e-4), "{name}: {e:.3e}");
    }
}

#[test]
fn grey_meta_batches_split_over_ranks_have_the_bits_of_one_rank() {
    same_bits_for_every_p(GREY);
}

#[test]
fn rgb_meta_batches_split_over_ranks_have_the_bits_of_one_rank() {
    same_bits_for_every_p(RGB);
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries.
#[test]
fn all_few_shot_rank_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda_fewshot_ranks",
        "all_few_shot_rank_tests_on_a_fake_device",
    );
}
