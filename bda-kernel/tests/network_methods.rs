//! The MAML family as specifications of the engine (`fewshot::NetworkTask`): MAML (RHG from
//! `y₀ = x`) and BDA on the whole network against central differences of `φ_K(x)` through
//! the K inner steps from `x`, Meta-SGD (RHG with a step size per weight in `x`) the same
//! way in both halves of `x`, iMAML (IHG with a proximal term) against a dense solve of its
//! linear system, and the first-order and Reptile directions.

use bda_kernel::Method;
use bda_kernel::backend::{Backend, Hypergrad, MethodConfig};
use bda_kernel::fewshot::{Conv4Shape, Network, NetworkTask, ReferenceTask};
use bda_testkit::fd::central_diff;
use bda_testkit::instance::network_weights;
use bda_testkit::{Rng, rel_err};

/// A small network: 2 channels, 5×5 grey images, 2 blocks (5 → 3 → 2), 3 ways.
fn network() -> Network {
    Network {
        shape: Conv4Shape {
            channels: 2,
            in_channels: 1,
            side: 5,
            blocks: 2,
        },
        ways: 3,
    }
}

struct Data {
    x: Vec<f64>,
    support: (Vec<f64>, Vec<u8>),
    query: (Vec<f64>, Vec<u8>),
}

fn data(net: &Network, seed: u64) -> Data {
    let mut r = Rng::new(seed);
    let x = network_weights(net, &mut r);
    let px = net.shape.pixels();
    let mut set = |n: usize| -> (Vec<f64>, Vec<u8>) {
        let images = (0..n * px).map(|_| f64::from(r.range(0.0, 1.0))).collect();
        (images, (0..n).map(|i| (i % 3) as u8).collect())
    };
    let (support, query) = (set(3), set(6));
    Data { x, support, query }
}

fn task<'a>(net: Network, d: &'a Data, prox: f64) -> NetworkTask<ReferenceTask<'a>> {
    NetworkTask {
        loss: ReferenceTask {
            net,
            support: (&d.support.0, &d.support.1),
            query: (&d.query.0, &d.query.1),
        },
        prox,
        per_weight_steps: false,
    }
}

/// The meta-gradient of `cfg` at `x` from `y₀ = x`, and central differences of `φ(x)`
/// computed by the inner solve alone from `y₀ = x` (what the meta-gradient differentiates).
fn meta_and_fd(cfg: MethodConfig<f64>) -> (Vec<f64>, Vec<f64>) {
    let (net, d) = (network(), data(&network(), 7));
    let mut t = task(net, &d, 0.0);
    let spec = cfg.build().unwrap();
    let mut hg = Hypergrad::new(&mut t, spec).unwrap();
    let (mut gx, mut y) = (t.new_x().unwrap(), t.new_y().unwrap());
    hg.hypergradient(&mut t, &d.x, &d.x, &mut gx, &mut y)
        .unwrap();
    let phi = |x: &[f64]| -> f64 {
        let mut t = task(net, &d, 0.0);
        let mut hg = Hypergrad::new(&mut t, spec).unwrap();
        let mut y = t.new_y().unwrap();
        let x = x.to_vec();
        hg.solve_lower(&mut t, &x, &x, &mut y).unwrap()
    };
    let fd = central_diff(phi, &d.x, 1e-6, d.x.len());
    (gx, fd)
}

#[test]
fn maml_is_rhg_from_the_initialisation() {
    let (g, fd) = meta_and_fd(MethodConfig::new(Method::Rhg, 3, 0.5));
    let e = rel_err(&g, &fd);
    println!("MAML (K = 3) against central differences: {e:.2e}");
    assert!(e < 1e-6, "{e:.3e}");
}

/// The inner loop's tape holds K copies of the network; keeping every second one and
/// recomputing the others gives the same meta-gradient, bit for bit.
#[test]
fn maml_with_checkpoints_keeps_its_bits() {
    let (net, d) = (network(), data(&network(), 11));
    let run = |every: Option<u32>| -> Vec<f64> {
        let mut t = task(net, &d, 0.0);
        let cfg = MethodConfig {
            checkpoint_every: every,
            ..MethodConfig::new(Method::Rhg, 5, 0.5)
        };
        let mut hg = Hypergrad::new(&mut t, cfg.build().unwrap()).unwrap();
        let (mut gx, mut y) = (t.new_x().unwrap(), t.new_y().unwrap());
        hg.hypergradient(&mut t, &d.x, &d.x, &mut gx, &mut y)
            .unwrap();
        gx
    };
    assert_eq!(run(None), run(Some(2)));
}

#[test]
fn bda_on_the_whole_network_differentiates_its_aggregated_steps() {
    let cfg = MethodConfig {
        s_u: 0.3,
        ..MethodConfig::new(Method::Bda, 3, 0.5)
    };
    let (g, fd) = meta_and_fd(cfg);
    let e = rel_err(&g, &fd);
    println!("BDA on the network (K = 3) against central differences: {e:.2e}");
    assert!(e < 1e-6, "{e:.3e}");
}

