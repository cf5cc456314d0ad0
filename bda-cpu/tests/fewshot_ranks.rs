//! The few-shot backbone split over ranks (`CpuMeta::with_ranks`, ranks as threads): the
//! meta-gradient, the evaluation and the backbone's profile pass have the bits of one
//! process for 1 to 7 ranks, with RGB and grey images, the last chunk short, and more
//! ranks than chunks (ranks that own no image).

use std::sync::Arc;

use bda_cpu::conv4::init_params;
use bda_cpu::fewshot::CpuMeta;
use bda_cpu::ranks::LocalRanks;
use bda_kernel::Method;
use bda_kernel::backend::MethodConfig;
use bda_kernel::collective::{Collective, Solo};
use bda_kernel::fewshot::{Batch, Conv4Shape, HeadProcedure, MetaBackend, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `count` 3-way tasks of 2 support and 3 query random images per class (15 images a
/// task: tasks straddle the chunks of 8).
fn tasks(rng: &mut ChaCha8Rng, arch: Conv4Shape, count: usize) -> Vec<Task> {
    let lab = |per: usize| {
        (0..3u8)
            .flat_map(|c| std::iter::repeat_n(c, per))
            .collect::<Vec<_>>()
    };
    (0..count)
        .map(|_| Task {
            ways: 3,
            support: (0..6 * arch.pixels()).map(|_| rng.random()).collect(),
            support_labels: lab(2),
            query: (0..9 * arch.pixels()).map(|_| rng.random()).collect(),
            query_labels: lab(3),
        })
        .collect()
}

/// The loss, accuracy, gradient, evaluation and profile-pass gradient as bits.
type Bits = (u64, u64, Vec<u32>, Vec<u64>);

fn run(arch: Conv4Shape, count: usize, method: Method, comm: Arc<dyn Collective>) -> Bits {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let params: Vec<f32> = init_params(&arch, &mut rng);
    let ts = tasks(&mut rng, arch, count);
    let spec = MethodConfig {
        truncate: (method == Method::Trhg).then_some(2),
        ..MethodConfig::new(method, 4, 0.5)
    };
    let head = HeadProcedure {
        spec: spec.cast::<f32>().build().unwrap(),
        l2: 0.01,
        network: None,
    };
    let batch = Batch {
        shape: arch,
        params: &params,
        tasks: &ts,
        head: &head,
    };
    let mut b = CpuMeta::with_ranks(comm);
    let mg = b.meta_gradient(batch).unwrap();
    let eval = b.evaluate_tasks(batch).unwrap();
    (
        mg.loss.to_bits(),
        mg.acc.to_bits(),
        mg.grad.iter().map(|g| g.to_bits()).collect(),
        eval.iter().map(|a| a.to_bits()).collect(),
    )
}

fn same_bits(arch: Conv4Shape, count: usize, ranks: &[usize]) {
    for method in [Method::Bda, Method::Rhg, Method::Trhg] {
        let one = run(arch, count, method, Arc::new(Solo));
        for &n in ranks {
            let all = LocalRanks::run(n, |comm| run(arch, count, method, comm));
            for (r, got) in all.iter().enumerate() {
                assert!(
                    got == &one,
                    "{method}, {count} tasks: rank {r} of {n} differs from one process"
                );
            }
        }
    }
}

#[test]
fn the_meta_gradient_has_the_bits_of_one_process_on_1_to_7_ranks() {
    // 5 tasks × 15 images = 75 images: 10 chunks, the last of 3.
    let grey = Conv4Shape {
        channels: 4,
        in_channels: 1,
        side: 12,
        blocks: 4,
    };
    same_bits(grey, 5, &[1, 2, 3, 4, 5, 6, 7]);
    let rgb = Conv4Shape {
        channels: 5,
        in_channels: 3,
        side: 10,
        blocks: 3,
    };
    same_bits(rgb, 3, &[2, 3]);
}

#[test]
fn ranks_without_images_take_part_and_change_nothing() {
    let arch = Conv4Shape {
        channels: 4,
        in_channels: 1,
        side: 12,
        blocks: 4,
    };
    // One task: 15 images, 2 chunks over 3 and 5 ranks.
    same_bits(arch, 1, &[3, 5]);
}
