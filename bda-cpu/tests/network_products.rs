//! The CPU's whole-network products (`bda_cpu::network`, the MAML family's lower level)
//! against the kernel's `f64` reference: loss, gradient and Hessian–vector products in
//! `f64` to rounding, grey and RGB, odd sides (ceil-mode pools), sets larger than one
//! im2col group, the im2col and Winograd paths; `f32` against `f64`; and MAML's meta-gradient through the engine on
//! either products.

use bda_cpu::network::{CpuTask, TaskImages};
use bda_kernel::Method;
use bda_kernel::backend::{Backend, Hypergrad, MethodConfig};
use bda_kernel::fewshot::{Conv4Shape, Network, NetworkLoss, NetworkTask, ReferenceTask, TaskSet};
use bda_testkit::instance::network_weights;
use bda_testkit::{Rng, rel_err};

/// A set's loss, gradient and H·v.
type Products<T> = (T, Vec<T>, Vec<T>);

struct Case {
    net: Network,
    y: Vec<f64>,
    v: Vec<f64>,
    support: (Vec<f64>, Vec<u8>),
    query: (Vec<f64>, Vec<u8>),
}

fn case(shape: Conv4Shape, ways: usize, n_s: usize, n_q: usize, seed: u64) -> Case {
    let net = Network { shape, ways };
    let mut r = Rng::new(seed);
    let y = network_weights(&net, &mut r);
    let v = (0..y.len())
        .map(|_| f64::from(r.range(-1.0, 1.0)))
        .collect();
    let mut set = |n: usize| -> (Vec<f64>, Vec<u8>) {
        let images = (0..n * shape.pixels())
            .map(|_| f64::from(r.range(0.0, 1.0)))
            .collect();
        (images, (0..n).map(|i| (i % ways) as u8).collect())
    };
    let (support, query) = (set(n_s), set(n_q));
    Case {
        net,
        y,
        v,
        support,
        query,
    }
}

fn reference(c: &Case) -> ReferenceTask<'_> {
    ReferenceTask {
        net: c.net,
        support: (&c.support.0, &c.support.1),
        query: (&c.query.0, &c.query.1),
    }
}

fn sets<T: bda_cpu::linalg::Float>(c: &Case) -> (TaskImages<T>, TaskImages<T>) {
    let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
    (
        TaskImages::new(&c.net.shape, &cast(&c.support.0), &c.support.1),
        TaskImages::new(&c.net.shape, &cast(&c.query.0), &c.query.1),
    )
}

/// Loss, gradient and H·v of both sets through `task`.
fn products<L: NetworkLoss>(
    task: &mut L,
    y: &[L::Scalar],
    v: &[L::Scalar],
) -> Vec<Products<L::Scalar>>
where
    L::Scalar: Default,
{
    [TaskSet::Support, TaskSet::Query]
        .into_iter()
        .map(|set| {
            let mut g = vec![L::Scalar::default(); y.len()];
            let loss = task.loss_grad(y, set, &mut g);
            let mut h = vec![L::Scalar::default(); y.len()];
            task.hvp(y, v, set, &mut h);
            (loss, g, h)
        })
        .collect()
}

const GREY: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 1,
    side: 9,
    blocks: 3,
};
const RGB: Conv4Shape = Conv4Shape {
    channels: 3,
    in_channels: 3,
    side: 7,
    blocks: 2,
};

fn check_f64(shape: Conv4Shape, seed: u64) {
    let c = case(shape, 3, 5, 11, seed);
    let want = products(&mut reference(&c), &c.y, &c.v);
    let (s, q) = sets::<f64>(&c);
    let got = products(&mut CpuTask::new(c.net, &s, &q), &c.y, &c.v);
    for (set, (w, g)) in ["support", "query"].iter().zip(want.iter().zip(&got)) {
        let (el, eg, eh) = (
            (w.0 - g.0).abs() / w.0,
            rel_err(&g.1, &w.1),
            rel_err(&g.2, &w.2),
        );
        println!("{shape:?} {set}: loss {el:.1e}, gradient {eg:.1e}, H·v {eh:.1e}");
        assert!(el < 1e-13 && eg < 1e-12 && eh < 1e-11, "{set}");
    }
}

#[test]
fn f64_products_equal_the_reference_grey() {
    check_f64(GREY, 1);
}

/// Block 1 on 11×11 maps with 4 channels in: the Winograd paths forward and backward.
const WIDE: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 1,
    side: 22,
    blocks: 2,
};

