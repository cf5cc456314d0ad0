//! The example's checks: every method's hypergradient against central differences on a
//! tiny instance, and a short run on the Fashion-MNIST fixture.

use super::*;
use bda_testkit::{Rng, fd::check_methods};

/// A tiny random instance: 4 features, 3 classes, 12 training and 9 validation samples.
fn tiny() -> L2Penalty {
    let mut r = Rng::new(3);
    let mut set = |n: usize| Set {
        x: r.vec64(n * 4, -1.0, 1.0),
        labels: (0..n).map(|_| r.below(3) as u8).collect(),
    };
    let (train, val) = (set(12), set(9));
    L2Penalty {
        d: 4,
        c: 3,
        train,
        val,
    }
}

#[test]
fn every_method_matches_central_differences() {
    let x = Rng::new(4).vec64(4, -2.0, 0.5);
    // A start with W ≠ 0: from W = 0 one step (O-BDA) does not see the penalties.
    let y0 = Rng::new(5).vec64(15, -0.5, 0.5);
    let case = |method, k, tol| {
        let cfg = MethodConfig {
            cg_iters: 100,
            fd_eps: 1e-5,
            ..MethodConfig::new(method, k, 0.3)
        };
        (cfg, tol)
    };
    let cases = [
        case(Method::Rhg, 8, 1e-7),
        case(Method::Trhg, 8, 1e-7),
        case(Method::Bda, 8, 1e-7),
        case(Method::Ihg, 3000, 1e-7),
        case(Method::Obda, 8, 1e-6),
    ];
    check_methods(tiny, Hypergrad::new, &cases, &x, &y0, 1e-5, 4);
}

#[test]
fn learning_the_penalties_lowers_the_validation_loss_on_the_fixture() {
    let dir = format!("{}/../fixtures/fmnist-tiny", env!("CARGO_MANIFEST_DIR"));
    let ds = load_mnist_dir(dir.as_ref()).unwrap();
    let split = hyperclean_split(&ds, 60, 60, 0.0, 0).unwrap();
    let set = |s: &bda_host::data::Subset| Set {
        x: s.x.iter().map(|&v| f64::from(v)).collect(),
        labels: s.labels.clone(),
    };
    let mut p = L2Penalty {
        d: 784,
        c: 10,
        train: set(&split.train),
        val: set(&split.val),
    };
    let (curve, _, _) = run(&mut p, Method::Bda, 8);
    assert!(curve[7] < curve[0], "{curve:?}");
}