/// iMAML is IHG with the proximal term: its meta-gradient is `λ(∇²L_support + λI)⁻¹∇L_query`
/// at the inner iterate, here against a dense solve of that system (the Hessian built
/// column by column from the exact products). The implicit function itself is not checked
/// by differences: with ReLU and max-pool the inner problem's gradient descent ends
/// chattering on a kink (residual ≈ 0.3 after 2000 steps on this instance), so `F(y*(x))`
/// is not smooth enough to difference.
#[test]
#[allow(clippy::needless_range_loop)] // Gaussian elimination reads best by index
fn imaml_is_ihg_with_a_proximal_term() {
    let (net, d) = (network(), data(&network(), 7));
    let lam = 4.0;
    let mut t = task(net, &d, lam);
    let cfg = MethodConfig {
        cg_iters: 60,
        ..MethodConfig::new(Method::Ihg, 20, 0.05)
    };
    let mut hg = Hypergrad::new(&mut t, cfg.build().unwrap()).unwrap();
    let (mut gx, mut y) = (t.new_x().unwrap(), t.new_y().unwrap());
    hg.hypergradient(&mut t, &d.x, &d.x, &mut gx, &mut y)
        .unwrap();
    let n = y.len();
    // (∇²L_support + λI) column by column, then Gaussian elimination with pivoting.
    let mut a: Vec<Vec<f64>> = vec![vec![0.0; n]; n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let col = net.hvp(&y, &e, &d.support.0, &d.support.1);
        for i in 0..n {
            a[i][j] = col[i] + if i == j { lam } else { 0.0 };
        }
    }
    let mut b = vec![0.0; n];
    net.loss_grad(&y, &d.query.0, &d.query.1, Some(&mut b));
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))
            .unwrap();
        a.swap(k, p);
        b.swap(k, p);
        for i in k + 1..n {
            let f = a[i][k] / a[k][k];
            for j in k..n {
                a[i][j] -= f * a[k][j];
            }
            b[i] -= f * b[k];
        }
    }
    let mut s = vec![0.0; n];
    for i in (0..n).rev() {
        let v = b[i] - (i + 1..n).map(|j| a[i][j] * s[j]).sum::<f64>();
        s[i] = v / a[i][i];
    }
    let exact: Vec<f64> = s.iter().map(|v| lam * v).collect();
    let e = rel_err(&gx, &exact);
    let cg = hg.cg_report();
    println!(
        "iMAML (λ = 4) against the dense solve: {e:.2e}, CG {} iterations",
        cg.iters
    );
    assert!(e < 1e-10, "{e:.3e}");
    assert!(cg.non_positive_curvature.is_none());
}

/// Meta-SGD: RHG on `x = [initialisation | a step size per weight]` from `y₀ = x₀`, against
/// central differences of `φ` in both halves of `x`.
#[test]
fn meta_sgd_learns_a_step_size_per_weight() {
    let (net, d) = (network(), data(&network(), 9));
    let n = net.num_params();
    let mut r = Rng::new(10);
    let mut x = d.x.clone();
    x.extend((0..n).map(|_| f64::from(r.range(0.2, 0.6))));
    fn with_steps<'a>(net: Network, d: &'a Data) -> NetworkTask<ReferenceTask<'a>> {
        NetworkTask {
            per_weight_steps: true,
            ..task(net, d, 0.0)
        }
    }
    let spec = MethodConfig::new(Method::Rhg, 3, 1.0).build().unwrap();
    let mut t = with_steps(net, &d);
    let mut hg = Hypergrad::new(&mut t, spec).unwrap();
    let (mut gx, mut y) = (t.new_x().unwrap(), t.new_y().unwrap());
    assert_eq!(gx.len(), 2 * n);
    hg.hypergradient(&mut t, &x, &x[..n].to_vec(), &mut gx, &mut y)
        .unwrap();
    let phi = |x: &[f64]| -> f64 {
        let mut t = with_steps(net, &d);
        let mut hg = Hypergrad::new(&mut t, spec).unwrap();
        let mut y = t.new_y().unwrap();
        hg.solve_lower(&mut t, &x.to_vec(), &x[..n].to_vec(), &mut y)
            .unwrap()
    };
    let fd = central_diff(phi, &x, 1e-6, x.len());
    let (e0, e1) = (rel_err(&gx[..n], &fd[..n]), rel_err(&gx[n..], &fd[n..]));
    println!("Meta-SGD (K = 3): initialisation {e0:.2e}, step sizes {e1:.2e}");
    assert!(e0 < 1e-6 && e1 < 1e-6, "{e0:.3e} {e1:.3e}");
}

#[test]
fn first_order_and_reptile_directions_come_from_the_inner_solve() {
    let (net, d) = (network(), data(&network(), 8));
    let mut t = task(net, &d, 0.0);
    let spec = MethodConfig::new(Method::Rhg, 4, 0.5).build().unwrap();
    let mut hg = Hypergrad::new(&mut t, spec).unwrap();
    let mut y = t.new_y().unwrap();
    hg.solve_lower(&mut t, &d.x, &d.x, &mut y).unwrap();
    // First-order MAML: the query gradient at y_K; Reptile: x − y_K, which is the sum of
    // the K inner steps' gradients times the step.
    let mut fo = vec![0.0; y.len()];
    net.loss_grad(&y, &d.query.0, &d.query.1, Some(&mut fo));
    let (mut step_sum, mut yk) = (vec![0.0; y.len()], d.x.clone());
    for _ in 0..4 {
        let mut g = vec![0.0; y.len()];
        net.loss_grad(&yk, &d.support.0, &d.support.1, Some(&mut g));
        for ((s, y), g) in step_sum.iter_mut().zip(yk.iter_mut()).zip(&g) {
            *s += 0.5 * g;
            *y -= 0.5 * g;
        }
    }
    let reptile: Vec<f64> = d.x.iter().zip(&y).map(|(x, y)| x - y).collect();
    assert!(rel_err(&reptile, &step_sum) < 1e-12);
    assert!(fo.iter().any(|&v| v != 0.0));
}