#[test]
fn f64_products_equal_the_reference_through_winograd() {
    check_f64(WIDE, 5);
}

#[test]
fn f64_products_equal_the_reference_rgb() {
    check_f64(RGB, 2);
}

#[test]
fn f32_products_follow_f64() {
    let c = case(GREY, 5, 10, 25, 3);
    let (s, q) = sets::<f64>(&c);
    let want = products(&mut CpuTask::new(c.net, &s, &q), &c.y, &c.v);
    let (s, q) = sets::<f32>(&c);
    let cast = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let got = products(&mut CpuTask::new(c.net, &s, &q), &cast(&c.y), &cast(&c.v));
    for (w, g) in want.iter().zip(&got) {
        let up = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let (eg, eh) = (rel_err(&up(&g.1), &w.1), rel_err(&up(&g.2), &w.2));
        println!("f32 against f64: gradient {eg:.1e}, H·v {eh:.1e}");
        assert!(eg < 1e-5 && eh < 1e-5);
    }
}

/// MAML (RHG from `y₀ = x`, K = 3) and iMAML on the CPU's products equal the reference's.
#[test]
fn maml_and_imaml_through_the_engine_equal_the_reference() {
    let c = case(RGB, 3, 6, 9, 4);
    let (s, q) = sets::<f64>(&c);
    for (method, prox) in [(Method::Rhg, 0.0), (Method::Bda, 0.0), (Method::Ihg, 2.0)] {
        let mut cfg = MethodConfig::new(method, 3, 0.3);
        cfg.cg_iters = 4;
        let spec = cfg.build().unwrap();
        let want = meta(
            NetworkTask {
                loss: reference(&c),
                prox,
                per_weight_steps: false,
            },
            spec,
            &c.y,
        );
        let cpu = CpuTask::new(c.net, &s, &q);
        let got = meta(
            NetworkTask {
                loss: cpu,
                prox,
                per_weight_steps: false,
            },
            spec,
            &c.y,
        );
        let e = rel_err(&got, &want);
        println!("{method:?}: CPU against the reference {e:.1e}");
        assert!(e < 1e-11, "{method:?}");
    }
}

fn meta<L: NetworkLoss<Scalar = f64>>(
    mut t: NetworkTask<L>,
    spec: bda_kernel::backend::MethodSpec<f64>,
    x: &[f64],
) -> Vec<f64> {
    let mut hg = Hypergrad::new(&mut t, spec).unwrap();
    let (mut gx, mut y) = (t.new_x().unwrap(), t.new_y().unwrap());
    hg.hypergradient(&mut t, &x.to_vec(), &x.to_vec(), &mut gx, &mut y)
        .unwrap();
    gx
}

/// A Hessian–vector product after a gradient at the same weights reuses its primal pass:
/// the same bits as without it; the query accuracy from the gradient's pass is the
/// prediction's.
#[test]
fn kept_primal_passes_change_no_bit() {
    let c = case(WIDE, 4, 6, 9, 6);
    let (s, q) = sets::<f32>(&c);
    let cast = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (y, v) = (cast(&c.y), cast(&c.v));
    let mut plain = CpuTask::new(c.net, &s, &q);
    let mut keeping = CpuTask::new(c.net, &s, &q).keeping(3);
    for set in [TaskSet::Support, TaskSet::Query] {
        let (mut g0, mut g1, mut g2) = (vec![0.0; y.len()], vec![0.0; y.len()], vec![0.0; y.len()]);
        let l0 = plain.loss_grad(&y, set, &mut g0);
        let l1 = keeping.loss_grad(&y, set, &mut g1);
        let l2 = keeping.loss_grad(&y, set, &mut g2); // from the kept pass
        assert!(
            l0 == l1 && l1 == l2 && g0 == g1 && g1 == g2,
            "{set:?} gradient"
        );
        let (mut h0, mut h1) = (vec![0.0; y.len()], vec![0.0; y.len()]);
        plain.hvp(&y, &v, set, &mut h0);
        keeping.hvp(&y, &v, set, &mut h1);
        assert_eq!(h0, h1, "{set:?}");
    }
    let predicted = plain.predict(&y, TaskSet::Query);
    let want = predicted
        .iter()
        .zip(q.labels())
        .filter(|(p, l)| p == l)
        .count();
    assert_eq!(keeping.query_hits(&y), want);
    assert_eq!(plain.query_hits(&y), want);
}
