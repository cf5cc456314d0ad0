//! The hyper-cleaning backend split over ranks (`HypercleanCpu::with_ranks`, ranks as
//! threads): every method's `(φ, ∇φ, y_K)` has the bits of one process for 1 to 7 ranks,
//! on both classifiers, with fewer chunks than ranks too (ranks that own nothing).

use std::sync::Arc;

use bda_cpu::hyperclean::{CpuClassifier, HypercleanCpu, Linear, Mlp};
use bda_cpu::ranks::LocalRanks;
use bda_kernel::Method;
use bda_kernel::backend::{Backend, MethodConfig, Methods};
use bda_kernel::collective::{Collective, Solo};
use bda_testkit::instance::Problem;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(φ, ∇φ, y_K)` as bits.
type Bits = (u32, Vec<u32>, Vec<u32>);

fn run<C: CpuClassifier>(p: &Problem, cfg: &MethodConfig<f64>, comm: Arc<dyn Collective>) -> Bits {
    let data = p.data();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..p.n_tr()).map(|_| rng.random_range(-2.0..2.0)).collect();
    let y0: Vec<f32> = (0..data.y_len())
        .map(|_| rng.random_range(-0.3..0.3))
        .collect();
    let mut b = HypercleanCpu::<C>::new(&data).unwrap().with_ranks(comm);
    let mut hg = b.hypergrad(cfg.cast::<f32>().build().unwrap()).unwrap();
    let y0 = b.y_from(&y0);
    let (mut gx, mut y) = (b.new_x().unwrap(), b.new_y().unwrap());
    let phi = hg.hypergradient(&mut b, &x, &y0, &mut gx, &mut y).unwrap();
    let mut host = vec![0.0f32; data.y_len()];
    b.download_y(&y, &mut host).unwrap();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect();
    (phi.to_bits(), bits(&gx), bits(&host))
}

fn same_bits_on_every_split<C: CpuClassifier>(hidden: usize, n_tr: usize, ranks: &[usize]) {
    same_bits_at::<C>(23, hidden, n_tr, ranks);
}

fn same_bits_at<C: CpuClassifier>(dim: usize, hidden: usize, n_tr: usize, ranks: &[usize]) {
    // Training rows in units of 256: 1100 rows are 5 units (the last one short), 300 are 2.
    let p = Problem::clustered(5, dim, 4, n_tr, 300, 1e-3).with_hidden(hidden);
    for method in Method::ALL {
        let cfg = MethodConfig {
            truncate: (method == Method::Trhg).then_some(2),
            checkpoint_every: (method == Method::Bda).then_some(2),
            cg_iters: 4,
            ..MethodConfig::new(method, 4, 0.5)
        };
        let one = run::<C>(&p, &cfg, Arc::new(Solo));
        for &n in ranks {
            let all = LocalRanks::run(n, |comm| run::<C>(&p, &cfg, comm));
            for (r, got) in all.iter().enumerate() {
                assert!(
                    got == &one,
                    "{method}, hidden {hidden}, {n_tr} rows: rank {r} of {n} differs from one process"
                );
            }
        }
    }
}

#[test]
fn softmax_regression_has_the_bits_of_one_process_on_1_to_7_ranks() {
    same_bits_on_every_split::<Linear>(0, 1100, &[1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn the_network_has_the_bits_of_one_process_on_1_to_7_ranks() {
    same_bits_on_every_split::<Mlp>(16, 1100, &[1, 2, 3, 5, 7]);
}

#[test]
fn ranks_without_rows_take_part_and_change_nothing() {
    same_bits_on_every_split::<Mlp>(16, 300, &[3, 4]);
    same_bits_on_every_split::<Linear>(0, 300, &[3]);
    // One short unit of training rows: the ranks after the first own none, their rows
    // starting at the end of the set (not at a unit boundary).
    same_bits_on_every_split::<Mlp>(16, 150, &[2, 3]);
    same_bits_on_every_split::<Linear>(0, 150, &[2, 3]);
}

#[test]
fn products_longer_than_a_segment_of_the_chain_keep_their_bits() {
    // 300 features × 200 hidden units: a set's partial is 63,444 floats (its thin blocks,
    // then W₁ with rows padded to 208), both sets' 126,888: two 65,536-float segments, the
    // cut inside the second set's W₁ block.
    same_bits_at::<Mlp>(300, 200, 600, &[2, 3]);
}
